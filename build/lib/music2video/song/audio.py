"""The audio stage: decode the song, find its beats, and measure its loudness."""

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np

from ..errors import UserError
from ..ffmpeg import ffmpeg_exe, ffmpeg_path

HOP_LENGTH = 512  # samples between analysis frames, for beats and loudness alike
N_FFT = 2048  # librosa's default window for the mel spectrograms
SILENCE_PEAK = 1e-4  # below this peak amplitude (-80 dBFS) the audio counts as silence
ONSET_DB = 1.0  # an onset must raise the mean mel level by this many dB
MIN_ONSETS = 3  # fewer onsets than this cannot make a beat
_FORMATS = "mp3, wav, flac, ogg, m4a"
ONSET_HOP_SECONDS = 0.005  # onset analysis step: well under a frame at any usual fps
ONSET_WINDOW_SECONDS = 0.032  # onset FFT window; 2048 samples at 16 kHz fire a frame early
STRENGTH_PERCENTILE = 95  # an onset this strong or more in its song counts as strength 1


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
    """Decodes any file ffmpeg reads to mono float32 at sr Hz (1-D array)."""
    path = Path(path)
    if int(sr) <= 0:
        raise ValueError(f"sample rate must be a positive number of Hz, got {sr}")
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}; check the path")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes); give a file with sound in it")
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", ffmpeg_path(path)]
    cmd += ["-map", "0:a:0", "-f", "f32le", "-ac", "1", "-ar", str(int(sr))]
    # Mix stereo as (L + R) / 2, as librosa.load does; ffmpeg's default gives 0.707 each.
    cmd += ["-rematrix_maxval", "1.0", "-"]
    try:
        out = subprocess.run(cmd, capture_output=True, check=True).stdout
    except subprocess.CalledProcessError as e:
        raise _ffmpeg_error(path, e.stderr) from e
    y = np.frombuffer(out, np.float32).copy()  # (samples,)
    if y.size == 0:
        raise AudioError(f"audio file {path} holds no audio samples; give a file with sound in it")
    return y


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

    def peak(self, start: float, end: float) -> float:
        """Highest normalised loudness in [start, end) seconds (at least the frame containing start)."""
        n = len(self.values)
        if n == 0:
            return 0.0
        first = min(max(int(np.floor(start / self.hop_seconds)), 0), n - 1)
        stop = min(max(int(np.ceil(end / self.hop_seconds)), first + 1), n)
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


def onsets(samples: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Onset times in seconds and their strengths in [0, 1], from librosa's onset envelope."""
    y = check_mono(samples)
    hop = max(1, round(sr * ONSET_HOP_SECONDS))
    n_fft = 2 ** max(6, round(math.log2(sr * ONSET_WINDOW_SECONDS)))
    if y.size < n_fft or not np.isfinite(y).all() or not np.abs(y).max() > 0:
        return np.zeros(0), np.zeros(0)
    env = librosa.onset.onset_strength(y=y, sr=sr, n_fft=n_fft, hop_length=hop)  # (frames,)
    peaks = librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=hop)
    if peaks.size == 0:
        return np.zeros(0), np.zeros(0)
    heights = env[peaks]
    full = np.percentile(heights, STRENGTH_PERCENTILE)
    strengths = np.clip(heights / full, 0.0, 1.0) if full > 0 else np.ones_like(heights)
    return peaks * hop / sr, strengths.astype(float)
