"""Tests for music2video.song.audio: decoding, beats and loudness, on signals the tests make."""

import subprocess
import warnings

import imageio_ffmpeg
import librosa
import numpy as np
import pytest
import soundfile as sf

from music2video.song.audio import (
    PARTS,
    AudioError,
    Loudness,
    beat_times,
    load_audio,
    loudness,
    onsets,
    split_parts,
)
from music2video.testing import demo

pytestmark = pytest.mark.filterwarnings("error")  # no warning may escape the audio stage

SR = 22050
BPM = 120.0
SECONDS = 12.0
TOLERANCE = 0.07  # seconds between a detected beat and the true one


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    """A float32 sine tone."""
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def main_freq(y: np.ndarray, sr: int) -> float:
    """The frequency of the strongest FFT bin."""
    return float(np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(np.abs(np.fft.rfft(y)))])


def matched(times: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of times that lie within TOLERANCE of some reference time."""
    if len(times) == 0 or len(reference) == 0:
        return 0.0
    return float(np.mean([np.abs(reference - t).min() <= TOLERANCE for t in times]))


def narrow_clicks(seconds: float, bpm: float, sr: int, start: float = 0.5) -> np.ndarray:
    """30 ms 1 kHz blips on every beat: too few mel bands move for a median over bands to see."""
    n = int(0.03 * sr)
    blip = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(n) / sr) * np.hanning(n)
    y = np.zeros(int(seconds * sr))
    for time in demo.beat_grid(seconds, bpm, start):
        first = int(time * sr)
        y[first:first + n] += blip[: len(y) - first]
    return y.astype(np.float32)


@pytest.fixture(scope="module")
def signals():
    """The synthetic test signals, made once: each at SR Hz, SECONDS long, beats on beat_grid."""
    return {
        "click": demo.click_track(SECONDS, BPM, SR),
        "tonal_song": demo.tonal_song(SECONDS, BPM, SR),
        "pulse_tones": demo.pulse_tones(SECONDS, BPM, SR),
        "narrow_clicks": narrow_clicks(SECONDS, BPM, SR),
    }


# --- load_audio -------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["wav", "mp3", "flac", "ogg", "m4a"])
@pytest.mark.parametrize("file_sr, load_sr", [(44100, 44100), (22050, 22050), (44100, 16000)])
def test_load_audio_decodes_every_format_at_any_rate(tmp_path, ext, file_sr, load_sr):
    path = demo.encode_audio(sine(440, 2.0, file_sr), file_sr, tmp_path / f"my söng ♪.{ext}")
    y = load_audio(path, load_sr)
    assert y.dtype == np.float32 and y.ndim == 1 and y.flags.writeable
    assert abs(len(y) - 2.0 * load_sr) <= 0.05 * load_sr  # codec padding at most 50 ms
    assert main_freq(y, load_sr) == pytest.approx(440, abs=2)  # the right rate: the pitch did not move
    assert np.sqrt(np.mean(y**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_load_audio_mixes_stereo_to_mono_as_the_mean(tmp_path):
    left, right = sine(440, 1.0, 44100), sine(660, 1.0, 44100)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    y = load_audio(tmp_path / "stereo.wav", 44100)
    weights, *_ = np.linalg.lstsq(np.stack([left, right], axis=1), y, rcond=None)
    np.testing.assert_allclose(weights, [0.5, 0.5], atol=0.01)


def test_load_audio_resamples_stereo_flac(tmp_path):
    tone = sine(440, 1.5, 48000)
    sf.write(tmp_path / "stereo 48k.flac", np.stack([tone, tone], axis=1), 48000)
    y = load_audio(tmp_path / "stereo 48k.flac", SR)
    assert abs(len(y) - 1.5 * SR) <= 0.05 * SR
    assert np.abs(y).max() == pytest.approx(0.5, abs=0.02)  # identical channels average to themselves


def test_load_audio_reads_names_with_a_colon(tmp_path):
    sf.write(tmp_path / "live: take 2.wav", sine(440, 0.5, 16000), 16000)
    assert len(load_audio(tmp_path / "live: take 2.wav", 16000)) == 8000


def test_load_audio_accepts_silence(tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    y = load_audio(tmp_path / "silence.wav", 16000)
    assert len(y) == 16000 and not y.any()


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3"])
def test_load_audio_gives_the_seeds_samples_and_beats(tmp_path, ext):
    """The seed decoded with librosa.load(path, sr=16000): the file's own rate, then soxr_hq."""
    song = demo.demo_song(sr=44100)[: 12 * 44100]
    path = tmp_path / f"song.{ext}"
    if ext == "mp3":
        demo.encode_audio(song, 44100, path)
    else:
        sf.write(path, np.stack([song, 0.7 * np.roll(song, 29)], axis=1), 44100)
    with warnings.catch_warnings():  # librosa.load imports audioread, which imports aifc
        warnings.simplefilter("ignore", DeprecationWarning)
        seeds, _ = librosa.load(path, sr=16000)
    ours = load_audio(path, 16000)
    assert ours.shape == seeds.shape
    np.testing.assert_allclose(ours, seeds, rtol=0, atol=1e-5 if ext == "mp3" else 0)
    np.testing.assert_array_equal(beat_times(ours, 16000), beat_times(seeds, 16000))


def _text_as_mp3(path):
    path.write_text("timestamp,text\n00:02,not a song\n")


def _zero_bytes(path):
    path.write_bytes(b"")


def _no_samples(path):
    sf.write(path, np.zeros(0, np.float32), 16000)


def _image_only(path):
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "gray"]
    cmd += ["-s", "8x8", "-i", "-", "-frames:v", "1", "-f", "image2", "-c:v", "png", str(path)]
    subprocess.run(cmd, input=bytes(64), check=True)


