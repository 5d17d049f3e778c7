"""Tests for music2video.song.segments: both modes' schedules, iterations, frames and audio windows."""

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest

from music2video import cli
from music2video.song import audio, plan
from music2video.song.lyrics import LyricLine
from music2video.song.segments import (
    MIN_AUDIO_SECONDS,
    Goal,
    audio_window,
    beat_bounds,
    beat_schedule,
    fixed_bounds,
    frame_sources,
    interpolate_schedule,
    iterations_for,
    lyric_segments,
)
from music2video.testing import demo

SR = 22050
FPS = 30.0


class FakeLoudness:
    """A Loudness stand-in whose peak is a known constant; it records the spans it was asked."""

    def __init__(self, value: float = 0.0):
        self.value, self.calls = value, []

    def peak(self, start: float, end: float) -> float:
        self.calls.append((start, end))
        return self.value


def lines(*pairs) -> list[LyricLine]:
    """LyricLines from (time, text) pairs, numbered from 1."""
    return [LyricLine(t, text, i + 1) for i, (t, text) in enumerate(pairs)]


def texts(segment) -> list[str]:
    """The texts of a segment's text goals."""
    return [g.text for g in segment.goals if g.kind == "text"]


def only_audio(segment) -> bool:
    """Whether a segment is guided by exactly its own audio span."""
    return segment.goals == (Goal("audio", segment.start, segment.end),)


def check_tiling(segments, duration: float, fps: float) -> None:
    """Segments tile [0, duration] and their frames tile [0, round(duration * fps)]."""
    assert segments, "no segments"
    assert [s.index for s in segments] == list(range(len(segments)))
    assert segments[0].start == 0.0
    assert segments[-1].end == pytest.approx(duration, abs=1e-12)
    for a, b in zip(segments, segments[1:]):
        assert a.end == b.start  # no gap, no overlap
        assert a.frame_end == b.frame_start
    for s in segments:
        assert s.start < s.end
        assert s.frame_start == round(s.start * fps) and s.frame_end == round(s.end * fps)
        assert s.frames >= 0 and s.iterations >= 1
    assert segments[0].frame_start == 0
    assert segments[-1].frame_end == round(duration * fps)
    assert sum(s.frames for s in segments) == round(duration * fps)


# --- beat_bounds and fixed_bounds -------------------------------------------------------------


@pytest.mark.parametrize("beats, duration, expected", [
    ([1.0, 2.0, 3.0], 4.5, [0.0, 1.0, 2.0, 3.0, 4.5]),  # lead-in and tail are segments
    ([0.0, 1.0, 4.5], 4.5, [0.0, 1.0, 4.5]),  # beats at 0 and at the end add nothing
    ([2.0, 1.0, 2.0, 1.0, 3.0], 4.0, [0.0, 1.0, 2.0, 3.0, 4.0]),  # unsorted, duplicates
    ([-1.0, 5.0, 9.0], 4.0, [0.0, 4.0]),  # outside the song
    ([], 4.0, [0.0, 4.0]),
])
def test_beat_bounds(beats, duration, expected):
    assert beat_bounds(np.array(beats), duration) == expected


@pytest.mark.parametrize("duration, length, expected", [
    (25.0, 10.0, [0.0, 10.0, 20.0, 25.0]),
    (20.0, 10.0, [0.0, 10.0, 20.0]),  # no empty chunk at the end
    (3.0, 10.0, [0.0, 3.0]),
    (10.5, 3.5, [0.0, 3.5, 7.0, 10.5]),
])
def test_fixed_bounds(duration, length, expected):
    assert fixed_bounds(duration, length) == pytest.approx(expected)


@pytest.mark.parametrize("beats, duration", [
    ([1.0, 2.0, 3.0], 4.5),
    ([0.0, 0.5, 0.5, 4.0], 4.0),
    ([3.1, 0.7, 2.02, 0.7, 1.55], 3.3),
    ([0.01, 0.02, 3.99], 4.0),  # segments shorter than a frame
    ([], 2.7),
])
@pytest.mark.parametrize("fps", [30.0, 24.0, 29.97])
def test_beat_schedule_tiles_hand_made_beats(beats, duration, fps):
    segments = beat_schedule(beat_bounds(np.array(beats), duration), [], fps, 10, FakeLoudness())
    check_tiling(segments, duration, fps)
    assert all(only_audio(s) for s in segments)


