"""The audio stage: decode the song, find its beats, onsets and parts, measure its loudness."""

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np

from ..errors import UserError
from ..ffmpeg import ffmpeg_exe, ffmpeg_path, probe
from ..options import PARTS  # what split_parts makes of a song

RESAMPLER = "soxr_hq"  # librosa.load's resampler, which decoded the seed's songs
HOP_LENGTH = 512  # samples between analysis frames, for beats and loudness alike
N_FFT = 2048  # librosa's default window for the mel spectrograms
SILENCE_PEAK = 1e-4  # below this peak amplitude (-80 dBFS) the audio counts as silence
ONSET_DB = 1.0  # an onset must raise the mean mel level by this many dB
MIN_ONSETS = 3  # fewer onsets than this cannot make a beat
_FORMATS = "mp3, wav, flac, ogg, m4a"
ONSET_HOP_SECONDS = 0.005  # onset analysis step: well under a frame at any usual fps
ONSET_WINDOW_SECONDS = 0.032  # onset FFT window; 2048 samples at 16 kHz fire a frame early
FRAME_SNAP = 1e-6  # a time this close to a whole analysis frame (in frames) is that frame
STRENGTH_PERCENTILE = 95  # an onset this strong or more in its song counts as strength 1
MIN_PART_STRENGTH = 0.02  # a part's onset rises at least this share of the song's strong ones
TOP_DB = 80.0  # onsets: levels this far under the song's loudest count as that level (librosa's)
LOUDNESS_FLOOR_DB = -40.0  # frame_levels: 0 at this level under the loudest moment
LOUDNESS_SMOOTH_SECONDS = 0.5  # frame_levels follow the loudness over this long, not each hit
BASS_HZ = 150.0  # the bass part: the harmonic part below this


class AudioError(UserError, ValueError):
    """An audio file that cannot be used; one line naming the file and the fix."""


def _ffmpeg_error(path: Path, stderr: bytes) -> AudioError:
    """The AudioError for an ffmpeg run that failed on path, quoting ffmpeg's last line."""
    text = stderr.decode(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else "ffmpeg failed without a message"
    if "matches no streams" in text:
        return AudioError(f"audio file {path} has no audio stream; "
                          f"give a file with sound in it ({_FORMATS})")
    return AudioError(f"cannot decode audio file {path}: {last}; "
                      f"give a file ffmpeg can read ({_FORMATS})")


def load_audio(path: Path, sr: int) -> np.ndarray:
    """Decodes any file ffmpeg reads to mono float32 at sr Hz (1-D array), as the seed's
    librosa.load(path, sr=sr) did: decoded at the file's own rate, channels averaged, then
    resampled with soxr_hq (librosa's default)."""
    path = Path(path)
    if int(sr) <= 0:
        raise ValueError(f"sample rate must be a positive number of Hz, got {sr}")
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}; check the path")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes); give a file with sound in it")
    native = probe(path)["sample_rate"] or int(sr)  # none found: ffmpeg's error says why
    y = _decode(path, native)
    if y.size == 0:
        raise AudioError(f"audio file {path} holds no audio samples; give a file with sound in it")
    if native != int(sr):
        y = librosa.resample(y, orig_sr=native, target_sr=int(sr), res_type=RESAMPLER)
    return np.ascontiguousarray(y, dtype=np.float32)


def _decode(path: Path, rate: int) -> np.ndarray:
    """The first audio stream of a file as mono float32 (samples,) at `rate` Hz, by ffmpeg."""
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", ffmpeg_path(path)]
    cmd += ["-map", "0:a:0", "-f", "f32le", "-ac", "1", "-ar", str(int(rate))]
    # Mix stereo as (L + R) / 2, as librosa.load does; ffmpeg's default gives 0.707 each.
    cmd += ["-rematrix_maxval", "1.0", "-"]
    try:
        out = subprocess.run(cmd, capture_output=True, check=True).stdout
    except subprocess.CalledProcessError as e:
        raise _ffmpeg_error(path, e.stderr) from e
    return np.frombuffer(out, np.float32).copy()