@pytest.mark.parametrize(
    "name, make, words",
    [
        ("missing.mp3", None, "not found"),
        ("lyrics.mp3", _text_as_mp3, "cannot decode"),
        ("empty.mp3", _zero_bytes, "empty"),
        ("no samples.wav", _no_samples, "no audio samples"),
        ("picture.mp3", _image_only, "no audio stream"),
    ],
)
def test_load_audio_errors_name_the_file(tmp_path, name, make, words):
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(AudioError) as info:
        load_audio(path, 16000)
    message = str(info.value)
    assert name in message and words in message and "\n" not in message


# --- beat_times -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["click", "tonal_song", "pulse_tones", "narrow_clicks"])
def test_beat_times_finds_the_beats(signals, kind):
    y = signals[kind]
    truth = demo.beat_grid(SECONDS, BPM, start=0.5)
    beats = beat_times(y, SR)
    assert np.all(np.diff(beats) > 0) and beats.min() > 0 and beats.max() < len(y) / SR
    assert matched(truth, beats) >= 0.8  # most true beats were found ...
    assert matched(beats, truth) >= 0.8  # ... and not at double tempo or off the grid


def seeds_beats(y: np.ndarray, sr: int) -> np.ndarray:
    """The seed's beat grid: librosa.beat.beat_track(y, sr), in seconds, inside the song."""
    _, frames = librosa.beat.beat_track(y=y, sr=sr)
    times = librosa.frames_to_time(frames, sr=sr)
    return times[(times > 0) & (times < len(y) / sr)]


@pytest.mark.parametrize("kind", ["click", "tonal_song", "pulse_tones", "demo_song"])
def test_beat_times_are_the_seeds_where_it_finds_beats(signals, kind):
    y = demo.demo_song(sr=SR) if kind == "demo_song" else signals[kind]
    expected = seeds_beats(y, SR)
    assert len(expected) > 10
    np.testing.assert_allclose(beat_times(y, SR), expected, atol=1e-9)


def test_beat_times_falls_back_only_where_the_seeds_call_finds_none(signals, monkeypatch):
    real = librosa.beat.beat_track
    calls = []

    def recording(**kwargs):
        calls.append("y" if "y" in kwargs else "onset_envelope")
        return real(**kwargs)

    monkeypatch.setattr(librosa.beat, "beat_track", recording)
    assert len(beat_times(signals["click"], SR)) > 10
    assert calls == ["y"]
    calls.clear()
    assert len(seeds_beats(signals["narrow_clicks"], SR)) == 0  # the seed's call hears no beat
    calls.clear()
    assert len(beat_times(signals["narrow_clicks"], SR)) > 10
    assert calls == ["y", "onset_envelope"]