@pytest.fixture(scope="module")
def detected():
    """Beats that audio.beat_times finds in two synthetic 8-second songs at 120 BPM."""
    duration = 8.0
    songs = {"click": demo.click_track(duration, 120, SR),
             "tonal": demo.tonal_song(duration, 120, SR)}
    return {name: (y, audio.beat_times(y, SR), len(y) / SR) for name, y in songs.items()}


@pytest.mark.parametrize("name", ["click", "tonal"])
def test_beat_schedule_tiles_detected_beats(detected, name):
    y, beats, duration = detected[name]
    assert len(beats) >= 8  # 120 BPM from 0.5 s: there are 15 true beats
    bounds = beat_bounds(beats, duration)
    assert bounds[0] == 0.0 and bounds[1] > 0.0 and bounds[-1] == duration  # a lead-in segment
    assert bounds[-2] < duration  # a tail segment
    segments = beat_schedule(bounds, [], FPS, 0, audio.loudness(y, SR))
    check_tiling(segments, duration, FPS)
    assert [s.start for s in segments[1:]] == list(beats)
    assert len(segments) == len(beats) + 1


# --- the no-beat fallback in plan.build_schedule ---------------------------------------------


def fake_options(**changes):
    """Options of `generate.py -ap x.mp3`, with some fields replaced."""
    return dataclasses.replace(cli.parse_options("beats", ["-ap", "x.mp3"]), **changes)


def test_build_schedule_without_beats_falls_back_to_chunks(tmp_path):
    sr = 16000
    song = plan.Song(tmp_path / "silence.mp3", np.zeros(10 * sr, np.float32), sr, 10.0)
    opts = fake_options(video_length=4.0, iterations_per_second=5.0)
    with pytest.warns(UserWarning, match="no beat") as record:
        segments = plan.build_schedule(opts, song, [])
    assert "silence.mp3" in str(record[0].message)
    assert [(s.start, s.end) for s in segments] == [(0.0, 4.0), (4.0, 8.0), (8.0, 10.0)]
    assert [s.iterations for s in segments] == [20, 20, 10]
    assert all(only_audio(s) for s in segments)
    check_tiling(segments, 10.0, opts.fps)


def test_build_schedule_without_beats_keeps_lyrics(tmp_path):
    sr = 16000
    song = plan.Song(tmp_path / "silence.mp3", np.zeros(10 * sr, np.float32), sr, 10.0)
    opts = fake_options(video_length=4.0, iterations_per_second=5.0)
    with pytest.warns(UserWarning, match="no beat"):
        segments = plan.build_schedule(opts, song, lines((5.0, "a lighthouse")))
    assert [texts(s) for s in segments] == [[], ["a lighthouse"], []]


def test_build_schedule_with_beats_does_not_warn(detected):
    y, beats, duration = detected["click"]
    song = plan.Song(Path("click.wav"), y, SR, duration)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        segments = plan.build_schedule(fake_options(iterations_per_second=10.0), song, [])
    assert [s.start for s in segments[1:]] == list(beats)
    check_tiling(segments, duration, 30.0)


# --- iterations -----------------------------------------------------------------------------


@pytest.mark.parametrize("start, end, ips, expected", [
    (0.0, 2.0, 10, 20),
    (1.0, 1.26, 10, 3),  # round(2.6)
    (1.0, 1.24, 10, 2),  # round(2.4)
    (0.0, 0.01, 10, 1),  # at least one step
    (5.0, 5.0, 10, 1),
    (0.0, 3.0, 0.5, 2),  # round(1.5): Python rounds half to even
    (0.0, 7.3, 25, 182),  # round(182.5) == 182
])
def test_iterations_for_fixed_rate(start, end, ips, expected):
    assert iterations_for(start, end, ips, peak_loudness=0.9) == expected  # loudness is ignored


