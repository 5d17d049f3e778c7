"""Tests for music2video.song.sections: structural boundaries, their ranking, and section plans."""

import warnings

import numpy as np
import pytest

from music2video.song import audio, sections
from music2video.song import segments as schedule
from music2video.song.lyrics import LyricLine
from music2video.song.sections import (
    MIN_SECTION_SECONDS,
    SECONDS_PER_SECTION,
    Section,
    SectionError,
    auto_count,
    checkerboard,
    novelty,
    parse_request,
    plan_sections,
    sections_for,
    structural_boundaries,
)
from music2video.testing import demo

SR = 16000  # the rate the CLI decodes at (-sf default)
FPS = 30.0
PART = 30.0  # seconds of each half of the two-part song
THIRD = 25.0  # seconds of each part of the three-part song


def organ_part(duration: float, bpm: float, root: int, sr: int) -> np.ndarray:
    """Odd-harmonic (square-ish) minor chords on every beat, over noise clicks: another timbre."""
    out = np.zeros(int(duration * sr))
    period = 60.0 / bpm
    t = np.arange(int(period * sr)) / sr
    env = np.minimum(1.0, t / 0.01) * np.exp(-t / 0.4)
    chords = [(root, root + 3, root + 7), (root - 3, root + 1, root + 4),
              (root + 2, root + 5, root + 9), (root - 1, root + 4, root + 7)]
    for k, time in enumerate(demo.beat_grid(duration, bpm, 0.0)):
        wave = sum(np.sin(2 * np.pi * demo.midi_hz(n) * h * t) / h
                   for n in chords[(k // 4) % 4] for h in (1, 3, 5, 7))
        i = int(round(time * sr))
        n = min(len(t), len(out) - i)
        out[i : i + n] += 0.2 * (wave * env)[:n]
    out += 0.5 * demo.click_track(duration, bpm, sr, start=0.0, seed=1)
    return 0.8 * out / np.abs(out).max()


def beat_segments(y: np.ndarray, sr: int) -> list:
    """The segments the CLI builds in beats mode: beat_times → beat_bounds → beat_schedule."""
    duration = len(y) / sr
    beats = audio.beat_times(y, sr)
    if len(beats):
        bounds = schedule.beat_bounds(beats, duration)
    else:
        bounds = schedule.fixed_bounds(duration, 10.0)  # -vl's default
    return schedule.beat_schedule(bounds, [], FPS, 1.0, audio.loudness(y, sr))


def plain_segments(bounds: list[float]) -> list:
    """Segments with these boundaries and nothing else that matters here."""
    return [schedule.Segment(i, a, b, 1, 0, 0) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]


def cut_times(plan: list[Section]) -> list[float]:
    """Where each section after the first starts."""
    return [s.start for s in plan[1:]]


def check_plan(plan: list[Section], segments: list) -> None:
    """Sections tile the segments in order, none empty, none shorter than the minimum."""
    assert plan and plan[0].first == 0 and plan[-1].last == len(segments) - 1
    assert [s.index for s in plan] == list(range(len(plan)))
    for a, b in zip(plan, plan[1:]):
        assert b.first == a.last + 1
    for s in plan:
        assert s.first <= s.last
        assert s.start == segments[s.first].start and s.end == segments[s.last].end
        assert list(s.segments) == list(range(s.first, s.last + 1))
        if len(plan) > 1:
            assert s.end - s.start >= MIN_SECTION_SECONDS - 1e-9


@pytest.fixture(scope="module")
def two_part():
    """60 s: 120 BPM drums, bass and chords in C, then 90 BPM organ and clicks in F# minor."""
    y = np.concatenate([demo.tonal_song(PART, 120, SR), organ_part(PART, 90, 66, SR)])
    y = y.astype(np.float32)
    return y, beat_segments(y, SR)


@pytest.fixture(scope="module")
def three_part():
    """75 s: the 120 BPM band in C, the 90 BPM organ in F#, then 140 BPM swelling chords alone."""
    y = np.concatenate([demo.tonal_song(THIRD, 120, SR), organ_part(THIRD, 90, 66, SR),
                        demo.pulse_tones(THIRD, 140, SR, start=0.0)]).astype(np.float32)
    return y, beat_segments(y, SR)


# --- the two-part song -------------------------------------------------------------------------


@pytest.mark.parametrize("request_", ["auto", 2, "2"])
def test_a_boundary_within_one_beat_of_the_change(two_part, request_):
    y, segments = two_part
    plan = sections_for(y, SR, segments, request_)
    check_plan(plan, segments)
    assert len(plan) == 2  # auto: 60 s is two sections' worth
    (cut,) = cut_times(plan)
    assert abs(cut - PART) <= 60.0 / 120  # within one beat of the faster part
    assert cut in {s.start for s in segments}  # on a beat cut of the schedule


def test_the_strongest_boundary_is_the_change(two_part):
    y, _ = two_part
    strongest = structural_boundaries(y, SR, 3)[0]
    assert abs(strongest - PART) <= 0.25


def test_deterministic(two_part):
    y, segments = two_part
    assert structural_boundaries(y, SR, 4) == structural_boundaries(y.copy(), SR, 4)
    assert sections_for(y, SR, segments, 3) == sections_for(y, SR, segments, 3)


@pytest.mark.parametrize("request_", ["auto", 1, 2, 3, 5, 8, 1000])
def test_sections_tile_the_segments(two_part, request_):
    y, segments = two_part
    plan = sections_for(y, SR, segments, request_)
    check_plan(plan, segments)
    if request_ != "auto":
        assert len(plan) <= request_
    assert len(plan) <= 60.0 / MIN_SECTION_SECONDS


def test_more_sections_than_fit_gives_as_many_as_fit(two_part):
    y, segments = two_part
    plan = sections_for(y, SR, segments, 1000)
    assert plan == sections_for(y, SR, segments, 10**6)  # saturated
    assert len(plan) >= 60.0 / (3 * MIN_SECTION_SECONDS)
    assert max(s.end - s.start for s in plan) < 3 * MIN_SECTION_SECONDS


def test_one_section_runs_no_analysis(two_part, monkeypatch):
    y, segments = two_part

    def fail(*args, **kwargs):
        raise AssertionError("analysed the song for one section")

    monkeypatch.setattr(sections, "structural_boundaries", fail)
    monkeypatch.setattr(sections, "_features", fail)
    for request_ in (1, "1"):
        assert sections_for(y, SR, segments, request_) == [
            Section(0, 0, len(segments) - 1, 0.0, segments[-1].end)]
    # A 30-second song is one section's worth: auto asks for no analysis either.
    short = [s for s in segments if s.end <= 30.5]
    assert len(sections_for(y, SR, short, "auto")) == 1


# --- ranking: N keeps the N - 1 strongest --------------------------------------------------------


def test_more_sections_keep_the_fewer_sections_boundaries(three_part):
    y, segments = three_part
    two, three, four = (cut_times(sections_for(y, SR, segments, n)) for n in (2, 3, 4))
    assert len(two) == 1 and len(three) == 2 and len(four) == 3
    assert set(two) <= set(three) <= set(four)
    for change in (THIRD, 2 * THIRD):  # three sections: one cut on each change of part
        assert min(abs(c - change) for c in three) <= 60.0 / 120


def test_boundaries_are_prefixes_of_longer_lists(three_part):
    y, _ = three_part
    longest = structural_boundaries(y, SR, 12)
    for count in range(1, 12):
        assert structural_boundaries(y, SR, count) == longest[:count]
    assert all(MIN_SECTION_SECONDS <= t <= 3 * THIRD - MIN_SECTION_SECONDS for t in longest)
    ordered = sorted(longest)
    assert all(b - a >= MIN_SECTION_SECONDS for a, b in zip(ordered, ordered[1:]))


# --- songs without structure --------------------------------------------------------------------


def test_a_steady_click_still_gets_even_sections():
    y = demo.click_track(120.0, 120, SR)
    segments = beat_segments(y, SR)
    plan = sections_for(y, SR, segments, "auto")
    check_plan(plan, segments)
    assert len(plan) == 4
    lengths = [s.end - s.start for s in plan]
    # No change is strong enough, so each cut splits the longest section in its middle third.
    assert min(lengths) >= SECONDS_PER_SECTION / 2 and max(lengths) <= 1.5 * SECONDS_PER_SECTION


def test_silence_gets_even_sections_on_its_chunks():
    y = np.zeros(int(60 * SR), np.float32)
    segments = beat_segments(y, SR)  # no beat: 10-second chunks, as the CLI cuts them
    assert len(segments) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no librosa warning about the empty tuning estimate
        plan = sections_for(y, SR, segments, "auto")
    check_plan(plan, segments)
    assert cut_times(plan) == [20.0] or cut_times(plan) == [30.0] or cut_times(plan) == [40.0]


def test_too_short_for_two_sections_is_one():
    y = demo.tonal_song(2 * MIN_SECTION_SECONDS - 0.5, 120, SR)
    assert structural_boundaries(y, SR, 3) == []
    segments = beat_segments(y, SR)
    assert len(sections_for(y, SR, segments, 4)) == 1


# --- plan_sections: snapping to segment cuts ---------------------------------------------------


def test_boundaries_snap_to_the_nearest_segment_start():
    segments = plain_segments([float(t) for t in range(21)])  # a cut every second
    plan = plan_sections(segments, [7.4, 7.6, 2.0, 18.5, 12.5])
    # 7.4 → 7; 7.6 → 8 is too close to 7; 2 and 18.5 → 18 are too close to the ends;
    # 12.5 is a tie between 12 and 13: the earlier cut.
    assert cut_times(plan) == [7.0, 12.0] and [s.first for s in plan] == [0, 7, 12]
    check_plan(plan, segments)


def test_plan_takes_boundaries_in_order_up_to_count():
    segments = plain_segments([float(t) for t in range(41)])
    order = [20.2, 10.1, 30.3]
    assert cut_times(plan_sections(segments, order, count=2)) == [20.0]
    assert cut_times(plan_sections(segments, order, count=3)) == [10.0, 20.0]
    assert cut_times(plan_sections(segments, order)) == [10.0, 20.0, 30.0]
    assert len(plan_sections(segments, order, count=1)) == 1


def test_a_boundary_whose_nearest_cut_is_taken_takes_the_other_side():
    segments = plain_segments([0.0, 10.0, 20.0, 30.0, 40.0])  # coarse: 10-second chunks
    assert cut_times(plan_sections(segments, [19.0, 21.0], min_seconds=5.0)) == [20.0, 30.0]


def test_a_boundary_that_fits_on_neither_side_is_skipped():
    segments = plain_segments([float(t) for t in range(0, 61, 10)])
    plan = plan_sections(segments, [30.0, 31.0, 41.0, 12.0], count=3, min_seconds=15.0)
    assert cut_times(plan) == [30.0]  # 40 and 50, 10 and 20 would each leave a 10-s section


def test_interpolate_mode_cuts_at_a_lyric_cut(two_part):
    y, _ = two_part
    lyrics = [LyricLine(t, f"line {i}", i + 1) for i, t in enumerate(range(1, 60, 8))]
    segments = schedule.interpolate_schedule(lyrics, 60.0, FPS, 1.0, audio.loudness(y, SR))
    starts = {s.start for s in segments}
    assert 29.0 in starts and 30.0 not in starts and 31.0 not in starts
    plan = sections_for(y, SR, segments, 2)
    check_plan(plan, segments)
    assert cut_times(plan) == [29.0]  # the stretch cut nearest the change at 30 s


def test_empty_schedule_is_an_error():
    with pytest.raises(ValueError, match="empty schedule"):
        plan_sections([], [])


# --- the novelty curve and the request ----------------------------------------------------------


def test_novelty_is_the_checkerboard_over_the_self_similarity_matrix():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(5, 80))  # (d, frames)
    half = 7
    kernel = np.outer(checkerboard(half), checkerboard(half))  # (2·half, 2·half)
    ssm = features.T @ features  # (frames, frames)
    curve = novelty(features, half)
    for t in range(half, 80 - half):
        window = ssm[t - half : t + half, t - half : t + half]
        assert curve[t] == pytest.approx((kernel * window).sum(), rel=1e-9)
    step = np.zeros((3, 40))
    step[0, :20], step[1, 20:] = 1.0, 1.0  # one feature before frame 20, another after
    assert int(np.argmax(novelty(step, 5))) == 20


@pytest.mark.parametrize("duration, expected", [
    (0.0, 1), (10.0, 1), (44.9, 1), (45.0, 2), (60.0, 2), (74.9, 2), (75.0, 3), (300.0, 10)])
def test_auto_count(duration, expected):
    assert auto_count(duration) == expected


@pytest.mark.parametrize("text, expected", [("auto", "auto"), (" AUTO ", "auto"), ("3", 3), (3, 3),
                                            ("1", 1)])
def test_parse_request(text, expected):
    assert parse_request(text) == expected


@pytest.mark.parametrize("text", ["0", "-2", "2.5", "many", ""])
def test_bad_request_names_the_fix(text):
    with pytest.raises(SectionError, match="--sections takes 'auto' or a whole number"):
        parse_request(text)


def test_the_minimum_section_is_read_when_planning(monkeypatch):
    segments = plain_segments([float(t) for t in range(41)])
    monkeypatch.setattr(sections, "MIN_SECTION_SECONDS", 8.0)  # as a caller may tune it
    assert cut_times(plan_sections(segments, [10.0, 15.0, 20.0, 30.0])) == [10.0, 20.0, 30.0]
