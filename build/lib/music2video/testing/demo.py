"""A demo song the project makes itself, and synthetic signals with known beats for the tests."""

import argparse
import csv
import io
import subprocess
from pathlib import Path

import numpy as np

from ..ffmpeg import encoders, ffmpeg_exe, ffmpeg_path
from ..files import write_bytes, writing

DEMO_SR = 44100
DEMO_BPM = 120.0
DEMO_SECONDS = 30.0
DEMO_LEAD_IN = 1.5  # seconds of soft pad before the first drum hit
DEMO_FADE = 3.0  # seconds of fade-out at the end

# I–V–vi–IV in C major, one chord per bar, as MIDI note numbers (root first).
PROGRESSION = ((60, 64, 67), (55, 59, 62), (57, 60, 64), (53, 57, 60))

DEMO_LYRICS = (
    ("00:02", "a city skyline at dawn"),
    ("00:05", "a red kite over green hills"),
    ("00:09", "waves breaking on a black sand beach"),
    ("00:14", "the sign says: open all night"),
    ("00:17", "a lighthouse in a storm"),
    ("00:20.10", "a field of sunflowers"),
    ("00:20.35", "a flock of birds taking flight"),
    ("00:24", "stars over a quiet desert"),
    ("00:27", "a paper boat drifting at dusk"),
)

# Output container and encoder arguments for each suffix encode_audio writes.
_FORMATS = {
    ".wav": ("wav", ["-c:a", "pcm_s16le"]),
    ".flac": ("flac", ["-c:a", "flac"]),
    ".mp3": ("mp3", ["-c:a", "libmp3lame"]),
    ".m4a": ("ipod", ["-c:a", "aac"]),
    ".ogg": ("ogg", None),  # libvorbis or libopus, whichever this ffmpeg has
}


def beat_grid(duration: float, bpm: float, start: float) -> np.ndarray:
    """The true beat times of click_track, tonal_song and pulse_tones: start + k·60/bpm < duration."""
    period = 60.0 / bpm
    count = max(0, int(np.ceil((duration - start) / period)))
    times = start + period * np.arange(count)
    return times[(times >= 0) & (times < duration)]


def midi_hz(note: float) -> float:
    """Frequency of a MIDI note number (69 = A4 = 440 Hz)."""
    return 440.0 * 2.0 ** ((note - 69) / 12)


def _place(out: np.ndarray, sound: np.ndarray, time: float, sr: int) -> None:
    """Adds sound into out starting at time seconds, cut at out's end."""
    i = int(round(time * sr))
    if 0 <= i < len(out):
        n = min(len(sound), len(out) - i)
        out[i : i + n] += sound[:n]


def _decay(seconds: float, tau: float, sr: int) -> np.ndarray:
    """An exponential decay envelope of the given length and time constant."""
    return np.exp(-np.arange(int(seconds * sr)) / (tau * sr))


def _noise_burst(sr: int, rng: np.random.Generator) -> np.ndarray:
    """A 30 ms broadband click: white noise with a fast decay."""
    env = _decay(0.03, 0.005, sr)
    return rng.uniform(-1, 1, len(env)) * env


def _kick(sr: int) -> np.ndarray:
    """A kick drum: a sine gliding from 130 Hz down to 45 Hz with a fast decay."""
    t = np.arange(int(0.35 * sr)) / sr
    freq = 45 + 85 * np.exp(-t / 0.03)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    attack = np.minimum(1.0, t / 0.002)
    return np.sin(phase) * np.exp(-t / 0.09) * attack


def _snare(sr: int, rng: np.random.Generator) -> np.ndarray:
    """A snare drum: a short 185 Hz body under a decaying noise rattle."""
    t = np.arange(int(0.2 * sr)) / sr
    body = np.sin(2 * np.pi * 185 * t) * np.exp(-t / 0.03)
    rattle = np.diff(rng.uniform(-1, 1, len(t) + 1)) * np.exp(-t / 0.05)
    return 0.5 * body + 0.35 * rattle


def _hat(sr: int, rng: np.random.Generator) -> np.ndarray:
    """A closed hi-hat: high-passed noise with a very fast decay."""
    env = _decay(0.05, 0.012, sr)
    noise = np.diff(np.diff(rng.uniform(-1, 1, len(env) + 2)))
    return noise * env / 4


def _tone(freq: float, seconds: float, sr: int, harmonics: tuple = (1.0,)) -> np.ndarray:
    """A steady tone of the given harmonic amplitudes, freq Hz, seconds long."""
    t = np.arange(int(seconds * sr)) / sr
    nyquist = sr / 2
    partials = [(freq * (h + 1), a) for h, a in enumerate(harmonics) if freq * (h + 1) < nyquist]
    return sum(a * np.sin(2 * np.pi * f * t) for f, a in partials)


