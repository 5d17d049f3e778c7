"""The section renderer: segments in, finished segments (chunk, state) out; sections open on a picture."""

from pathlib import Path

import numpy as np
import pytest
import torch

from music2video.engine.guidance import Target
from music2video.engine.modelset import WeightChoice
from music2video.engine.motion import Zoom
from music2video.engine.optimise import Optimiser
from music2video.engine.renderer import (
    Drop,
    Finished,
    Preview,
    Progress,
    Renderer,
    RenderError,
    RenderSpec,
    Work,
    load_for,
    section_seed,
)
from music2video.song.segments import Goal, Segment

SR = 16000


def segments(count: int = 4, steps: int = 3) -> tuple:
    """Half-second audio segments of `steps` steps, 15 frames each."""
    return tuple(Segment(k, k / 2, (k + 1) / 2, steps, 15 * k, 15 * (k + 1),
                         (Goal("audio", k / 2, (k + 1) / 2),)) for k in range(count))


@pytest.fixture(scope="module")
def spec(tiny_models) -> RenderSpec:
    weights = WeightChoice(str(tiny_models["vqgan_config"]), str(tiny_models["vqgan_checkpoint"]),
                           str(tiny_models["clip"]), str(tiny_models["wav2clip"]), None)
    return RenderSpec(weights=weights, device="cpu", size=(64, 64), segments=segments(), seed=5,
                      sr=SR, fps=30, precision="fp32", threads=1, num_cuts=2, warmup=4,
                      save_every=2)


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32) * 0.1


@pytest.fixture(scope="module")
def renderer(spec, samples) -> Renderer:
    return Renderer(spec, samples, load_for(spec))


def finished(events) -> list[Finished]:
    return [e for e in events if isinstance(e, Finished)]


def test_a_section_yields_each_segment_with_its_chunk_and_state(renderer):
    events = list(renderer.render(Work(0, 0, 0, 3, write=frozenset(range(4)))))
    done = finished(events)
    assert [f.index for f in done] == [0, 1, 2, 3]
    assert all(f.chunk and f.chunk[4:8] == b"ftyp" and f.thumb[:4] == b"\x89PNG" for f in done)
    # The state to go on from comes with the work's last segment only (and every STATE_SECONDS).
    assert [f.state is not None for f in done] == [False, False, False, True]
    assert done[-1].state["iteration"] == 12 and done[-1].state["segment"] == 3
    assert {(f.threads, f.precision) for f in done} == {(1, "fp32")}
    assert sum(e.steps for e in events if isinstance(e, Progress)) == 12
    assert [p.iteration for p in events if isinstance(p, Preview)] == [0, 2, 4, 6, 8, 10]


def test_a_worker_that_sees_the_run_folder_encodes_its_chunks_into_it(spec, samples, renderer,
                                                                      tmp_path):
    """Written once, under a temporary name the driver renames; a folder of the same path that is
    not the driver's (another token) gets nothing, and the chunks travel as bytes."""
    from dataclasses import replace

    from music2video.files import HANDED_CHUNK

    (tmp_path / "proof").write_text("token")
    work = Work(0, 0, 0, 3, write=frozenset({1, 2}))
    sent = finished(renderer.render(work))
    drop = Drop(str(tmp_path), "proof", "token")
    handed = finished(Renderer(replace(spec, drop=drop), samples, renderer.models).render(work))
    assert [f.chunk for f in handed] == [None] * 4
    assert [f.chunk_file is not None for f in handed] == [False, True, True, False]
    for k in (1, 2):
        path = Path(handed[k].chunk_file)
        assert path.parent == tmp_path and int(HANDED_CHUNK.fullmatch(path.name)[1]) == k
        assert path.read_bytes() == sent[k].chunk  # the same file the bytes would have made
    elsewhere = replace(spec, drop=Drop(str(tmp_path), "proof", "another folder's token"))
    again = finished(Renderer(elsewhere, samples, renderer.models).render(work))
    assert [f.chunk for f in again] == [f.chunk for f in sent]
    assert all(f.chunk_file is None for f in again) and len(list(tmp_path.iterdir())) == 3


def test_a_run_folder_this_worker_cannot_write_gets_bytes(spec, samples, renderer, tmp_path,
                                                         monkeypatch):
    """Read-only storage, another user's folder: the chunk travels as bytes, as before."""
    from dataclasses import replace

    from music2video.engine import renderer as module

    (tmp_path / "proof").write_text("token")
    monkeypatch.setattr(module, "handed_chunk",
                        lambda folder, index: tmp_path / "no such folder" / f"chunk_{index}.mp4")
    drop = Drop(str(tmp_path), "proof", "token")
    work = Work(0, 0, 0, 1, write=frozenset({1}))
    done = finished(Renderer(replace(spec, drop=drop), samples, renderer.models).render(work))
    assert done[1].chunk == finished(renderer.render(work))[1].chunk and not done[1].chunk_file


