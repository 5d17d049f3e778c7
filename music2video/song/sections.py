"""Sections: runs of whole segments, balanced by steps, cut where the song changes; one unit of
work each.

N sections each hold about 1/N of the song's steps, so N GPUs can share one song evenly. Each
cut falls on a segment start (a beat in beats mode, a lyric cut in interpolate mode) near its
even split, at the place in reach where the music changes most for longer than a bar or two:
another timbre, key or texture (verse to chorus, into a bridge). That change is measured on a
novelty curve: Foote's checkerboard kernel (Gaussian-tapered, KERNEL_SECONDS either side) slid
along the diagonal of the cosine self-similarity matrix of the song's chroma + MFCC frames.
"""

import math
from dataclasses import dataclass

import librosa
import numpy as np
import scipy.ndimage

from ..errors import UserError
from .audio import HOP_LENGTH, N_FFT

SECONDS_PER_SECTION = 30.0  # 'auto': one section per this many seconds of song, rounded half up
MIN_SECTION_SECONDS = 4.0  # no section is shorter than this (nor than one segment)
FRAME_SECONDS = 0.15  # analysis frames are pooled to about this length before the novelty
KERNEL_SECONDS = 10.0  # the checkerboard reaches this far either side, also its taper's sigma
BALANCE = 0.2  # a section holds at most (1 + BALANCE) / N of the steps, where segments allow
DRIFT = 0.5  # a cut's score given up for lying at its window's edge instead of the even split
N_MFCC = 20  # MFCCs computed; the 0th (loudness) is left out of the features


class SectionError(UserError, ValueError):
    """A --sections request that cannot be used; one line naming it and the fix."""


@dataclass(frozen=True)
class Section:
    """A run of whole segments rendered as one unit of work."""

    index: int
    first: int  # index of its first segment
    last: int  # index of its last segment (inclusive)
    start: float  # seconds, the first segment's start
    end: float  # seconds, the last segment's end

    @property
    def segments(self) -> range:
        """Indices of the segments it covers."""
        return range(self.first, self.last + 1)


def parse_request(text: str | int) -> str | int:
    """'auto' or a whole number of sections >= 1, from the command line's --sections."""
    value = str(text).strip().lower()
    if value == "auto":
        return "auto"
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise SectionError(f"--sections takes 'auto' or a whole number of sections >= 1, "
                           f"got {text!r}")
    return count


def auto_count(duration: float) -> int:
    """Sections for 'auto': one per SECONDS_PER_SECTION of song, rounded half up, at least 1."""
    return max(1, math.floor(duration / SECONDS_PER_SECTION + 0.5))