def check_mono(y: np.ndarray) -> np.ndarray:
    """y as a 1-D float array, or a ValueError that says how to get one."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"expected mono audio (a 1-D array), got shape {y.shape}; "
                         "decode it with load_audio")
    return y.astype(np.float32, copy=False)


def _has_pulse(onset_env: np.ndarray) -> bool:
    """Whether the onset envelope rises at least MIN_ONSETS separate times by ONSET_DB or more."""
    strong = onset_env >= ONSET_DB
    rises = np.count_nonzero(strong[1:] & ~strong[:-1]) + int(strong[:1].any())
    return rises >= MIN_ONSETS


def beat_times(y: np.ndarray, sr: int) -> np.ndarray:
    """Beat times in seconds (sorted, strictly inside (0, duration)); empty when the audio has no beat.

    The seed's call, librosa.beat.beat_track(y=y, sr=sr), whose onset envelope is the median
    over mel bands; where that finds no beat (narrow-band clicks move too few bands to shift the
    median), the same tracker on the envelope's mean over bands."""
    y = check_mono(y)
    none = np.zeros(0)
    if y.size < N_FFT or not np.isfinite(y).all() or np.abs(y).max() < SILENCE_PEAK:
        return none
    mean_env = librosa.onset.onset_strength(y=y, sr=sr, hop_length=HOP_LENGTH)  # (frames,) dB rise
    if not _has_pulse(mean_env):
        return none
    duration = y.size / sr
    beats = _inside(librosa.beat.beat_track(y=y, sr=sr, hop_length=HOP_LENGTH, units="time")[1],
                    duration)
    if beats.size == 0:
        beats = _inside(librosa.beat.beat_track(onset_envelope=mean_env, sr=sr,
                                                hop_length=HOP_LENGTH, units="time")[1], duration)
    return beats


def _inside(beats, duration: float) -> np.ndarray:
    """Beat times sorted, without duplicates, strictly inside (0, duration)."""
    beats = np.unique(np.asarray(beats, dtype=float))
    return beats[(beats > 0) & (beats < duration)]


@dataclass(frozen=True, eq=False)
class Loudness:
    """Mean mel power of the song per analysis frame, normalised to 0-1."""

    values: np.ndarray  # (frames,) in [0, 1]
    hop_seconds: float  # seconds per frame

    def position(self, seconds: float) -> float:
        """A time in analysis frames, snapped to the whole frame within FRAME_SNAP of it.

        Beat times are whole frames (frame * hop / sr), and dividing back can miss them by a
        rounding step (1.632 s / 0.032 s = 50.99999999999999): the seed indexed its beats as
        integer frames, so the window starts on the beat's own frame, not one early."""
        x = seconds / self.hop_seconds
        nearest = round(x)
        return float(nearest) if abs(x - nearest) < FRAME_SNAP else x

    def peak(self, start: float, end: float) -> float:
        """Highest normalised loudness in [start, end) seconds (at least the frame containing start)."""
        n = len(self.values)
        if n == 0:
            return 0.0
        first = min(max(math.floor(self.position(start)), 0), n - 1)
        stop = min(max(math.ceil(self.position(end)), first + 1), n)
        return float(self.values[first:stop].max())


def loudness(y: np.ndarray, sr: int) -> Loudness:
    """Normalised mean mel power, as the original project's -ips 0 rule used it."""
    y = check_mono(y)
    if y.size == 0:
        raise ValueError("cannot measure the loudness of empty audio; give at least one sample")
    if y.size < N_FFT:
        y = np.pad(y, (0, N_FFT - y.size))  # shorter than one window: measure it padded with silence
    spec = librosa.feature.melspectrogram(y=y, sr=sr, n_mels=128, fmax=min(8000, sr / 2),
                                          hop_length=HOP_LENGTH)  # (128, frames)
    m = spec.mean(axis=0)  # (frames,)
    span = float(np.ptp(m))
    values = (m - m.min()) / span if span > 0 else np.zeros_like(m)
    values.setflags(write=False)
    return Loudness(values=values, hop_seconds=HOP_LENGTH / sr)


def split_parts(samples: np.ndarray, sr: int, names) -> dict[str, np.ndarray]:
    """The named parts of a song as signals (n,), from PARTS: 'song' itself; 'drums' and
    'harmonic', librosa's harmonic-percussive separation (median filters over the spectrogram,
    no weights); 'bass', the harmonic part below BASS_HZ."""
    y = check_mono(samples)
    unknown = set(names) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown part(s) {sorted(unknown)}; the parts are {', '.join(PARTS)}")
    parts = {"song": y}
    if set(names) - {"song"}:
        if y.size < N_FFT or not np.isfinite(y).all():
            parts.update({name: np.zeros_like(y) for name in PARTS[1:]})
        else:
            spectrum = librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH)  # (bins, frames)
            harmonic, percussive = librosa.decompose.hpss(spectrum)
            low = librosa.fft_frequencies(sr=sr, n_fft=N_FFT) < BASS_HZ  # (bins,)

            def back(part):
                return librosa.istft(part, hop_length=HOP_LENGTH, length=y.size).astype(np.float32)

            parts.update(drums=back(percussive), harmonic=back(harmonic),
                         bass=back(harmonic * low[:, None]))
    return {name: parts[name] for name in names}