def test_a_full_disk_under_a_chunk_encoded_in_place_is_one_line(spec, samples, renderer,
                                                                tmp_path, monkeypatch):
    import errno
    import os
    from dataclasses import replace

    from music2video.files import DiskError

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    (tmp_path / "proof").write_text("token")
    drop = Drop(str(tmp_path), "proof", "token")
    events = Renderer(replace(spec, drop=drop), samples, renderer.models).render(
        Work(0, 0, 0, 0, write=frozenset({0})))
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskError, match=r"^cannot write .* \(No space left on device\); free "):
        list(events)
    assert list(tmp_path.iterdir()) == [tmp_path / "proof"]  # no temporary chunk left


def test_a_run_folder_deleted_while_a_chunk_is_encoded_into_it_is_one_line(spec, samples,
                                                                           renderer, tmp_path):
    import shutil
    from dataclasses import replace

    from music2video.files import RunError

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "proof").write_text("token")
    drop = Drop(str(folder), "proof", "token")
    events = Renderer(replace(spec, drop=drop), samples, renderer.models).render(
        Work(0, 0, 0, 3, write=frozenset(range(4))))
    with pytest.raises(RunError, match=r"^\S*run was deleted or replaced while this run was "
                                       "using it.*start the run again") as caught:
        for event in events:
            if isinstance(event, Preview) and event.iteration == 4:  # inside segment 1
                shutil.rmtree(folder)
    assert "\n" not in str(caught.value)


def test_only_wanted_chunks_are_encoded_and_the_rest_replayed(renderer):
    full = finished(renderer.render(Work(0, 0, 0, 3, write=frozenset(range(4)))))
    replay = finished(renderer.render(Work(0, 0, 0, 2, write=frozenset({2}), repair=True)))
    assert [(f.index, f.wanted, f.chunk is not None) for f in replay] == [
        (0, False, False), (1, False, False), (2, True, True)]
    assert replay[-1].repair and replay[-1].chunk == full[2].chunk


def test_resuming_from_a_state_gives_the_same_chunks(renderer, monkeypatch):
    from music2video.engine import renderer as module

    monkeypatch.setattr(module, "STATE_SECONDS", 0.0)  # a state with every segment
    full = finished(renderer.render(Work(0, 0, 0, 3, write=frozenset(range(4)))))
    assert all(f.state is not None for f in full)
    tail = finished(renderer.render(Work(0, 0, 2, 3, state=full[1].state,
                                      write=frozenset({2, 3}))))
    assert [f.chunk for f in tail] == [full[2].chunk, full[3].chunk]


def test_a_later_section_warms_up_and_does_not_open_on_the_start(renderer):
    """Section 1 starting at segment 2: warm-up steps pull it to a picture before frame one."""
    first = finished(renderer.render(Work(0, 1, 2, 2, write=frozenset({2}))))[0]
    again = finished(renderer.render(Work(0, 1, 2, 2, write=frozenset({2}))))[0]
    assert first.chunk == again.chunk  # seeded from the run seed and the section's index
    start = renderer.start_latent
    assert not torch.equal(first.state["optimiser"]["z"], start.cpu())
    assert section_seed(5, 1) != section_seed(5, 2) and section_seed(5, 1) == section_seed(5, 1)