def test_beat_times_drops_duplicates_and_beats_outside_the_song(signals, monkeypatch):
    y = signals["click"]
    duration = len(y) / SR
    found = np.array([duration, 0.0, 1.0, 0.5, 0.5, duration + 1])
    monkeypatch.setattr(librosa.beat, "beat_track", lambda **kwargs: (120.0, found))
    np.testing.assert_array_equal(beat_times(y, SR), [0.5, 1.0])


@pytest.mark.parametrize(
    "y",
    [
        np.zeros(5 * SR, np.float32),
        sine(220, 5.0, SR),
        np.concatenate([np.zeros(SR, np.float32), sine(220, 4.0, SR)]),  # a drone that starts late
        1e-5 * np.random.default_rng(0).standard_normal(5 * SR).astype(np.float32),  # dither only
        sine(220, 0.01, SR),  # shorter than one analysis window
    ],
    ids=["silence", "drone", "late drone", "dither", "too short"],
)
def test_beat_times_is_empty_without_a_beat(y):
    beats = beat_times(y, SR)
    assert isinstance(beats, np.ndarray) and beats.shape == (0,)


def test_beat_times_rejects_stereo():
    with pytest.raises(ValueError, match="mono"):
        beat_times(np.zeros((2, SR), np.float32), SR)


def test_demo_song_has_a_lead_in_then_a_steady_beat():
    beats = beat_times(demo.demo_song(sr=SR), SR)
    truth = demo.demo_beats()
    assert truth[0] == demo.DEMO_LEAD_IN
    assert beats[0] > demo.DEMO_LEAD_IN - TOLERANCE  # nothing on the beat during the pad
    assert matched(truth, beats) >= 0.9 and matched(beats, truth) >= 0.9


def test_split_parts_finds_the_drums_the_harmonic_part_and_the_bass():
    sr = 16000
    clicks = demo.click_track(3.0, 120, sr)
    low, high = sine(60, 3.0, sr, 0.3), sine(440, 3.0, sr, 0.3)
    song = clicks + low + high
    parts = split_parts(song, sr, PARTS)

    def likeness(a, b):
        return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))

    assert parts["song"] is not None and np.array_equal(parts["song"], song)
    assert likeness(parts["drums"], clicks) > 0.8 and likeness(parts["drums"], low + high) < 0.2
    assert likeness(parts["harmonic"], low + high) > 0.95
    assert likeness(parts["bass"], low) > 0.95 and likeness(parts["bass"], high) < 0.05
    assert all(part.shape == song.shape and part.dtype == np.float32 for part in parts.values())
    with pytest.raises(ValueError, match="unknown part"):
        split_parts(song, sr, ["piano"])


def test_groove_song_has_dense_onsets_from_every_part_and_a_quiet_breakdown():
    y = demo.groove_song(20.0, sr=16000)
    times, _ = onsets(y, 16000)
    assert len(times) >= 4 * 20  # drums, bass and chords: at least four onsets a second
    parts = split_parts(y, 16000, ["drums", "harmonic"])
    assert all(np.sqrt(np.mean(part ** 2)) > 0.02 for part in parts.values())
    bar = 2.4  # 100 BPM
    loud, quiet = y[int(0.5 * 16000):int((0.5 + 4 * bar) * 16000)], y[int(
        (0.5 + 4 * bar) * 16000):int((0.5 + 6 * bar) * 16000)]
    level = 20 * np.log10(np.sqrt(np.mean(loud ** 2)) / np.sqrt(np.mean(quiet ** 2)))
    assert level > 8  # the breakdown is quieter, so -ips 0 gives it few steps
    assert matched(demo.beat_grid(20.0, 100, 0.5), beat_times(y, 16000)) >= 0.8


# --- loudness ---------------------------------------------------------------------------------