@pytest.mark.parametrize("peak, seconds, expected", [
    (0.0, 1.0, 10),
    (1.0, 1.0, 120),
    (0.5, 2.0, 130),  # (10 + 55) per second
    (0.25, 0.5, 19),  # (10 + 27.5) * 0.5 = 18.75
    (0.0, 0.01, 1),
])
def test_iterations_for_loudness_rule(peak, seconds, expected):
    assert iterations_for(3.0, 3.0 + seconds, 0, peak) == expected


def test_schedules_use_ips_and_loudness():
    bounds = [0.0, 0.5, 2.0, 3.0]
    fixed = beat_schedule(bounds, [], FPS, 12, FakeLoudness(1.0))
    assert [s.iterations for s in fixed] == [6, 18, 12]
    loud = FakeLoudness(0.5)
    by_loudness = beat_schedule(bounds, [], FPS, 0, loud)
    assert [s.iterations for s in by_loudness] == [round(65 * 0.5), round(65 * 1.5), 65]
    assert loud.calls == [(0.0, 0.5), (0.5, 2.0), (2.0, 3.0)]  # each segment's own span


def test_loudness_rule_with_real_loudness(detected):
    y, _, duration = detected["click"]
    loud = audio.loudness(y, SR)
    segments = beat_schedule([0.0, 0.4, duration], [], FPS, 0, loud)
    # Before the first click at 0.5 s the track is silent: the floor of 10 steps a second.
    assert segments[0].iterations == 4
    assert segments[1].iterations == round(120 * (duration - 0.4))


# --- lyrics in beats mode ---------------------------------------------------------------------


BOUNDS = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_lyric_guides_the_segment_it_falls_in():
    lyric = lines((2.5, "a red kite"), (4.2, "the sign says: open"))
    segments = beat_schedule(BOUNDS, lyric, FPS, 10, FakeLoudness())
    assert [texts(s) for s in segments] == [[], [], ["a red kite"], [], ["the sign says: open"]]
    assert segments[2].goals == (Goal("text", text="a red kite"),)
    for k in (0, 1, 3):
        assert only_audio(segments[k])
        assert segments[k].goals[0].start == BOUNDS[k] and segments[k].goals[0].end == BOUNDS[k + 1]


def test_several_lines_in_one_segment_all_guide_it():
    lyric = lines((1.1, "one"), (1.5, "two"), (1.9, "three"), (3.0, "four"))
    segments = beat_schedule(BOUNDS, lyric, FPS, 10, FakeLoudness())
    assert texts(segments[1]) == ["one", "two", "three"]
    assert all(g.weight == 1.0 and g.weight_end is None for g in segments[1].goals)
    assert texts(segments[3]) == ["four"]
    guided = {t for s in segments for t in texts(s)}
    assert guided == {line.text for line in lyric}  # no line is dropped


def test_lyric_on_a_boundary_belongs_to_the_segment_starting_there():
    segments = beat_schedule(BOUNDS, lines((3.0, "on the beat")), FPS, 10, FakeLoudness())
    assert texts(segments[3]) == ["on the beat"] and texts(segments[2]) == []


def test_lyric_at_zero_and_in_the_last_segment():
    lyric = lines((0.0, "first"), (4.99, "last"))
    segments = beat_schedule(BOUNDS, lyric, FPS, 10, FakeLoudness())
    assert texts(segments[0]) == ["first"] and texts(segments[-1]) == ["last"]
    assert all(only_audio(s) for s in segments[1:-1])


@pytest.mark.parametrize("lyric_beats, guided", [
    (1, [1]),
    (2, [1, 2]),
    (3, [1, 2, 3]),
    (10, [1, 2, 3, 4]),  # clipped at the end
])
def test_lyric_beats_guides_consecutive_segments(lyric_beats, guided):
    segments = beat_schedule(BOUNDS, lines((1.5, "waves")), FPS, 10, FakeLoudness(), lyric_beats)
    assert [k for k, s in enumerate(segments) if texts(s) == ["waves"]] == guided
    assert all(only_audio(s) for k, s in enumerate(segments) if k not in guided)


