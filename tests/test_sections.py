"""Tests for music2video.song.sections: balanced sections cut where the song changes."""

import json
import warnings

import numpy as np
import pytest

from music2video.song import audio, sections
from music2video.song import segments as schedule
from music2video.song.lyrics import LyricLine
from music2video.song.sections import (
    BALANCE,
    MIN_SECTION_SECONDS,
    Section,
    SectionError,
    auto_count,
    balanced_cuts,
    checkerboard,
    novelty,
    novelty_at,
    parse_request,
    sections_for,
    tile,
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


def plain_segments(bounds: list[float], steps=None) -> list:
    """Segments with these boundaries (and steps, default 1 each), nothing else that matters."""
    steps = steps or [1] * (len(bounds) - 1)
    return [schedule.Segment(i, a, b, n, 0, 0)
            for i, (a, b, n) in enumerate(zip(bounds, bounds[1:], steps))]


def shares(plan: list[Section], segments: list) -> list[float]:
    """Each section's share of the song's steps."""
    total = sum(s.iterations for s in segments)
    return [sum(segments[k].iterations for k in s.segments) / total for s in plan]


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


def test_the_change_scores_highest(two_part):
    y, segments = two_part
    starts = [s.start for s in segments]
    scores = novelty_at(y, SR, starts)
    assert scores.max() == pytest.approx(1.0, abs=0.05)
    assert abs(starts[int(np.argmax(scores))] - PART) <= 0.5


def test_deterministic(two_part):
    y, segments = two_part
    assert np.array_equal(novelty_at(y, SR, [10.0, 30.0]), novelty_at(y.copy(), SR, [10.0, 30.0]))
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

    monkeypatch.setattr(sections, "novelty_at", fail)
    monkeypatch.setattr(sections, "_features", fail)
    for request_ in (1, "1"):
        assert sections_for(y, SR, segments, request_) == [
            Section(0, 0, len(segments) - 1, 0.0, segments[-1].end)]
    # A 30-second song is one section's worth: auto asks for no analysis either.
    short = [s for s in segments if s.end <= 30.5]
    assert len(sections_for(y, SR, short, "auto")) == 1


# --- balance: N sections share the steps -------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3, 4, 6, 8])
def test_each_section_holds_about_its_share_of_the_steps(two_part, count):
    y, segments = two_part
    plan = sections_for(y, SR, segments, count)
    check_plan(plan, segments)
    assert len(plan) == count
    assert max(shares(plan, segments)) <= (1 + BALANCE) / count + 1e-9


def test_a_change_within_reach_takes_the_cut(two_part):
    y, segments = two_part
    four = cut_times(sections_for(y, SR, segments, 4))
    assert abs(four[1] - PART) <= 1.0  # the middle cut, on the change (beats here: 0.7 s)
    assert abs(four[0] - PART / 2) > 60.0 / 120  # the others where balance puts them


def test_balance_follows_the_steps_not_the_seconds():
    """A loud second half with four times the steps per second gets more cuts."""
    segments = plain_segments([float(t) for t in range(41)], [1] * 20 + [4] * 20)
    plan = tile(segments, balanced_cuts([s.iterations for s in segments],
                                        [s.start for s in segments], np.zeros(40), 4, 40.0))
    assert cut_times(plan) == [21.0, 27.0, 34.0]  # 24, 48 and 76 of the 100 steps before them
    assert max(shares(plan, segments)) <= (1 + BALANCE) / 4


def test_a_strong_change_wins_within_reach_and_drift_decides_between_equals():
    segments = plain_segments([float(t) for t in range(41)])  # a cut every second, 1 step each
    steps, starts = [1] * 40, [float(t) for t in range(40)]
    flat = np.zeros(40)
    assert balanced_cuts(steps, starts, flat, 2, 40.0) == [20]  # no change: the even split
    change = flat.copy()
    change[22] = 1.0  # 22 s is inside 20 ± 2 (BALANCE / 2 of a half)
    assert balanced_cuts(steps, starts, change, 2, 40.0) == [22]
    far = flat.copy()
    far[30] = 1.0  # out of reach: balance comes first
    assert balanced_cuts(steps, starts, far, 2, 40.0) == [20]
    assert len(tile(segments, [20])) == 2


def test_a_window_without_a_segment_start_takes_the_nearest():
    segments = plain_segments([0.0, 10.0, 20.0, 35.0, 40.0])
    steps, starts = [10, 10, 15, 5], [s.start for s in segments]
    assert balanced_cuts(steps, starts, np.zeros(4), 2, 40.0) == [2]  # 20 of 40 steps before it
    assert balanced_cuts(steps, starts, np.zeros(4), 4, 40.0) == [1, 2, 3]


def test_cuts_keep_sections_long_enough_and_stop_when_none_fits():
    steps, starts = [1] * 40, [float(t) for t in range(40)]
    assert balanced_cuts(steps, starts, np.zeros(40), 20, 40.0, min_seconds=8.0) == [
        8, 16, 24, 32]
    # 64 asked of a 300-second song: as many as 4-second sections allow, each near its share
    many = balanced_cuts([1] * 300, [float(t) for t in range(300)], np.zeros(300), 64, 300.0)
    assert len(many) == 63 and min(np.diff([0, *many, 300])) >= MIN_SECTION_SECONDS


def test_sections_do_not_depend_on_anything_but_the_song_and_the_request(three_part):
    """The plan takes no worker count: the same request gives the same sections."""
    import inspect

    assert list(inspect.signature(sections_for).parameters) == ["samples", "sr", "segments",
                                                                 "request"]


# --- songs without structure --------------------------------------------------------------------


def test_a_steady_click_still_gets_even_sections():
    y = demo.click_track(120.0, 120, SR)
    segments = beat_segments(y, SR)
    plan = sections_for(y, SR, segments, "auto")
    check_plan(plan, segments)
    assert len(plan) == 4
    assert max(shares(plan, segments)) <= (1 + BALANCE) / 4


def test_silence_gets_even_sections_on_its_chunks():
    y = np.zeros(int(60 * SR), np.float32)
    segments = beat_segments(y, SR)  # no beat: 10-second chunks, as the CLI cuts them
    assert len(segments) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no librosa warning about the empty tuning estimate
        plan = sections_for(y, SR, segments, "auto")
    check_plan(plan, segments)
    assert cut_times(plan) == [30.0]


def test_too_short_for_two_sections_is_one():
    y = demo.tonal_song(2 * MIN_SECTION_SECONDS - 0.5, 120, SR)
    segments = beat_segments(y, SR)
    assert len(sections_for(y, SR, segments, 4)) == 1


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
        tile([], [])


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
    steps, starts = [1] * 40, [float(t) for t in range(40)]
    monkeypatch.setattr(sections, "MIN_SECTION_SECONDS", 15.0)  # as a caller may tune it
    assert balanced_cuts(steps, starts, np.zeros(40), 4, 40.0) == [15]  # then no room left


@pytest.mark.slow
def test_eight_sections_share_the_steps_and_their_seams_move_no_more_than_a_beat_cut(
        tmp_path, model_flags):
    """A generated 40-second song in parts with --sections 8, through generate.py: no section
    holds more than 1.2/8 of the steps, and the picture changes at the seams (cross-faded)
    about as much as at an ordinary beat cut (BENCHMARKS.md has the figures of a longer song,
    and of the same song cut without the fade: about twice a beat cut)."""
    from helpers import run_script

    from tools import bench

    song = demo.encode_audio(bench.structured_song(40.0, 22050, part=10.0), 22050,
                             tmp_path / "parts.mp3")
    args = ["-ap", str(song), "-o", "o/v.png", "-ips", "2", "-s", "64", "64", "-cuts", "2",
            "-sd", "4", "--sections", "8", "--warmup", "10", "-se", "0", "--precision", "fp32",
            "-q", *model_flags]
    result = run_script("generate.py", args, tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "o" / "v" / "manifest.json").read_text())
    figures = bench.seam_figures(tmp_path / "o" / "v.mp4", manifest)
    assert figures["sections"] == 8
    assert figures["largest_share"] <= (1 + BALANCE) / 8 + 0.01
    assert figures["seam"] <= 1.2 * figures["beat_cut"], figures