def _adsr(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    """A linear attack, flat sustain, linear release envelope of n samples."""
    t = np.arange(n) / sr
    rise = np.minimum(1.0, t / attack)
    fall = np.minimum(1.0, (n / sr - t) / release)
    return np.clip(np.minimum(rise, fall), 0.0, 1.0)


def click_track(duration: float, bpm: float, sr: int, start: float = 0.5, seed: int = 0) -> np.ndarray:
    """Broadband noise-burst clicks on every beat of beat_grid(duration, bpm, start)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(duration * sr))
    for time in beat_grid(duration, bpm, start):
        _place(out, 0.8 * _noise_burst(sr, rng), time, sr)
    return out.astype(np.float32)


def pulse_tones(duration: float, bpm: float, sr: int, start: float = 0.5) -> np.ndarray:
    """A purely tonal signal: a held major chord whose loudness swells on every beat (no noise)."""
    out = np.zeros(int(duration * sr))
    chord = sum(_tone(midi_hz(n), 60.0 / bpm, sr, (1.0, 0.3)) for n in PROGRESSION[0])
    pulse = chord * _decay(60.0 / bpm, 0.08, sr)[: len(chord)] * _adsr(len(chord), sr, 0.003, 0.01)
    for time in beat_grid(duration, bpm, start):
        _place(out, 0.25 * pulse, time, sr)
    return out.astype(np.float32)


def _drums(out: np.ndarray, beats: np.ndarray, sr: int, rng: np.random.Generator) -> None:
    """Four-on-the-floor kick, snare on beats 2 and 4, eighth-note hi-hats accented on the beat."""
    kick, snare = _kick(sr), _snare(sr, rng)
    half = (beats[1] - beats[0]) / 2 if len(beats) > 1 else 0.25
    for k, time in enumerate(beats):
        _place(out, 0.9 * kick, time, sr)
        if k % 2 == 1:
            _place(out, 0.55 * snare, time, sr)
        # Off-beat hats alone rise as far in dB as the kick does and pull the tempo to 80 BPM.
        _place(out, 0.3 * _hat(sr, rng), time, sr)
        _place(out, 0.2 * _hat(sr, rng), time + half, sr)


def _bass_and_chords(out: np.ndarray, beats: np.ndarray, sr: int) -> None:
    """A root-note bass on every beat and a plucked chord on beats 1 and 3, changing chord each bar."""
    period = beats[1] - beats[0] if len(beats) > 1 else 0.5
    for k, time in enumerate(beats):
        root, *_ = chord = PROGRESSION[(k // 4) % len(PROGRESSION)]
        bass = _tone(midi_hz(root - 24), period, sr, (1.0, 0.4, 0.15))
        bass *= _adsr(len(bass), sr, 0.004, 0.06) * _decay(period, 0.35, sr)[: len(bass)]
        _place(out, 0.35 * bass, time, sr)
        if k % 2 == 0:
            stab = sum(_tone(midi_hz(n), 2 * period, sr, (1.0, 0.35, 0.12)) for n in chord)
            stab *= _decay(2 * period, 0.45, sr)[: len(stab)] * _adsr(len(stab), sr, 0.005, 0.1)
            _place(out, 0.09 * stab, time, sr)


def tonal_song(duration: float, bpm: float, sr: int, start: float = 0.5, seed: int = 0) -> np.ndarray:
    """Synthesised kick/snare/hat drums and a chord progression with a clear beat."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(duration * sr))
    beats = beat_grid(duration, bpm, start)
    _drums(out, beats, sr, rng)
    _bass_and_chords(out, beats, sr)
    return (0.8 * out / max(np.abs(out).max(), 1e-9)).astype(np.float32)


def _pad(duration: float, bpm: float, sr: int, start: float) -> np.ndarray:
    """A soft sustained pad on the chord of each bar, swelling in from time 0."""
    out = np.zeros(int(duration * sr))
    bar = 4 * 60.0 / bpm
    bar_starts = np.concatenate([[0.0], np.arange(start, duration, bar)])
    for k, time in enumerate(bar_starts):
        chord = PROGRESSION[max(k - 1, 0) % len(PROGRESSION)]
        length = (start if k == 0 else bar) + 0.3
        detuned = [midi_hz(n) * d for n in chord for d in (0.998, 1.002)]
        voice = sum(_tone(f, length, sr, (1.0, 0.2)) for f in detuned)
        attack = 1.2 if k == 0 else 0.25
        _place(out, voice * _adsr(len(voice), sr, attack, 0.3), time, sr)
    return out


def demo_beats() -> np.ndarray:
    """The true beat times of demo_song: from the end of the lead-in until a second before the end."""
    return beat_grid(DEMO_SECONDS - 1.0, DEMO_BPM, DEMO_LEAD_IN)


def demo_song(sr: int = DEMO_SR, seed: int = 0) -> np.ndarray:
    """The demo song: a pad lead-in, then drums, bass and chords at 120 BPM, fading out at the end."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(DEMO_SECONDS * sr))
    beats = demo_beats()
    _drums(out, beats, sr, rng)
    _bass_and_chords(out, beats, sr)
    out += 0.035 * _pad(DEMO_SECONDS, DEMO_BPM, sr, DEMO_LEAD_IN)
    fade = int(DEMO_FADE * sr)
    out[-fade:] *= np.linspace(1.0, 0.0, fade) ** 2
    return (0.8 * out / np.abs(out).max()).astype(np.float32)


def _audio_codec(suffix: str, bitrate: str) -> tuple:
    """Container name and codec arguments for writing an audio file with this suffix."""
    if suffix not in _FORMATS:
        raise ValueError(f"cannot write audio format {suffix or '(no suffix)'!r}; "
                         f"name the file with one of {', '.join(_FORMATS)}")
    container, codec = _FORMATS[suffix]
    if suffix == ".ogg":
        found = [name for name in ("libvorbis", "libopus") if name in encoders()]
        if not found:
            raise ValueError("this ffmpeg has no Ogg encoder (libvorbis or libopus); "
                             "write .flac or .wav instead")
        # Vorbis refuses high bitrates at low sample rates, so it gets a quality level instead.
        codec = ["-c:a", found[0]] + (["-q:a", "6"] if found[0] == "libvorbis" else ["-b:a", bitrate])
    elif suffix in (".mp3", ".m4a"):
        codec = codec + ["-b:a", bitrate]
    return container, codec


def encode_audio(y: np.ndarray, sr: int, path: Path, bitrate: str = "192k") -> Path:
    """Writes mono float audio to any format ffmpeg knows from path's suffix (wav, mp3, flac, ogg, m4a)."""
    path = Path(path)
    y = np.asarray(y, dtype="<f4")
    if y.ndim != 1:
        raise ValueError(f"encode_audio takes mono audio (a 1-D array), got shape {y.shape}; "
                         "mix the channels first")
    container, codec = _audio_codec(path.suffix.lower(), bitrate)
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y"]
    cmd += ["-f", "f32le", "-ac", "1", "-ar", str(sr), "-i", "-"] + codec
    # bitexact leaves out the encoder's version tag, so the same audio gives the same file.
    cmd += ["-fflags", "+bitexact", "-flags:a", "+bitexact", "-f", container]
    with writing(path) as part:
        try:
            subprocess.run([*cmd, ffmpeg_path(part)], input=y.tobytes(), capture_output=True,
                           check=True)
        except subprocess.CalledProcessError as e:
            stderr = e.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"ffmpeg could not write {path}: {stderr}") from e
    return path