def _features(samples: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    """Unit-length chroma + MFCC frames pooled to about FRAME_SECONDS, and a frame's seconds."""
    y = np.asarray(samples, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected mono audio (a 1-D array), got shape {y.shape}; "
                         "decode it with audio.load_audio")
    if y.size < N_FFT:
        y = np.pad(y, (0, N_FFT - y.size))
    power = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH)) ** 2  # (bins, frames)
    chroma = librosa.feature.chroma_stft(S=power, sr=sr, tuning=0.0)  # (12, frames), max 1 each
    mel = librosa.feature.melspectrogram(S=power, sr=sr, n_mels=64, fmax=min(8000, sr / 2))
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=N_MFCC)[1:]  # (19, frames)
    pool = max(1, round(FRAME_SECONDS * sr / HOP_LENGTH))
    blocks = max(1, chroma.shape[1] // pool)
    parts = []
    for x in (chroma, mfcc):
        x = x[:, : blocks * pool].reshape(x.shape[0], blocks, pool).mean(axis=2)  # (d, blocks)
        parts.append(x / np.maximum(np.linalg.norm(x, axis=0), 1e-9))  # silent blocks stay 0
    return np.vstack(parts) / np.sqrt(2), pool * HOP_LENGTH / sr  # (31, blocks), seconds


def checkerboard(half: int) -> np.ndarray:
    """The factor w of Foote's Gaussian-tapered checkerboard kernel K = w wᵀ (2·half taps)."""
    offsets = np.arange(-half, half) + 0.5  # frame centres relative to the boundary
    taper = np.exp(-0.5 * (offsets / half) ** 2)  # sigma = half: edge taps weigh 0.61
    return np.sign(offsets) * taper / taper[half:].sum()  # each side sums to ±1


def novelty(features: np.ndarray, half: int) -> np.ndarray:
    """Foote novelty of the frames' cosine self-similarity at the boundary before each frame.

    With S = Fᵀ F and a separable kernel K = w wᵀ, Σ K(i, j) S(t+i, t+j) = ‖Σ_i w_i f_(t+i)‖²:
    the squared distance between the tapered mean frames after and before t. This computes it
    in that form (O(frames · half) instead of O(frames · half²)), reflecting at the song's ends."""
    w = checkerboard(half)
    diff = scipy.ndimage.correlate1d(features, w, axis=1, mode="reflect")  # (d, frames)
    return (diff ** 2).sum(axis=0)  # (frames,)


def novelty_at(samples: np.ndarray, sr: int, times) -> np.ndarray:
    """The song's Foote novelty at each time (seconds), as a share of its strongest change
    (0 to 1; all 0 for a song without any change)."""
    features, step = _features(samples, sr)
    curve = novelty(features, max(1, round(KERNEL_SECONDS / step)))  # (frames,)
    frames = np.clip(np.round(np.asarray(times, dtype=float) / step).astype(int), 0,
                     len(curve) - 1)
    peak = float(curve.max())
    return curve[frames] / peak if peak > 0 else np.zeros(len(frames))


def balanced_cuts(steps: list[int], starts: list[float], scores, count: int, end: float,
                  min_seconds: float | None = None) -> list[int]:
    """The segments that open sections 2..count: each cut near j/count of the song's steps.

    Cut j may fall where the steps before it are within BALANCE/2 of one section's share from
    j shares, so no section holds more than (1 + BALANCE)/count of the steps where the segments
    are short enough to allow it. In that window it takes the segment start with the best score
    (the song's change there, 0 to 1) less DRIFT for each window's half-width it lies from the
    even split; with no segment start in the window, the nearest to it. Cuts are taken in order,
    each at least min_seconds (None: MIN_SECTION_SECONDS) after the one before and before the
    song's end; one that cannot be is left out."""
    min_seconds = MIN_SECTION_SECONDS if min_seconds is None else min_seconds
    share = sum(steps) / count
    before = np.concatenate([[0], np.cumsum(steps)])[:-1]  # steps before segment k
    starts, scores = np.asarray(starts, dtype=float), np.asarray(scores, dtype=float)
    reach = max(BALANCE / 2 * share, 1e-9)
    cuts: list[int] = []
    for j in range(1, count):
        opened = starts[cuts[-1]] if cuts else 0.0
        room = np.flatnonzero((starts >= opened + min_seconds - 1e-9)
                              & (starts <= end - min_seconds + 1e-9))
        room = room[room > (cuts[-1] if cuts else 0)]
        if not len(room):
            break
        off = np.abs(before[room] - j * share) / reach  # in half-widths of the window
        inside = off <= 1 + 1e-9
        if inside.any():
            value = scores[room] - DRIFT * off
            cuts.append(int(room[inside][np.argmax(value[inside])]))  # the earliest of equals
        else:
            cuts.append(int(room[np.argmin(off)]))
    return sorted(set(cuts))


def tile(segments: list, cuts: list[int]) -> list[Section]:
    """Sections tiling the segments in order, a new one opening at each cut (segment index)."""
    if not segments:
        raise ValueError("cannot plan sections for an empty schedule; build the segments first")
    firsts = [0, *sorted(cuts)]
    lasts = [f - 1 for f in firsts[1:]] + [len(segments) - 1]
    return [Section(i, first, last, float(segments[first].start), float(segments[last].end))
            for i, (first, last) in enumerate(zip(firsts, lasts))]


def sections_for(samples: np.ndarray, sr: int, segments: list, request: str | int) -> list[Section]:
    """The song's sections for --sections ('auto' or N); N = 1 runs no analysis.

    N sections each hold about 1/N of the song's steps, cut at segment starts (beats, or lyric
    cuts) where the song changes most within reach of the even split (balanced_cuts), so N
    workers can share one song evenly. Where fewer fit, fewer: no section is shorter than
    MIN_SECTION_SECONDS nor than one segment. Nothing depends on how many workers render them."""
    request = parse_request(request)
    song_end = float(segments[-1].end) if segments else 0.0
    count = auto_count(song_end) if request == "auto" else request
    count = min(count, math.floor(song_end / MIN_SECTION_SECONDS + 1e-9), len(segments))
    if count <= 1:
        return tile(segments, [])
    starts = [float(s.start) for s in segments]
    scores = novelty_at(samples, sr, starts)
    steps = [s.iterations for s in segments]
    return tile(segments, balanced_cuts(steps, starts, scores, count, song_end))