def test_threads_and_precision_are_the_sections_once_fixed(spec, samples, renderer):
    from dataclasses import replace

    from music2video.engine.precision import machine_cores

    fixed = finished(renderer.render(Work(0, 0, 0, 0, write=frozenset({0}), threads=2)))
    assert (fixed[0].threads, fixed[0].precision) == (2, "fp32")
    # threads 0: the worker's own cores shared by the song's sections
    own = Renderer(replace(spec, threads=0, sections=((0, 1), (2, 3))), samples,
                   renderer.models)
    assert own.setup(Work(0, 0, 0, 0)) == (max(1, machine_cores() // 2), "fp32")
    assert own.setup(Work(0, 0, 0, 0, threads=3, precision="bf16")) == (3, "bf16")
    # --precision auto on a cluster: decided where the section renders, as precision.decide does
    from music2video.engine.precision import decide

    probe = Renderer(replace(spec, precision="auto"), samples, renderer.models)
    assert probe.setup(Work(0, 0, 0, 0))[1] == decide("cpu", (64, 64), 2).precision


def decoded(chunk: bytes, tmp_path, name: str) -> np.ndarray:
    """The frames of a chunk, (frames, H, W, 3) int."""
    from music2video import ffmpeg

    path = tmp_path / name
    path.write_bytes(chunk)
    return np.stack(list(ffmpeg.read_frames(path))).astype(int)


def test_a_section_cross_fades_into_the_next_sections_opening(spec, samples, renderer, tmp_path):
    """Section 0 (segments 0-1) ends on the picture section 1 (segments 2-3) opens on."""
    from dataclasses import replace

    from music2video.engine.optimise import to_frame

    plan = ((0, 1), (2, 3))
    cut = Renderer(replace(spec, sections=plan), samples, renderer.models)
    fade = Renderer(replace(spec, sections=plan, seam=0.2), samples, renderer.models)
    works = [Work(0, 0, 0, 1, write=frozenset({0, 1})), Work(0, 1, 2, 3, write=frozenset({2, 3}))]
    hard = [f.chunk for w in works for f in finished(cut.render(w))]
    events = [e for w in works for e in fade.render(w)]
    soft = [f.chunk for f in finished(events)]
    assert soft[0] == hard[0] and soft[2:] == hard[2:]  # only the last 0.2 s (6 frames) change
    # The opening made on section 0's worker is the picture section 1's first step shows.
    first = next(p.frame for p in events if isinstance(p, Preview) and p.iteration == 6)
    opening = to_frame(fade._opening(1, "fp32")).numpy().astype(int)
    assert np.abs(opening - first).max() <= 1
    before, after = decoded(soft[1], tmp_path, "a.mp4"), decoded(soft[2], tmp_path, "b.mp4")
    unfaded = decoded(hard[1], tmp_path, "c.mp4")
    seam = np.abs(before[-1] - after[0]).mean()
    jump = np.abs(unfaded[-1] - after[0]).mean()
    assert np.abs(before[:-6] - unfaded[:-6]).mean() < jump / 4  # the same, up to encoding
    assert seam < 0.7 * jump  # 1/7 of the jump left, plus H.264's noise on random pictures


def test_faded_frames_hold_until_the_fade_then_step_evenly_to_the_next_picture():
    from music2video.engine.renderer import Fade, faded

    image, picture = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    fade = Fade(start=10, end=13, picture=picture)  # frames 10, 11, 12 fade
    pieces = list(faded(image, 7, 6, fade))
    assert [(first, repeat) for _, first, repeat in pieces] == [(7, 3), (10, 1), (11, 1), (12, 1)]
    assert [int(frame[0, 0, 0]) for frame, _, _ in pieces] == [0, 64, 128, 191]  # k/4 of 255
    assert [(first, repeat) for _, first, repeat in faded(image, 7, 3, fade)] == [(7, 3)]
    assert [(first, repeat) for _, first, repeat in faded(image, 7, 3, None)] == [(7, 3)]


def test_a_non_finite_loss_stops_with_one_line(spec, samples, tiny_models):
    from dataclasses import replace

    bad = replace(spec, noise_prompts=((1, 1.0),))
    renderer = Renderer(bad, samples, load_for(bad))
    renderer.style = [[Target(torch.full((1, renderer.models.embed_dim), float("nan")))]]
    with pytest.raises(RenderError, match="non-finite") as caught:
        list(renderer.render(Work(0, 0, 0, 0, write=frozenset({0}))))
    assert "\n" not in str(caught.value) and "-lr" in str(caught.value)


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                 "memory: you tried to allocate 16000000000 bytes. Error code 12"),
    MemoryError(), torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 15 GiB")])
@pytest.mark.parametrize("section", [0, 1], ids=["first", "warm-up"])
def test_a_failed_allocation_is_one_line(renderer, monkeypatch, error, section):
    def allocate(*args):
        raise error

    monkeypatch.setattr(renderer.models.vqgan, "synth", allocate)
    with pytest.raises(RenderError, match="out of memory at -s 64 64, -cuts 2; use a smaller -s"
                       ) as caught:
        list(renderer.render(Work(0, section, section, section, write=frozenset({section}))))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("zoom_start, zoom_every", [(0, 2), (3, 2), (1, 4)])
def test_the_seeds_zoom_counts_the_steps_of_each_segment(spec, samples, renderer, monkeypatch,
                                                           zoom_start, zoom_every):
    """The seed counted i from 0 in every segment and zoomed before train(i) when
    i % zoom_frequency == 0 and zoom_start <= i: so also at every segment's start."""
    from dataclasses import replace

    steps = [3, 5, 1, 6]
    plan = tuple(replace(s, iterations=n) for s, n in zip(segments(), steps))
    events, step = [], Optimiser.step
    monkeypatch.setattr(Zoom, "move", lambda self, vqgan, z: events.append("zoom") or z.detach())
    monkeypatch.setattr(Optimiser, "step",
                        lambda self, *args: events.append("step") or step(self, *args))
    zoomed = Renderer(replace(spec, segments=plan, zoom=Zoom(zoom_start, zoom_every, 1.1, 1, 0)),
                      samples, renderer.models)
    list(zoomed.render(Work(0, 0, 0, 3)))
    seeds = []
    for iterations in steps:  # the seed's loop, for the steps we take
        for i in range(iterations):
            if i % zoom_every == 0 and zoom_start <= i:
                seeds.append("zoom")
            seeds.append("step")
    assert events == seeds and "zoom" in events