def test_loudness_follows_the_original_rule(signals):
    y = signals["tonal_song"]
    loud = loudness(y, SR)
    spec = librosa.feature.melspectrogram(y=y, sr=SR, n_mels=128, fmax=8000, hop_length=512)
    m = spec.mean(axis=0)
    np.testing.assert_allclose(loud.values, (m - m.min()) / np.ptp(m), rtol=1e-5, atol=1e-6)
    assert loud.hop_seconds == pytest.approx(512 / SR)
    assert loud.values.min() == 0.0 and loud.values.max() == pytest.approx(1.0)


def test_loudness_of_silence_is_zero():
    loud = loudness(np.zeros(3 * SR, np.float32), SR)
    assert len(loud.values) > 0 and not loud.values.any()
    assert loud.peak(0.0, 3.0) == 0.0


def test_loudness_of_a_short_clip():
    loud = loudness(sine(440, 0.01, SR), SR)
    assert len(loud.values) >= 1 and np.all((loud.values >= 0) & (loud.values <= 1))


def test_peak_is_higher_in_the_louder_section():
    y = np.concatenate([sine(440, 2.0, SR, amp=0.05), sine(440, 2.0, SR, amp=0.8)])
    loud = loudness(y, SR)
    assert loud.peak(2.2, 4.0) > loud.peak(0.0, 1.8) + 0.5


def test_peak_on_tiny_and_out_of_range_spans():
    loud = Loudness(values=np.array([0.1, 0.9, 0.3, 0.5]), hop_seconds=0.5)
    assert loud.peak(0.6, 0.6) == 0.9  # empty span: the frame holding start
    assert loud.peak(1.0, 1.0) == 0.3  # ... also on a frame boundary
    assert loud.peak(1.6, 1.2) == 0.5  # ... and when end comes before start
    assert loud.peak(0.6, 0.61) == 0.9
    assert loud.peak(1.0, 1.5) == 0.3  # end is exclusive
    assert loud.peak(0.0, 1.01) == 0.9
    assert loud.peak(1.2, 100.0) == 0.5
    assert loud.peak(-3.0, 0.1) == 0.1  # clamped into range
    assert loud.peak(50.0, 60.0) == 0.5
    assert Loudness(values=np.zeros(0), hop_seconds=0.5).peak(0.0, 1.0) == 0.0


def test_peak_windows_start_on_the_seeds_integer_beat_frames():
    """The seed cut its loudness at integer beat frames, specm[b_k // 512:b_k+1 // 512]; our beat
    times are those frames in seconds, and dividing back must land on the same frames."""
    rng = np.random.default_rng(5)
    sr, hop = 16000, 512
    values = rng.random(4000)
    loud = Loudness(values=values, hop_seconds=hop / sr)
    frames = np.unique(np.concatenate([[51, 60], rng.integers(1, 3999, 300)]))  # 51: 1.632 s
    times = librosa.frames_to_time(frames, sr=sr, hop_length=hop)
    assert times[0] / loud.hop_seconds < 51  # the float rounding the seed's integers never had
    for (a, b), (start, end) in zip(zip(frames, frames[1:]), zip(times, times[1:])):
        assert loud.peak(start, end) == values[a:b].max()
    assert loud.peak(times[-1], 4000 * hop / sr) == values[frames[-1]:].max()


# --- encode_audio, which writes the files these tests decode ------------------------------------


def test_encode_audio_falls_back_to_opus_for_ogg(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "encoders", lambda: frozenset({"libopus", "aac"}))
    path = demo.encode_audio(sine(440, 1.0, 44100), 44100, tmp_path / "opus.ogg")
    y = load_audio(path, 44100)
    assert abs(len(y) - 44100) <= 0.05 * 44100 and main_freq(y, 44100) == pytest.approx(440, abs=2)


def test_encode_audio_refuses_formats_it_cannot_write(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="cannot write audio format '.aiff'"):
        demo.encode_audio(sine(440, 0.1, 16000), 16000, tmp_path / "song.aiff")
    monkeypatch.setattr(demo, "encoders", lambda: frozenset())
    with pytest.raises(ValueError, match="no Ogg encoder"):
        demo.encode_audio(sine(440, 0.1, 16000), 16000, tmp_path / "song.ogg")
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