@dataclass(frozen=True)
class OnsetScale:
    """What an onset is measured against: a song's loudest level and its strongest onsets."""

    floor_db: float  # mel levels below this (TOP_DB under the loudest) count as this level
    full: float  # envelope height of the song's strength-1 onsets (STRENGTH_PERCENTILE)


def _onset_grid(sr: int) -> tuple[int, int]:
    """Hop and FFT size of the onset analysis, in samples."""
    return max(1, round(sr * ONSET_HOP_SECONDS)), 2 ** max(6, round(math.log2(sr * ONSET_WINDOW_SECONDS)))


def _onset_peaks(y: np.ndarray, sr: int, floor_db: float | None):
    """The onset envelope (frames,), its peak frames and the floor used (None: TOP_DB under
    y's own loudest, as librosa.onset.onset_strength(y=y) floors it); None when y is silent."""
    hop, n_fft = _onset_grid(sr)
    if y.size < n_fft or not np.isfinite(y).all() or not np.abs(y).max() > 0:
        return None
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop)  # (128, frames)
    db = librosa.power_to_db(mel, top_db=None)
    floor_db = db.max() - TOP_DB if floor_db is None else floor_db
    env = librosa.onset.onset_strength(S=np.maximum(db, floor_db), sr=sr, n_fft=n_fft,
                                       hop_length=hop)  # (frames,) mean dB rise
    peaks = librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=hop)
    return env, peaks, floor_db


def onset_scale(samples: np.ndarray, sr: int) -> OnsetScale | None:
    """A song's OnsetScale, to measure its parts' onsets on the song's own scale (None: silent)."""
    found = _onset_peaks(check_mono(samples), sr, None)
    if found is None:
        return None
    env, peaks, floor_db = found
    return OnsetScale(floor_db, float(np.percentile(env[peaks], STRENGTH_PERCENTILE))
                      if peaks.size else 0.0)


def onsets(samples: np.ndarray, sr: int,
           scale: OnsetScale | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Onset times in seconds and their strengths in [0, 1], from librosa's onset envelope.

    Strength 1 is an onset as strong as the STRENGTH_PERCENTILE-th percentile of the signal's.
    With the `scale` of the song a part comes from, the part's levels are floored TOP_DB under
    the song's loudest, and its onsets that rise less than MIN_PART_STRENGTH of the song's
    strong ones are left out: a part that is all but silent has none."""
    y = check_mono(samples)
    found = _onset_peaks(y, sr, None if scale is None else scale.floor_db)
    if found is None or found[1].size == 0:
        return np.zeros(0), np.zeros(0)
    env, peaks, _ = found
    heights = env[peaks]
    if scale is not None:  # a part of a song: what barely rises on the song's scale is no onset
        keep = heights >= MIN_PART_STRENGTH * scale.full
        peaks, heights = peaks[keep], heights[keep]
        if peaks.size == 0:
            return np.zeros(0), np.zeros(0)
    full = np.percentile(heights, STRENGTH_PERCENTILE)
    strengths = np.clip(heights / full, 0.0, 1.0) if full > 0 else np.ones_like(heights)
    hop, _ = _onset_grid(sr)
    return peaks * hop / sr, strengths.astype(float)


def smoothed_rms(samples: np.ndarray, sr: int) -> np.ndarray:
    """RMS level per onset-analysis step, smoothed over LOUDNESS_SMOOTH_SECONDS (steps,)."""
    y = check_mono(samples)
    hop, _ = _onset_grid(sr)
    if y.size == 0:
        return np.zeros(0)
    rms = librosa.feature.rms(y=y, frame_length=4 * hop, hop_length=hop)[0]  # (steps,)
    width = max(1, round(LOUDNESS_SMOOTH_SECONDS * sr / hop))
    return np.sqrt(np.convolve(rms ** 2, np.ones(width) / width, mode="same"))


def frame_levels(samples: np.ndarray, sr: int, fps: float, frames: int,
                 peak: float | None = None) -> np.ndarray:
    """Level per video frame in [0, 1]: the smoothed RMS in dB under `peak` (the signal's own
    loudest by default, or its song's), 1 at the peak and 0 at LOUDNESS_FLOOR_DB."""
    rms = smoothed_rms(samples, sr)
    if frames <= 0:
        return np.zeros(0)
    peak = (rms.max() if rms.size else 0.0) if peak is None else peak
    if rms.size == 0 or not peak > 0:
        return np.zeros(frames)
    db = 20 * np.log10(np.maximum(rms / peak, 1e-10))
    level = np.clip(1 - db / LOUDNESS_FLOOR_DB, 0.0, 1.0)
    hop, _ = _onset_grid(sr)
    return np.interp(np.arange(frames) / fps, np.arange(level.size) * hop / sr, level)