def test_lyric_beats_overlap_keeps_both_lines():
    lyric = lines((0.5, "a"), (1.5, "b"))
    segments = beat_schedule(BOUNDS, lyric, FPS, 10, FakeLoudness(), lyric_beats=2)
    assert [texts(s) for s in segments] == [["a"], ["a", "b"], ["b"], [], []]


def test_lyric_segments_direct():
    assert lyric_segments(BOUNDS, [0.0, 1.0, 0.999, 5.0, 7.0], 1) == [[0], [1], [0], [4], [4]]
    assert lyric_segments(BOUNDS, [3.5], 3) == [[3, 4]]


def test_every_demo_line_guides_a_detected_beat_segment(detected):
    y, beats, duration = detected["tonal"]
    lyric = lines((0.0, "zero"), (0.25, "lead-in"), (float(beats[2]), "on a beat"),
                  (float(beats[2]) + 0.01, "just after"), (duration - 0.01, "at the end"))
    segments = beat_schedule(beat_bounds(beats, duration), lyric, FPS, 10, FakeLoudness())
    check_tiling(segments, duration, FPS)
    assert texts(segments[0]) == ["zero", "lead-in"]
    assert texts(segments[3]) == ["on a beat", "just after"]
    assert texts(segments[-1]) == ["at the end"]
    assert {t for s in segments for t in texts(s)} == {line.text for line in lyric}


# --- interpolate mode -------------------------------------------------------------------------


def test_interpolate_halves():
    lyric = lines((2.0, "city"), (5.0, "kite: red"))
    segments = interpolate_schedule(lyric, 9.0, FPS, 10, FakeLoudness())
    check_tiling(segments, 9.0, FPS)
    assert [(s.start, s.end) for s in segments] == [(0.0, 2.0), (2.0, 3.5), (3.5, 5.0),
                                                    (5.0, 7.0), (7.0, 9.0)]
    assert only_audio(segments[0])  # before the first lyric
    assert segments[1].goals == (Goal("text", text="city"),)
    assert segments[2].goals == (Goal("audio", 2.0, 5.0),)  # the whole stretch's audio
    assert segments[3].goals == (Goal("text", text="kite: red"),)
    assert segments[4].goals == (Goal("audio", 5.0, 9.0),)  # the last stretch runs to the end
    assert [s.iterations for s in segments] == [20, 15, 15, 20, 20]


@pytest.mark.parametrize("ips", [25, 7, 1])
def test_interpolate_iterations_on_odd_lengths(ips):
    lyric = lines((0.3, "a"), (1.0, "b"), (2.33, "c"))
    duration = 3.07
    segments = interpolate_schedule(lyric, duration, FPS, ips, FakeLoudness())
    check_tiling(segments, duration, FPS)
    for s in segments:
        assert isinstance(s.iterations, int)
        assert s.iterations == max(1, round(ips * (s.end - s.start)))
    halves = segments[1:]
    for text_half, audio_half, (t, end) in zip(halves[::2], halves[1::2],
                                               [(0.3, 1.0), (1.0, 2.33), (2.33, duration)]):
        assert text_half.start == t and audio_half.end == end
        assert text_half.end == audio_half.start == pytest.approx((t + end) / 2)
        assert audio_half.goals == (Goal("audio", t, end),)


def test_interpolate_iterations_at_25_ips():
    segments = interpolate_schedule(lines((1.0, "x")), 2.3, FPS, 25, FakeLoudness())
    # lead-in 1 s, then halves of 0.65 s: 16.25 -> 16 steps each
    assert [s.iterations for s in segments] == [25, 16, 16]


def test_interpolate_loudness_rule_per_half():
    loud = FakeLoudness(1.0)
    segments = interpolate_schedule(lines((0.0, "x")), 3.0, FPS, 0, loud)
    assert [s.iterations for s in segments] == [180, 180]
    assert loud.calls == [(0.0, 1.5), (1.5, 3.0)]


