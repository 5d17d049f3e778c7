"""The driver: what is left to render after a stop, and how finished segments are written down."""

from pathlib import Path

import numpy as np
import pytest

from music2video.driver.folder import RunFolder, chunk_name
from music2video.driver.job import Job, Outputs
from music2video.engine.renderer import Finished, Work
from music2video.output.storyboard import clock
from music2video.song.plan import Plan, Song
from music2video.song.segments import Goal, Segment


def segments(count: int) -> list[Segment]:
    return [Segment(k, k / 2, (k + 1) / 2, 3, 15 * k, 15 * (k + 1),
                    (Goal("audio", k / 2, (k + 1) / 2),)) for k in range(count)]


def make_job(tmp_path: Path, sections) -> Job:
    segs = segments(sections[-1][1] + 1)
    song = Song(tmp_path / "song.mp3", np.zeros(16000, np.float32), 16000, segs[-1].end)
    plan = Plan(song, [], segs, sections)
    outputs = Outputs(tmp_path / "v.mp4", tmp_path / "v.png", tmp_path / "v")
    folder = RunFolder(outputs.run_dir)
    manifest = folder.open({"x": 1}, segs, sections, False, 3, {"precision": "fp32", "threads": 1},
                           {"fps": 30})
    return Job(0, plan, outputs, folder, manifest, spec=None, quiet=True)


@pytest.fixture
def finish(video_chunk):
    """finish(job, index, section): writes segment `index` down as the renderer would have
    delivered it (a real chunk of its 15 frames)."""
    def write(job: Job, index: int, section: int, state: bool = True) -> None:
        job.handle(Finished(0, section, index, video_chunk(15), None, {"segment": index, "iteration": index},
                            wanted=True, repair=not state))

    return write


def test_a_new_run_renders_every_section_from_its_start(tmp_path):
    job = make_job(tmp_path, [(0, 2), (3, 5)])
    works, done = job.works()
    assert done == 0
    assert works == [Work(0, 0, 0, 2, None, frozenset({0, 1, 2})),
                     Work(0, 1, 3, 5, None, frozenset({3, 4, 5}))]


def test_sections_go_on_from_their_own_states(tmp_path, finish):
    job = make_job(tmp_path, [(0, 2), (3, 5)])
    finish(job, 0, 0)
    finish(job, 3, 1)
    finish(job, 4, 1)
    job.folder.unlock()
    again = make_job(tmp_path, [(0, 2), (3, 5)])
    works, done = again.works()
    assert done == 9
    assert [(w.section, w.first, w.last, w.state["segment"], sorted(w.write)) for w in works] == [
        (0, 1, 2, 0, [1, 2]), (1, 5, 5, 4, [5])]


def test_a_lost_chunk_is_replayed_from_its_sections_start_without_moving_its_state(tmp_path, finish):
    job = make_job(tmp_path, [(0, 3)])
    for k in range(3):
        finish(job, k, 0)
    (tmp_path / "v" / chunk_name(1, 4)).unlink()
    works, done = job.works()
    assert done == 6
    tail, repair = works
    assert (tail.first, tail.last, tail.state["segment"], tail.write) == (3, 3, 2, frozenset({3}))
    assert (repair.first, repair.last, repair.state, repair.write, repair.repair) == (
        0, 1, None, frozenset({1}), True)
    job.handle(Finished(0, 0, 1, b"again", None, {"segment": 1, "iteration": 1}, wanted=True,
                        repair=True))
    assert job.folder.load_state(0)["segment"] == 2  # a repair leaves the section's state alone
    assert (tmp_path / "v" / chunk_name(1, 4)).read_bytes() == b"again"


def test_a_stop_between_the_state_and_the_journal_counts_the_segment(tmp_path, finish,
                                                                     video_chunk):
    job = make_job(tmp_path, [(0, 2)])
    finish(job, 0, 0)
    job.folder.save_state(0, {"segment": 1, "iteration": 1})  # state written, journal not
    (tmp_path / "v" / chunk_name(1, 3)).write_bytes(video_chunk(15))
    works, _ = job.works()
    assert job.folder.done() == {0, 1}
    assert [(w.first, w.last) for w in works] == [(2, 2)]


def test_a_lost_state_renders_the_section_again_writing_only_what_is_missing(tmp_path, finish):
    job = make_job(tmp_path, [(0, 2)])
    finish(job, 0, 0)
    finish(job, 1, 0)
    (tmp_path / "v" / "state_s0000.pt").unlink()
    works, _ = job.works()
    assert [(w.first, w.last, w.state, w.write, w.repair) for w in works] == [
        (0, 2, None, frozenset({2}), False)]


@pytest.mark.parametrize("seconds,text", [(0.5, "0:00.50"), (59.999, "1:00.00"),
                                          (61.257, "1:01.26"), (3725, "62:05.00")])
