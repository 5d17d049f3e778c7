"""The schedule: which goal guides which stretch of the song, for how many steps and frames.

Both generate modes build a list of Segments here and hand it to the same engine:
- beats (generate.py): one segment per beat interval; a lyric line guides the beat segment
  its timestamp falls in (and the next `lyric_beats - 1`), every other segment its own audio.
- interpolate (generate_interpolate.py): segments cut at lyric timestamps; each stretch's
  first half follows the line's text, its second half the stretch's audio.
"""

import math
from dataclasses import dataclass, field

import numpy as np

MIN_AUDIO_SECONDS = 0.5  # Wav2CLIP gets at least this much audio around a short segment


@dataclass(frozen=True)
class Goal:
    """What one segment is pulled towards."""

    kind: str  # 'audio' (Wav2CLIP of the song between start and end) or 'text' (CLIP of text)
    start: float = 0.0  # audio span, seconds
    end: float = 0.0
    text: str = ""  # the lyric line, verbatim
    weight: float = 1.0  # weight at the segment's first iteration
    weight_end: float | None = None  # weight at its last (linear ramp); None: constant

    def weight_at(self, i: int, n: int) -> float:
        """Weight at iteration i of n (a linear cross-fade when weight_end is set)."""
        if self.weight_end is None or n <= 1:
            return self.weight
        return self.weight + (self.weight_end - self.weight) * i / (n - 1)


@dataclass(frozen=True)
class Segment:
    """A stretch of the song rendered with one set of goals."""

    index: int
    start: float  # seconds
    end: float
    iterations: int  # optimisation steps
    frame_start: int  # first video frame, round(start * fps)
    frame_end: int  # one past the last, round(end * fps)
    goals: tuple[Goal, ...] = field(default_factory=tuple)

    @property
    def frames(self) -> int:
        """Video frames this segment covers (0 for a segment shorter than half a frame)."""
        return self.frame_end - self.frame_start


def beat_bounds(beats: np.ndarray, duration: float) -> list[float]:
    """Segment boundaries [0, b1, ..., bn, duration] that tile the song: the lead-in and tail too."""
    inner = sorted({float(b) for b in beats if 0.0 < b < duration})
    return [0.0, *inner, float(duration)]


def fixed_bounds(duration: float, length: float) -> list[float]:
    """Boundaries every `length` seconds, the last chunk taking the remainder."""
    count = max(1, math.ceil(duration / length - 1e-9))
    return [min(i * length, duration) for i in range(count)] + [float(duration)]


def iterations_for(start: float, end: float, ips: float, peak_loudness: float) -> int:
    """Steps for a stretch: round(ips * seconds), or the seed's loudness rule when ips is 0."""
    rate = ips if ips > 0 else 10 + 110 * peak_loudness
    return max(1, round(rate * (end - start)))


def lyric_segments(bounds: list[float], times: list[float], lyric_beats: int) -> list[list[int]]:
    """For each lyric time, the indices of the segments it guides (none is ever dropped)."""
    last = len(bounds) - 2
    result = []
    for t in times:
        first = min(max(int(np.searchsorted(bounds, t, side="right")) - 1, 0), last)
        result.append(list(range(first, min(first + lyric_beats, last + 1))))
    return result


def _segments(spans, fps: float, ips: float, loudness) -> list[Segment]:
    """Segments from (start, end, goals) spans, with frames and iterations filled in."""
    return [Segment(i, start, end, iterations_for(start, end, ips, loudness.peak(start, end)),
                    round(start * fps), round(end * fps), tuple(goals))
            for i, (start, end, goals) in enumerate(spans)]


def beat_schedule(bounds: list[float], lyrics, fps: float, ips: float, loudness,
                  lyric_beats: int = 1) -> list[Segment]:
    """generate.py: a segment per beat interval, guided by its lyric lines or else its audio.

    Every line whose timestamp falls in a segment guides it (and the next lyric_beats - 1
    segments), all with equal weight; a segment that no line reaches follows its own audio."""
    texts: list[list[Goal]] = [[] for _ in bounds[:-1]]
    for line, covered in zip(lyrics, lyric_segments(bounds, [l.time for l in lyrics], lyric_beats)):
        for k in covered:
            texts[k].append(Goal("text", text=line.text))
    spans = [(start, end, texts[k] or [Goal("audio", start, end)])
             for k, (start, end) in enumerate(zip(bounds[:-1], bounds[1:]))]
    return _segments(spans, fps, ips, loudness)


def interpolate_schedule(lyrics, duration: float, fps: float, ips: float, loudness,
                         blend: bool = False, chunk: float = 10.0) -> list[Segment]:
    """generate_interpolate.py: cut at lyric timestamps; text leads each stretch, audio ends it.

    Without lyrics the song is cut into `chunk`-second pieces, each guided by its own audio."""
    times = sorted({l.time for l in lyrics if 0 <= l.time < duration})
    if not times:
        bounds = fixed_bounds(duration, chunk)
        return _segments([(a, b, [Goal("audio", a, b)]) for a, b in zip(bounds, bounds[1:])],
                         fps, ips, loudness)
    spans = [(0.0, times[0], [Goal("audio", 0.0, times[0])])] if times[0] > 0 else []
    for t, end in zip(times, times[1:] + [duration]):
        lines = [Goal("text", text=l.text) for l in lyrics if l.time == t]
        audio = Goal("audio", t, end)
        if blend:
            fade_out = [Goal("text", text=g.text, weight=1.0, weight_end=0.0) for g in lines]
            spans.append((t, end, fade_out + [Goal("audio", t, end, weight=0.0, weight_end=1.0)]))
        else:
            mid = (t + end) / 2
            spans += [(t, mid, lines), (mid, end, [audio])]
    return _segments(spans, fps, ips, loudness)


def audio_window(goal: Goal, duration: float) -> tuple[float, float]:
    """The audio span Wav2CLIP hears for a goal: widened around its centre when very short."""
    if goal.end - goal.start >= MIN_AUDIO_SECONDS:
        return goal.start, goal.end
    centre = (goal.start + goal.end) / 2
    start = min(max(centre - MIN_AUDIO_SECONDS / 2, 0.0), max(duration - MIN_AUDIO_SECONDS, 0.0))
    return start, min(start + MIN_AUDIO_SECONDS, duration)


def frame_sources(iterations: int, frames: int) -> list[int]:
    """How many video frames each iteration's picture fills: frames spread evenly, held if few."""
    counts = [0] * iterations
    for j in range(frames):
        counts[j * iterations // frames] += 1
    return counts