@pytest.mark.parametrize("fps", [30.0, 24.0, 29.97, 7.0])
def test_interpolate_text_starts_on_its_lyric_frame(fps):
    lyric = lines(*[(t, f"line {t}") for t in (0.51, 1.234, 2.0, 4.999, 7.77)])
    segments = interpolate_schedule(lyric, 9.1, fps, 10, FakeLoudness())
    check_tiling(segments, 9.1, fps)
    for line in lyric:
        (seg,) = [s for s in segments if texts(s) == [line.text]]
        assert seg.start == line.time
        assert seg.frame_start == round(line.time * fps)
        assert abs(seg.frame_start / fps - line.time) <= 0.5 / fps


def test_interpolate_lyric_at_zero_has_no_lead_in():
    segments = interpolate_schedule(lines((0.0, "from the start")), 4.0, FPS, 10, FakeLoudness())
    assert [(s.start, s.end) for s in segments] == [(0.0, 2.0), (2.0, 4.0)]
    assert texts(segments[0]) == ["from the start"]
    assert segments[1].goals == (Goal("audio", 0.0, 4.0),)


def test_interpolate_lines_sharing_a_time_all_guide():
    lyric = lines((1.0, "birds"), (1.0, "sunflowers"), (3.0, "stars"))
    segments = interpolate_schedule(lyric, 5.0, FPS, 10, FakeLoudness())
    assert [texts(s) for s in segments] == [[], ["birds", "sunflowers"], [], ["stars"], []]


def test_interpolate_blend_cross_fades():
    lyric = lines((1.0, "a"), (1.0, "b"), (3.0, "c"))
    segments = interpolate_schedule(lyric, 6.0, FPS, 10, FakeLoudness(), blend=True)
    check_tiling(segments, 6.0, FPS)
    assert [(s.start, s.end) for s in segments] == [(0.0, 1.0), (1.0, 3.0), (3.0, 6.0)]
    assert only_audio(segments[0])
    assert [s.iterations for s in segments] == [10, 20, 30]
    *text_goals, audio_goal = segments[1].goals
    assert [g.text for g in text_goals] == ["a", "b"]
    assert audio_goal.kind == "audio" and (audio_goal.start, audio_goal.end) == (1.0, 3.0)
    n = 21
    for g in text_goals:
        assert g.kind == "text"
        assert [g.weight_at(i, n) for i in (0, 10, 20)] == pytest.approx([1.0, 0.5, 0.0])
    assert [audio_goal.weight_at(i, n) for i in (0, 10, 20)] == pytest.approx([0.0, 0.5, 1.0])
    # linear: equal steps all the way
    steps = np.diff([audio_goal.weight_at(i, n) for i in range(n)])
    assert steps == pytest.approx(np.full(n - 1, 1 / (n - 1)))
    # a one-step segment keeps the start weights
    assert text_goals[0].weight_at(0, 1) == 1.0 and audio_goal.weight_at(0, 1) == 0.0
    last_text, last_audio = segments[2].goals
    assert last_text.text == "c" and (last_audio.start, last_audio.end) == (3.0, 6.0)


def test_goal_weight_constant_without_ramp():
    g = Goal("text", text="x", weight=0.7)
    assert [g.weight_at(i, 5) for i in range(5)] == [0.7] * 5


@pytest.mark.parametrize("duration, chunk, spans", [
    (25.0, 10.0, [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]),
    (20.0, 10.0, [(0.0, 10.0), (10.0, 20.0)]),
    (4.0, 10.0, [(0.0, 4.0)]),
])
def test_interpolate_without_lyrics_uses_chunks(duration, chunk, spans):
    segments = interpolate_schedule([], duration, FPS, 2, FakeLoudness(), chunk=chunk)
    assert [(s.start, s.end) for s in segments] == spans
    assert all(only_audio(s) for s in segments)
    assert [s.iterations for s in segments] == [round(2 * (b - a)) for a, b in spans]
    check_tiling(segments, duration, FPS)


def test_interpolate_ignores_lines_after_the_end():
    segments = interpolate_schedule(lines((9.0, "late")), 5.0, FPS, 2, FakeLoudness(), chunk=2.0)
    assert [(s.start, s.end) for s in segments] == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]