def test_log_clock(seconds, text):
    assert clock(seconds, 2) == text


def test_a_segments_log_line_names_a_few_goals_and_counts_the_rest():
    from music2video.driver.job import segment_line

    goals = tuple(Goal("text", text=f"line {k}") for k in range(2000))
    line = segment_line(Segment(0, 0.0, 1.0, 5, 0, 30, goals), 1)
    assert line == "[1/1] 0:00.00-0:01.00 5 it, 30 frames: lyric 'line 0'; lyric 'line 1'; " \
                   "lyric 'line 2'; 1997 more"
    assert segment_line(Segment(0, 0.0, 1.0, 5, 0, 30, (Goal("audio", 0.0, 1.0),)), 2).endswith(
        "30 frames: audio")


def test_a_finished_song_is_joined_while_the_next_songs_segments_keep_coming(tmp_path,
                                                                            monkeypatch,
                                                                            video_chunk):
    """Finishing a song (join, storyboard, report) runs beside the loop, not inside it."""
    import threading
    from types import SimpleNamespace

    from music2video.driver.job import render_jobs

    first, second = make_job(tmp_path / "a", [(0, 0)]), make_job(tmp_path / "b", [(0, 1)])
    second.index = 1
    for job in (first, second):
        job.spec = SimpleNamespace(segments=job.plan.segments)
    release, order = threading.Event(), []

    def finish(job, seconds):
        order.append(("finishing", job.index))
        assert release.wait(30)  # only the second song's segments set it
        order.append(("finished", job.index))

    class Scheduler:
        def render(self, specs, works):
            yield Finished(0, 0, 0, video_chunk(15), None, None, wanted=True)
            for k in (0, 1):
                yield Finished(1, 0, k, video_chunk(15), None, None, wanted=True)
                order.append(("received", 1, k))
            release.set()

    monkeypatch.setattr(Job, "finish", finish)
    assert render_jobs([first, second], Scheduler(), quiet=True) == {}
    assert order.index(("received", 1, 1)) < order.index(("finished", 0))
    assert ("finished", 1) in order


def test_a_segment_is_journaled_with_who_rendered_it_and_a_resume_keeps_its_setup(tmp_path,
                                                                                   video_chunk):
    job = make_job(tmp_path, [(0, 2), (3, 5)])
    worker = {"node": "gpu-1 (1a2b3c4d)", "hardware": "NVIDIA H100", "pid": 7}
    job.handle(Finished(0, 1, 3, video_chunk(15), None, None, wanted=True, threads=4,
                        precision="bf16", worker=worker))
    (entry,) = job.folder.entries()
    expected = {"segment": 3, "section": 1, "threads": 4, "precision": "bf16", **worker}
    assert {key: entry[key] for key in expected} == expected
    job.folder.unlock()
    works, _ = make_job(tmp_path, [(0, 2), (3, 5)]).works()
    assert [(w.section, w.threads, w.precision) for w in works] == [(0, None, None),
                                                                   (1, 4, "bf16")]


def test_a_chunk_written_in_place_is_kept_and_journaled_as_not_sent(tmp_path, video_chunk):
    job = make_job(tmp_path, [(0, 1)])
    handed = (tmp_path / "v").resolve() / ".chunk_1_00ff00ff.77.part.mp4"
    handed.write_bytes(video_chunk(15))
    job.handle(Finished(0, 0, 1, None, None, None, wanted=True, chunk_file=str(handed)))
    job.handle(Finished(0, 0, 0, video_chunk(15), None, None, wanted=True))
    assert [(e["segment"], e["chunk_sent"]) for e in job.folder.entries()] == [(1, False),
                                                                                (0, True)]
    assert not handed.exists() and job.folder.chunk_problems(job.manifest["segments"]) == {}


def test_a_lost_chunk_rendered_again_in_place_replaces_the_damaged_one(tmp_path, finish,
                                                                       video_chunk):
    job = make_job(tmp_path, [(0, 1)])
    finish(job, 0, 0)
    finish(job, 1, 0)
    (tmp_path / "v" / chunk_name(0, 2)).write_bytes(b"damaged")
    (repair,), _ = job.works()
    assert repair.repair and repair.write == frozenset({0})
    handed = (tmp_path / "v").resolve() / ".chunk_0_00ff00ff.77.part.mp4"
    handed.write_bytes(video_chunk(15))
    job.handle(Finished(0, 0, 0, None, None, {"segment": 0, "iteration": 0}, wanted=True,
                        repair=True, chunk_file=str(handed)))
    assert job.folder.chunk_problems(job.manifest["segments"]) == {}
    assert job.folder.load_state(0)["segment"] == 1  # the section's state is not moved back
