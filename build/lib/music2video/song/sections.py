"""Sections: runs of whole segments cut at the song's structural changes, one unit of work each.

A section boundary is a place where the music changes for longer than a bar or two: another
timbre, key or texture (verse to chorus, into a bridge). It is found on a novelty curve: Foote's
checkerboard kernel (Gaussian-tapered, KERNEL_SECONDS either side) slid along the diagonal of the
cosine self-similarity matrix of the song's chroma + MFCC frames. Its peaks rank the boundaries
by strength; each is then snapped to the nearest segment cut, so it falls on a beat in beats mode
and on a lyric cut in interpolate mode.
"""

import math
from dataclasses import dataclass

import librosa
import numpy as np
import scipy.ndimage
import scipy.signal

from ..errors import UserError
from .audio import HOP_LENGTH, N_FFT

SECONDS_PER_SECTION = 30.0  # 'auto': one section per this many seconds of song, rounded half up
MIN_SECTION_SECONDS = 4.0  # no section is shorter than this (nor than one segment)
FRAME_SECONDS = 0.15  # analysis frames are pooled to about this length before the novelty
KERNEL_SECONDS = 10.0  # the checkerboard reaches this far either side, also its taper's sigma
WEAK_NOVELTY = 0.1  # a peak below this is movement inside a section, not a change of section
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


def _fill(chosen: list[float], curve: np.ndarray, step: float, duration: float) -> float | None:
    """A cut at the strongest change in the middle third of the longest section, if it splits."""
    edges = [0.0, *sorted(chosen), duration]
    a, b = max(zip(edges, edges[1:]), key=lambda span: span[1] - span[0])
    if b - a < 2 * MIN_SECTION_SECONDS - 1e-9:
        return None
    margin = max((b - a) / 3, MIN_SECTION_SECONDS)
    lo = math.ceil((a + margin) / step - 1e-9)
    hi = min(math.floor((b - margin) / step + 1e-9), len(curve) - 1)
    if lo > hi:
        return (a + b) / 2
    return (lo + int(np.argmax(curve[lo : hi + 1]))) * step


def structural_boundaries(samples: np.ndarray, sr: int, count: int) -> list[float]:
    """Up to `count` boundary times (seconds), strongest first; a prefix of any longer list.

    Boundaries are the novelty peaks of at least WEAK_NOVELTY, strongest first, each at least
    MIN_SECTION_SECONDS from the song's ends and from every stronger one. When the song has
    fewer such changes than asked for, the rest split the longest section at the strongest
    change in its middle third, so a song without structure still gets even sections."""
    duration = len(samples) / sr
    if count < 1 or duration < 2 * MIN_SECTION_SECONDS:
        return []
    features, step = _features(samples, sr)
    curve = novelty(features, max(1, round(KERNEL_SECONDS / step)))  # (frames,)
    peaks, _ = scipy.signal.find_peaks(curve, height=WEAK_NOVELTY)
    chosen: list[float] = []
    for k in sorted(peaks, key=lambda k: (-curve[k], k)):
        t = float(k * step)
        inside = MIN_SECTION_SECONDS <= t <= duration - MIN_SECTION_SECONDS
        if inside and all(abs(t - c) >= MIN_SECTION_SECONDS for c in chosen):
            chosen.append(t)
        if len(chosen) == count:
            return chosen
    while len(chosen) < count:
        t = _fill(chosen, curve, step, duration)
        if t is None:
            break
        chosen.append(float(t))
    return chosen


def _around(cuts: list[float], t: float) -> list[int]:
    """Indices into cuts of the cuts either side of t, nearest first (the earlier one on a tie)."""
    k = int(np.searchsorted(cuts, t))
    near = [j for j in (k - 1, k) if 0 <= j < len(cuts)]
    return sorted(near, key=lambda j: (abs(cuts[j] - t), j))


def plan_sections(segments: list, boundaries: list[float], count: int | None = None,
                  min_seconds: float | None = None) -> list[Section]:
    """Sections tiling the segments in order, cut at the boundaries snapped to segment starts.

    Boundaries are taken in the order given (strongest first), each at the nearer of the two
    segment starts around it that is not taken and leaves no section shorter than min_seconds,
    or skipped when neither does. At most `count` sections (None: as many as they give);
    min_seconds None is MIN_SECTION_SECONDS."""
    if not segments:
        raise ValueError("cannot plan sections for an empty schedule; build the segments first")
    cuts = [float(s.start) for s in segments[1:]]  # segment k + 1 starts at cuts[k]
    song_end = float(segments[-1].end)
    min_seconds = MIN_SECTION_SECONDS if min_seconds is None else min_seconds
    taken: list[int] = []  # accepted cuts, as indices into cuts
    for t in boundaries:
        if count is not None and len(taken) >= count - 1:
            break
        times = sorted([0.0, song_end] + [cuts[j] for j in taken])
        for k in _around(cuts, t):
            i = int(np.searchsorted(times, cuts[k]))
            shortest = min(cuts[k] - times[i - 1], times[i] - cuts[k])
            if k not in taken and shortest >= min_seconds - 1e-9:
                taken.append(k)
                break
    firsts = [0] + sorted(k + 1 for k in taken)
    lasts = [f - 1 for f in firsts[1:]] + [len(segments) - 1]
    return [Section(i, first, last, float(segments[first].start), float(segments[last].end))
            for i, (first, last) in enumerate(zip(firsts, lasts))]


def sections_for(samples: np.ndarray, sr: int, segments: list, request: str | int) -> list[Section]:
    """The song's sections for --sections ('auto' or N); N = 1 runs no analysis.

    N asks for N sections. Where fewer fit, it gets fewer: the cuts stop once no section can be
    split into two of at least MIN_SECTION_SECONDS (and one segment) each."""
    request = parse_request(request)
    song_end = float(segments[-1].end) if segments else 0.0
    count = auto_count(song_end) if request == "auto" else request
    if count == 1 or len(segments) < 2:
        return plan_sections(segments, [])
    # Every boundary that could fit, so the ones snapping makes unusable have stand-ins.
    most = math.floor(song_end / MIN_SECTION_SECONDS)
    return plan_sections(segments, structural_boundaries(samples, sr, most), count)