def test_build_schedule_interpolate_mode(tmp_path):
    sr = 16000
    song = plan.Song(tmp_path / "s.wav", np.zeros(7 * sr, np.float32), sr, 7.0)
    opts = dataclasses.replace(cli.parse_options("interpolate", ["-ap", "x.mp3", "--blend"]),
                               iterations_per_second=4.0, video_length=3.0)
    segments = plan.build_schedule(opts, song, lines((2.0, "a")))
    assert [(s.start, s.end) for s in segments] == [(0.0, 2.0), (2.0, 7.0)]
    assert segments[1].goals[0].weight_end == 0.0
    assert [(s.start, s.end) for s in plan.build_schedule(opts, song, [])] == [
        (0.0, 3.0), (3.0, 6.0), (6.0, 7.0)]


# --- frame_sources ----------------------------------------------------------------------------


@pytest.mark.parametrize("iterations, frames", [
    (1, 1), (1, 7), (10, 10), (10, 3), (100, 30), (7, 30), (3, 100), (30, 29), (5, 0), (1, 0),
])
def test_frame_sources(iterations, frames):
    counts = frame_sources(iterations, frames)
    assert len(counts) == iterations and all(isinstance(c, int) for c in counts)
    assert sum(counts) == frames
    if frames == 0:
        assert counts == [0] * iterations
    elif iterations >= frames:
        assert set(counts) <= {0, 1}
        shown = [i for i, c in enumerate(counts) if c]
        gaps = np.diff(shown + [iterations + shown[0]])  # spacing, wrapping round
        assert gaps.max() - gaps.min() <= 1
    else:
        assert max(counts) - min(counts) <= 1 and min(counts) >= 1


def test_frame_sources_values():
    assert frame_sources(10, 5) == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert frame_sources(3, 7) == [3, 2, 2]
    assert frame_sources(4, 0) == [0, 0, 0, 0]


# --- audio_window -----------------------------------------------------------------------------


def test_audio_window_keeps_long_goals():
    assert audio_window(Goal("audio", 1.0, 3.0), 10.0) == (1.0, 3.0)
    assert audio_window(Goal("audio", 2.0, 2.0 + MIN_AUDIO_SECONDS), 10.0) == (2.0, 2.5)


@pytest.mark.parametrize("start, end, duration, expected", [
    (2.0, 2.1, 10.0, (1.8, 2.3)),  # widened around the centre 2.05
    (0.0, 0.1, 10.0, (0.0, 0.5)),  # clamped at the start
    (9.95, 10.0, 10.0, (9.5, 10.0)),  # clamped at the end
    (3.0, 3.0, 10.0, (2.75, 3.25)),
    (0.1, 0.2, 0.3, (0.0, 0.3)),  # a song shorter than the window: all of it
])
def test_audio_window_widens_short_goals(start, end, duration, expected):
    lo, hi = audio_window(Goal("audio", start, end), duration)
    assert (lo, hi) == pytest.approx(expected)
    assert 0.0 <= lo <= hi <= duration
    assert hi - lo == pytest.approx(min(MIN_AUDIO_SECONDS, duration))


# --- what lyrics can do to a run ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["beats", "interpolate"])
def test_a_flood_of_lyric_lines_is_bounded_in_the_plan(tmp_path, mode):
    """100,000 lines for a 5-s song: the plan (and so the manifest) stays small."""
    import json

    sr = 16000
    song = plan.Song(tmp_path / "s.wav", np.zeros(5 * sr, np.float32), sr, 5.0)
    path = tmp_path / "flood.lrc"
    path.write_text("".join(f"[00:{k * 5 / 100_000:05.2f}]line {k}\n" for k in range(100_000)),
                    encoding="utf-8")
    opts = dataclasses.replace(cli.parse_options(mode, ["-ap", "x.mp3"]),
                               iterations_per_second=1.0, video_length=5.0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        planned = plan.plan_song(opts, song, path)
    assert planned.lyrics_given == 100_000
    assert len(planned.lyrics) <= 5 * 30 * 3
    segments = json.dumps([dataclasses.asdict(s) for s in planned.segments])
    assert len(segments) < 200_000
    assert all(len(str(w.message)) < 400 for w in record)
