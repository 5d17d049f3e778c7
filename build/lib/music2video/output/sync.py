"""A measured figure for audio-visual sync: how close the video's sudden changes sit to the onsets.

Visual change of frame i is the mean absolute difference between frames i-1 and i (0-255
scale; 0 for frame 0). Its peaks are the frames that change clearly more than the frames
around them. For each onset of the song (audio.onsets, on frame round(time * fps)) the
offset to the nearest peak is taken, in frames (positive: the picture moves late). The figure
is the median of the absolute offsets and the share within +-1 frame; `chance_within_1` is
the share a song with onsets on random frames would get from the same peaks, so a figure can
be told from luck.
"""

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..song.audio import onsets

PEAK_RATIO = 1.5  # a peak changes at least this many times its neighbourhood's median
PEAK_WINDOW_SECONDS = 0.25  # the neighbourhood: this long on either side
PEAK_FLOOR = 0.5  # and by at least this much (0-255 scale): encoder noise is not a peak


class SyncError(UserError, ValueError):
    """A video that cannot be measured; str() names it and the fix."""


def visual_change(frames: Iterable[np.ndarray]) -> np.ndarray:
    """Mean absolute difference of each frame from the one before (0 for the first), 0-255."""
    change, previous = [], None
    for frame in frames:
        current = np.asarray(frame, dtype=np.int16)  # (H, W, 3) uint8 values
        change.append(0.0 if previous is None else float(np.abs(current - previous).mean()))
        previous = current
    return np.asarray(change)


def change_peaks(change: np.ndarray, fps: float = 30.0) -> np.ndarray:
    """Frames whose change is a local maximum standing clearly above its neighbourhood."""
    change = np.asarray(change, dtype=float)
    if change.size < 2:
        return np.zeros(0, dtype=int)
    w = max(2, round(PEAK_WINDOW_SECONDS * fps))
    padded = np.pad(change, w, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * w + 1)  # (n, 2w+1)
    base = np.median(windows, axis=1)
    left = np.concatenate([[-np.inf], change[:-1]])
    right = np.concatenate([change[1:], [-np.inf]])
    local = (change > left) & (change >= right)
    clear = change >= np.maximum(PEAK_RATIO * base, base + PEAK_FLOOR)
    return np.flatnonzero(local & clear)


def onset_frames(samples: np.ndarray, sr: int, fps: float, min_strength: float = 0.0) -> np.ndarray:
    """Video frames of the song's onsets, round(time * fps), sorted and without repeats."""
    times, strengths = onsets(samples, sr)
    return np.unique(np.round(times[strengths >= min_strength] * fps).astype(int))


def sync_figure(frames_of_onsets: np.ndarray, change: np.ndarray, fps: float = 30.0,
                peaks: np.ndarray | None = None) -> dict:
    """Median offset from each onset to the nearest visual-change peak, and the share within 1."""
    change = np.asarray(change, dtype=float)
    peaks = change_peaks(change, fps) if peaks is None else np.sort(np.asarray(peaks, dtype=int))
    hits = np.asarray(frames_of_onsets, dtype=int)
    hits = hits[(hits >= 1) & (hits < change.size)]  # frame 0 cannot change
    figure = {"count": int(hits.size), "peaks": int(peaks.size), "median_offset_frames": None,
              "median_signed_offset_frames": None, "share_within_1": None,
              "chance_within_1": None}
    if hits.size == 0 or peaks.size == 0:
        return figure
    right = np.clip(np.searchsorted(peaks, hits), 0, peaks.size - 1)  # peaks are sorted
    left = np.clip(right - 1, 0, peaks.size - 1)
    offsets = np.where(np.abs(peaks[left] - hits) <= np.abs(peaks[right] - hits),
                       peaks[left] - hits, peaks[right] - hits)  # (onsets,) frames
    near = np.zeros(change.size, dtype=bool)
    for d in (-1, 0, 1):
        near[np.clip(peaks + d, 0, change.size - 1)] = True
    figure.update(median_offset_frames=float(np.median(np.abs(offsets))),
                  median_signed_offset_frames=float(np.median(offsets)),
                  share_within_1=float(np.mean(np.abs(offsets) <= 1)),
                  chance_within_1=float(near[1:].mean()))
    return figure


def video_frames(path: Path) -> Iterable[np.ndarray]:
    """The decoded RGB frames (H, W, 3) uint8 of a video, one at a time."""
    from ..ffmpeg import VideoError, read_frames

    try:
        yield from read_frames(path)
    except VideoError as err:
        raise SyncError(f"{err}; give a video file ffmpeg decodes") from None


def measure_video(video_path: Path, samples: np.ndarray, sr: int, fps: float) -> dict:
    """The sync figure of a finished video against its song (decoded at sr)."""
    change = visual_change(video_frames(Path(video_path)))
    return sync_figure(onset_frames(samples, sr, fps), change, fps)


def sync_line(figure: dict) -> str:
    """One log line about a sync figure."""
    if figure["median_offset_frames"] is None:
        return f"sync: {figure['count']} onsets, {figure['peaks']} change peaks: nothing to measure"
    return (f"sync: median {figure['median_offset_frames']:g} frames from onset to change peak "
            f"(signed {figure['median_signed_offset_frames']:+g}), "
            f"{100 * figure['share_within_1']:.0f}% within 1 frame "
            f"(chance {100 * figure['chance_within_1']:.0f}%), {figure['count']} onsets")