def write_lyrics(lyrics: Path) -> None:
    """Writes the demo lyrics CSV (timestamp,text) with the csv module, so commas and colons survive."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["timestamp", "text"])
    writer.writerows(DEMO_LYRICS)
    write_bytes(lyrics, text.getvalue().encode("utf-8"))


def write_demo(song: Path, lyrics: Path) -> None:
    """Writes the demo song (about 30 s, mp3) and its lyrics CSV."""
    song, lyrics = Path(song), Path(lyrics)
    song.parent.mkdir(parents=True, exist_ok=True)
    lyrics.parent.mkdir(parents=True, exist_ok=True)
    encode_audio(demo_song(), DEMO_SR, song, bitrate="128k")
    write_lyrics(lyrics)


def get_parser() -> argparse.ArgumentParser:
    """The command line of python -m music2video.testing.demo."""
    parser = argparse.ArgumentParser(
        prog="python -m music2video.testing.demo",
        description="write the demo song and its lyrics (made here, no downloads)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--song", type=Path, default=Path("demo/demo_song.mp3"),
                        help="where to write the song")
    parser.add_argument("--lyrics", type=Path, default=Path("lyrics/demo_song.csv"),
                        help="where to write the lyrics csv")
    return parser


def main(argv=None) -> None:
    """Writes the demo song and lyrics where the command line says."""
    args = get_parser().parse_args(argv)
    print(f"Writing the demo song to {args.song} and its lyrics to {args.lyrics}")
    write_demo(args.song, args.lyrics)


if __name__ == "__main__":
    main()
