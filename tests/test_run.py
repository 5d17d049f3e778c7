"""The run folder: chunk names, the manifest, refusing or resuming a run, leftovers."""

import json

import pytest
import torch

from music2video.run import RunError, RunFolder, chunk_name
from music2video.schedule import Goal, Segment


def plan(count: int, fps: int = 30) -> list[Segment]:
    """`count` half-second audio segments."""
    return [Segment(k, k / 2, (k + 1) / 2, 3, round(k / 2 * fps), round((k + 1) / 2 * fps),
                    (Goal("audio", k / 2, (k + 1) / 2),)) for k in range(count)]


@pytest.mark.parametrize("count", [3, 1_000, 1_500, 123_456])
def test_chunk_names_sort_in_segment_order_at_any_count(count):
    indices = [0, 1, 9, 10, 99, 100, 999, count // 2, count - 1]
    names = [chunk_name(i, count) for i in sorted(set(indices)) if i < count]
    assert names == sorted(names)
    assert len({len(n) for n in names}) == 1


def test_new_run_writes_its_manifest(tmp_path):
    folder = RunFolder(tmp_path / "run")
    manifest = folder.start({"ips": 4}, plan(3), False, 7, {"fps": 30})
    on_disk = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["seed"] == 7 and manifest["done"] == 0 and manifest["fps"] == 30
    assert [s["chunk"] for s in manifest["segments"]] == [chunk_name(k, 3) for k in range(3)]


def finish_one(folder: RunFolder, manifest: dict) -> None:
    """Marks the first segment done, as the engine does."""
    folder.save_state(manifest, 0, {"optimiser": {"z": torch.zeros(1)}, "image": torch.zeros(1),
                                    "iteration": 3})


def test_same_run_resumes_and_keeps_its_seed(tmp_path):
    folder = RunFolder(tmp_path / "run")
    first = folder.start({"ips": 4}, plan(3), False, 7, {})
    finish_one(folder, first)
    again = folder.start({"ips": 4}, plan(3), False, 99, {"fps": 25})
    assert again["seed"] == 7 and again["done"] == 1 and again["fps"] == 25
    assert folder.load_state(again)["iteration"] == 3
    assert folder.start({"ips": 4, "seed": 7}, plan(3), False, 7, {})["done"] == 1


def test_a_different_run_is_refused_unless_overwrite(tmp_path):
    folder = RunFolder(tmp_path / "run")
    finish_one(folder, folder.start({"ips": 4, "audio": "aaa"}, plan(3), False, 7, {}))
    with pytest.raises(RunError, match="different ips, audio.*--overwrite"):
        folder.start({"ips": 5, "audio": "bbb"}, plan(3), False, 7, {})
    with pytest.raises(RunError, match="different seed"):
        folder.start({"ips": 4, "audio": "aaa", "seed": 8}, plan(3), False, 7, {})
    with pytest.raises(RunError, match="segment plan"):
        folder.start({"ips": 4, "audio": "aaa"}, plan(4), False, 7, {})
    fresh = folder.start({"ips": 5, "audio": "bbb"}, plan(2), True, 8, {})
    assert fresh["done"] == 0 and fresh["seed"] == 8
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["manifest.json"]


def test_a_run_with_nothing_finished_is_simply_replaced(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.start({"clip_model": "ViT-Bogus"}, plan(3), False, 7, {})
    assert folder.start({"clip_model": "ViT-B/32"}, plan(3), False, 8, {})["seed"] == 8


def test_clear_and_leftovers_touch_only_our_files(tmp_path):
    run = tmp_path / "run"
    folder = RunFolder(run)
    folder.start({}, plan(2), False, 1, {})
    (run / "my notes.txt").write_text("keep")
    (run / chunk_name(0, 2)).write_bytes(b"x")
    (run / ".chunk_00001.123.part.mp4").write_bytes(b"x")
    (tmp_path / ".run.456.part.mp4").write_bytes(b"x")
    (tmp_path / ".run.456.concat.txt").write_text("x")
    (tmp_path / "other.mp4").write_bytes(b"keep")
    folder.remove_leftovers()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.mp4", "run"]
    folder.clear()
    assert sorted(p.name for p in run.iterdir()) == ["my notes.txt"]


def test_finished_chunks_name_what_is_missing(tmp_path):
    folder = RunFolder(tmp_path / "run")
    manifest = folder.start({}, plan(3), False, 1, {})
    with pytest.raises(RunError, match="only 0 of 3 segments"):
        folder.finished_chunks(manifest)
    manifest["done"] = 3
    (tmp_path / "run" / chunk_name(0, 3)).write_bytes(b"x")
    with pytest.raises(RunError, match=f"missing chunk.*{chunk_name(1, 3)}"):
        folder.finished_chunks(manifest)
    manifest["done"] = 1
    assert folder.finished_chunks(manifest, partial=True) == [tmp_path / "run" / chunk_name(0, 3)]
