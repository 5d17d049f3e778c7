"""The run folder: names, manifest, locking, resuming or refusing a run, and whose files it deletes."""

import errno
import json
import os
import subprocess
import sys

import pytest
import torch

from music2video.driver.folder import RunFolder, check_manifest, chunk_name, state_name, thumb_name
from music2video.files import RunError, write_json
from music2video.song.segments import Goal, Segment


def plan(count: int, fps: int = 30) -> list[Segment]:
    """`count` half-second audio segments."""
    return [Segment(k, k / 2, (k + 1) / 2, 3, round(k / 2 * fps), round((k + 1) / 2 * fps),
                    (Goal("audio", k / 2, (k + 1) / 2),)) for k in range(count)]


def open_run(folder: RunFolder, identity=None, count=3, overwrite=False, seed=7, sections=None,
             info=None) -> dict:
    """folder.open with small defaults."""
    sections = sections or [(0, count - 1)]
    return folder.open(identity or {"ips": 4}, plan(count), sections, overwrite, seed,
                       {"precision": "fp32", "threads": 1}, {"fps": 30, **(info or {})})


def finish(folder: RunFolder, manifest: dict, index: int, section: int = 0,
           chunk: bytes = b"chunk") -> None:
    """Writes a finished segment as the driver does."""
    folder.record(manifest, index, chunk, b"thumb", section,
                  {"segment": index, "iteration": 3 * (index + 1), "z": torch.zeros(1)})


@pytest.mark.parametrize("count", [3, 1_000, 1_500, 123_456])
def test_chunk_names_sort_in_segment_order_at_any_count(count):
    indices = [0, 1, 9, 10, 99, 100, 999, count // 2, count - 1]
    names = [chunk_name(i, count) for i in sorted(set(indices)) if i < count]
    assert names == sorted(names)
    assert len({len(n) for n in names}) == 1


def test_new_run_writes_its_manifest_and_holds_the_lock(tmp_path):
    folder = RunFolder(tmp_path / "run")
    manifest = open_run(folder, sections=[(0, 1), (2, 2)])
    on_disk = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["seed"] == 7 and manifest["fps"] == 30 and manifest["sections"] == [[0, 1], [2, 2]]
    assert [s["chunk"] for s in manifest["segments"]] == [chunk_name(k, 3) for k in range(3)]
    assert (tmp_path / "run" / ".lock").read_text() == str(os.getpid())
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging folder left


def test_same_run_resumes_and_keeps_its_seed_and_settings(tmp_path):
    folder = RunFolder(tmp_path / "run")
    first = open_run(folder)
    finish(folder, first, 0)
    folder.unlock()
    again = RunFolder(tmp_path / "run")
    resumed = again.open({"ips": 4}, plan(3), [(0, 2)], False, 99,
                         {"precision": "bf16", "threads": 8}, {"fps": 25})
    assert resumed["seed"] == 7 and resumed["fps"] == 25
    assert resumed["settings"] == {"precision": "fp32", "threads": 1}
    assert again.done() == {0}
    assert again.load_state(0)["iteration"] == 3


def test_a_different_run_is_refused_unless_overwrite(tmp_path):
    folder = RunFolder(tmp_path / "run")
    finish(folder, open_run(folder, {"ips": 4, "audio": "aaa"}), 0)
    with pytest.raises(RunError, match="different ips, audio.*--overwrite"):
        open_run(folder, {"ips": 5, "audio": "bbb"})
    with pytest.raises(RunError, match="different seed"):
        open_run(folder, {"ips": 4, "audio": "aaa", "seed": 8})
    with pytest.raises(RunError, match="plan"):
        open_run(folder, {"ips": 4, "audio": "aaa"}, count=4)
    with pytest.raises(RunError, match="plan"):
        open_run(folder, {"ips": 4, "audio": "aaa"}, sections=[(0, 0), (1, 2)])
    fresh = open_run(folder, {"ips": 5, "audio": "bbb"}, count=2, overwrite=True, seed=8)
    assert fresh["seed"] == 8 and folder.done() == set()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock", ".music2video", "manifest.json"]


def test_a_run_with_nothing_finished_is_simply_replaced(tmp_path):
    folder = RunFolder(tmp_path / "run")
    open_run(folder, {"clip_model": "ViT-Bogus"})
    assert open_run(folder, {"clip_model": "ViT-B/32"}, seed=8)["seed"] == 8


def test_a_folder_the_tool_did_not_make_is_never_used(tmp_path):
    """-o naming an existing folder must not make it a run folder, nor delete anything in it."""
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("chunk_notes.txt", "state_of_the_union.txt", "chunk_00000.mp4"):
        (mine / name).write_text("keep")
    for overwrite in (False, True):
        with pytest.raises(RunError, match="not a music2video run folder; choose another -o"):
            open_run(RunFolder(mine), overwrite=overwrite)
    assert sorted(p.name for p in mine.iterdir()) == [
        "chunk_00000.mp4", "chunk_notes.txt", "state_of_the_union.txt"]
    (tmp_path / "afile").write_text("keep")
    with pytest.raises(RunError, match="not a folder"):
        open_run(RunFolder(tmp_path / "afile"))


def test_a_users_folder_with_a_manifest_is_not_a_run_folder(tmp_path):
    """Even with --overwrite, and without leaving a lock file behind."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "manifest.json").write_text('{"name": "my web app"}')
    (site / "report.json").write_text("{}")
    for overwrite in (False, True):
        with pytest.raises(RunError, match="not a music2video run folder"):
            open_run(RunFolder(site), overwrite=overwrite)
    assert sorted(p.name for p in site.iterdir()) == ["manifest.json", "report.json"]
    assert (site / "manifest.json").read_text() == '{"name": "my web app"}'


def test_a_refused_folder_is_unlocked_at_once(tmp_path):
    folder = RunFolder(tmp_path / "run")
    finish(folder, open_run(folder, {"a": 1}), 0)
    folder.unlock()
    other = RunFolder(tmp_path / "run")
    with pytest.raises(RunError, match="another run"):
        open_run(other, {"a": 2})
    assert other._lock is None
    open_run(RunFolder(tmp_path / "run"), {"a": 1})  # not held by the refused attempt


def test_an_older_versions_run_folder_is_replaced_with_overwrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"version": 1, "identity": {}, "seed": 1,
                                                   "segments": [], "done": 1}))
    (run / "chunk_00000.mp4").write_bytes(b"old")
    (run / "state_000000.pt").write_bytes(b"old")
    (run / "notes.txt").write_text("keep")
    with pytest.raises(RunError, match="version 1"):
        open_run(RunFolder(run))
    open_run(RunFolder(run), overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == [".lock", ".music2video", "manifest.json",
                                                     "notes.txt"]


def test_overwrite_deletes_only_what_the_run_made(tmp_path):
    run = tmp_path / "run"
    folder = RunFolder(run)
    manifest = open_run(folder, {"a": 1})
    finish(folder, manifest, 0)
    (run / "my notes.txt").write_text("keep")
    (run / "chunk_notes.txt").write_text("keep")
    (run / "state_of_the_union.txt").write_text("keep")
    (run / "chunk_99999.mp4").write_text("not listed: keep")
    open_run(folder, {"a": 2}, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == [
        ".lock", ".music2video", "chunk_99999.mp4", "chunk_notes.txt", "manifest.json",
        "my notes.txt", "state_of_the_union.txt"]


@pytest.mark.parametrize("content", ["{ not json", '["a", "list"]', '{"version": 2}',
                                     '{"version": 2, "segments": "x", "sections": []}'])
def test_a_corrupt_manifest_is_one_line_and_overwrite_replaces_it(tmp_path, content):
    run = tmp_path / "run"
    folder = RunFolder(run)
    finish(folder, open_run(folder), 0)
    (run / "manifest.json").write_text(content)
    (run / "chunk_notes.txt").write_text("keep")
    with pytest.raises(RunError, match="--overwrite") as caught:
        open_run(folder)
    assert "\n" not in str(caught.value)
    fresh = open_run(folder, overwrite=True, seed=9)
    assert fresh["seed"] == 9 and folder.done() == set()
    assert sorted(p.name for p in run.iterdir()) == [".lock", ".music2video", "chunk_notes.txt",
                                                     "manifest.json"]


def test_check_manifest_names_what_is_wrong(tmp_path):
    folder = RunFolder(tmp_path / "run")
    good = open_run(folder)
    assert check_manifest(json.loads(json.dumps(good)), "m") == good
    broken = json.loads(json.dumps(good))
    broken["segments"][1]["chunk"] = "../../etc/passwd"
    with pytest.raises(RunError, match="segment 1 names chunk"):
        check_manifest(broken, "m")
    broken = json.loads(json.dumps(good))
    broken["sections"] = [[0, 1]]
    with pytest.raises(RunError, match="do not tile"):
        check_manifest(broken, "m")
    with pytest.raises(RunError, match="version 1"):
        check_manifest({**good, "version": 1}, "m")


@pytest.mark.parametrize("path, value", [
    ("fps", 0), ("fps", -30), ("fps", "30"), ("fps", True), ("fps", 1e-300), ("seed", -1),
    ("seed", 2**40), ("segments.1.frame_end", "30"), ("segments.1.frame_start", 14),
    ("segments.0.iterations", 0), ("segments.2.end", float("inf")), ("segments.0.start", -1),
    ("segments.1.goals", []), ("segments.1.goals", [{"kind": "sound"}]),
    ("segments.1.chunk", "chunk_00000.mp4"), ("segments.1.chunk", None), ("sections", [["0", 2]]),
    ("settings.threads", -1), ("settings.precision", 16), ("output_video_fps", -60),
    ("output_video_fps", 20), ("burn_lyrics", "yes"), ("video", 3), ("audio_path", None),
    ("cues", [{"start": 1, "end": 0.5, "text": "a"}]), ("cues", [{"start": 0, "end": 1}]),
    ("cues", "none")])
def test_check_manifest_checks_each_fields_type_and_range(tmp_path, path, value):
    """A hand-edited manifest (fps 0 once gave combine_mp4.py a ZeroDivisionError) is one line."""
    good = open_run(RunFolder(tmp_path / "run"), info={"audio_path": "/song.mp3",
                                                       "video": "/v.mp4", "output_video_fps": 0,
                                                       "cues": [], "burn_lyrics": False})
    assert check_manifest(json.loads(json.dumps(good)), "m") == good
    broken = json.loads(json.dumps(good))
    *parents, key = path.split(".")
    place = broken
    for part in parents:
        place = place[int(part)] if isinstance(place, list) else place[part]
    place[key] = value
    with pytest.raises(RunError, match="not a run manifest this version can use") as caught:
        check_manifest(broken, "m")
    assert "\n" not in str(caught.value) and "--overwrite" in str(caught.value)


HOLD = """
import sys, time
from music2video.driver.folder import RunFolder
from music2video.song.segments import Goal, Segment
seg = [Segment(0, 0.0, 1.0, 1, 0, 30, (Goal("audio", 0.0, 1.0),))]
folder = RunFolder(sys.argv[1])  # the lock lives as long as the folder object
folder.open({"x": int(sys.argv[2])}, seg, [(0, 0)], False, 1, {}, {"fps": 30})
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_second_run_on_a_locked_folder_is_refused_with_the_pid(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run), "1"], stdout=subprocess.PIPE,
                              text=True, cwd=os.getcwd())
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (run / "manifest.json").read_text()
        with pytest.raises(RunError, match=f"in use by another run \\(pid {holder.pid}\\)"):
            open_run(RunFolder(run), {"x": 2}, overwrite=True)
        assert (run / "manifest.json").read_text() == before
    finally:
        holder.kill()
        holder.wait()
    open_run(RunFolder(run), {"x": 2})  # the lock died with its holder


@pytest.mark.slow
def test_two_runs_starting_together_never_share_a_folder(tmp_path):
    run = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-c", HOLD, str(run), str(k)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    try:
        outcomes = []
        for proc in procs:
            line = proc.stdout.readline().strip()
            if line != "locked":
                proc.wait(timeout=60)
                outcomes.append(proc.stderr.read())
            else:
                outcomes.append(line)
        assert sorted(o == "locked" for o in outcomes) == [False, True], outcomes
        assert "in use by another run" in [o for o in outcomes if o != "locked"][0]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_journal_skips_a_torn_line_and_finished_chunks_name_what_is_missing(tmp_path,
                                                                            video_chunk):
    run = tmp_path / "run"
    folder = RunFolder(run)
    manifest = open_run(folder)
    with pytest.raises(RunError, match="only 0 of 3 segments"):
        folder.finished_chunks(manifest)
    finish(folder, manifest, 0, chunk=video_chunk(15))
    finish(folder, manifest, 2, chunk=video_chunk(15))
    with open(run / "progress.jsonl", "a") as f:
        f.write('{"segm')
    assert folder.done() == {0, 2}
    assert folder.finished_prefix(manifest) == 1
    assert folder.finished_chunks(manifest, partial=True) == [run / chunk_name(0, 3)]
    finish(folder, manifest, 1, chunk=video_chunk(15))
    (run / chunk_name(1, 3)).unlink()
    with pytest.raises(RunError, match=f"{chunk_name(1, 3)} is missing"):
        folder.finished_chunks(manifest)


def test_finished_chunks_name_a_damaged_chunk_and_a_wrong_frame_count(tmp_path, video_chunk):
    """Each chunk is decoded and its frames counted against the manifest before a join."""
    run = tmp_path / "run"
    folder = RunFolder(run)
    manifest = open_run(folder, count=4)
    for index, chunk in enumerate([video_chunk(15), video_chunk(15)[:1000], video_chunk(14),
                                   video_chunk(15)]):
        finish(folder, manifest, index, chunk=chunk)
    assert folder.chunk_problems(manifest["segments"]) == {1: "does not decode",
                                                           2: "has 14 frames, not 15"}
    with pytest.raises(RunError) as caught:
        folder.finished_chunks(manifest)
    message = str(caught.value)
    assert f"{chunk_name(1, 4)} does not decode, {chunk_name(2, 4)} has 14 frames, not 15" in message
    assert "\n" not in message and "rerun the generate command" in message


def test_record_writes_the_files_before_the_journal(tmp_path):
    run = tmp_path / "run"
    folder = RunFolder(run)
    manifest = open_run(folder, sections=[(0, 1), (2, 2)])
    finish(folder, manifest, 2, section=1)
    assert (run / chunk_name(2, 3)).read_bytes() == b"chunk"
    assert (run / thumb_name(2, 3)).read_bytes() == b"thumb"
    assert folder.load_state(1)["segment"] == 2 and folder.load_state(0) is None
    assert (run / state_name(1)).is_file()
    assert folder.done() == {2}


def test_the_name_a_worker_encodes_under_is_the_one_the_driver_takes(tmp_path):
    from music2video.driver.folder import OWN_FILE
    from music2video.files import HANDED_CHUNK, handed_chunk, part_path

    names = {part_path(handed_chunk(tmp_path, 12)).name for _ in range(20)}
    assert len(names) == 20  # random: two workers never share one
    assert all(HANDED_CHUNK.fullmatch(n)[1] == "12" and OWN_FILE.fullmatch(n) for n in names)


def test_a_chunk_a_worker_encoded_into_the_folder_is_renamed_not_written_again(tmp_path):
    run = tmp_path / "run"
    folder = RunFolder(run)
    manifest = open_run(folder)
    token = folder.handoff_token()
    assert (run / ".music2video").read_text() == token and folder.handoff_token() != token
    assert RunFolder(run).made_by_tool()  # the marker still marks the folder
    handed = run.resolve() / ".chunk_1_0a1b2c3d.4242.part.mp4"
    handed.write_bytes(b"encoded once")
    inode = handed.stat().st_ino
    folder.record(manifest, 1, handed, b"thumb", 0)
    final = run / chunk_name(1, 3)
    assert final.read_bytes() == b"encoded once" and final.stat().st_ino == inode
    assert not handed.exists() and folder.done() == {1}


def test_only_a_workers_own_chunk_of_that_segment_in_the_folder_is_taken(tmp_path):
    run = tmp_path / "run"
    folder = RunFolder(run)
    manifest = open_run(folder)
    elsewhere = tmp_path / ".chunk_0_0a1b2c3d.1.part.mp4"  # right name, wrong folder
    other = run.resolve() / ".chunk_2_0a1b2c3d.1.part.mp4"  # another segment's
    named = run.resolve() / "notes.mp4"  # not a temporary chunk's name
    linked = run.resolve() / ".chunk_0_0a1b2c3d.2.part.mp4"  # a link to a user's file
    for path in (elsewhere, other, named):
        path.write_bytes(b"x")
    (tmp_path / "precious.mp4").write_bytes(b"keep")
    linked.symlink_to(tmp_path / "precious.mp4")
    for path in (elsewhere, other, named, linked):
        with pytest.raises(RunError, match=r"^segment 0(?: came back|'s chunk) .*rerun the same"):
            folder.record(manifest, 0, path, b"thumb", 0)
    assert all(p.exists() for p in (elsewhere, other, named)) and linked.is_symlink()
    assert (tmp_path / "precious.mp4").read_bytes() == b"keep"
    assert not (run / chunk_name(0, 3)).exists() and folder.done() == set()


class _FullDisk:
    """A file whose disk fills after `room` bytes: the write stores that much, then fails."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def write(self, data):
        self.file.write(data[:self.room])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


@pytest.mark.parametrize("full_at", ["write 0", "write 100", "write 4000", "fsync", "replace"])
def test_a_full_disk_while_a_state_is_saved_is_one_line_and_keeps_the_last_state(
        tmp_path, monkeypatch, full_at):
    from music2video import files as files_module  # where write_bytes opens the file

    run = tmp_path / "run"
    folder = RunFolder(run)
    open_run(folder)
    folder.save_state(0, {"segment": 0, "z": torch.zeros(1)})
    saved = (run / state_name(0)).read_bytes()

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if full_at.startswith("write"):
        room = int(full_at.split()[1])
        monkeypatch.setattr(files_module, "open", lambda *a: _FullDisk(open(*a), room),
                            raising=False)
    else:
        monkeypatch.setattr(os, full_at, full)
    with pytest.raises(RunError, match="No space left on device.*run the same command again"
                       ) as caught:
        folder.save_state(0, {"segment": 1, "z": torch.zeros(100_000)})
    assert "\n" not in str(caught.value)
    monkeypatch.undo()
    assert (run / state_name(0)).read_bytes() == saved
    assert folder.load_state(0)["segment"] == 0
    assert sorted(p.name for p in run.iterdir()) == [".lock", ".music2video", "manifest.json",
                                                     state_name(0)]


def test_leftovers_touch_only_our_temporary_files(tmp_path):
    run = tmp_path / "run"
    folder = RunFolder(run)
    open_run(folder)
    (run / ".chunk_00001.123.part.mp4").write_bytes(b"x")
    (run / ".chunk_1_0a1b2c3d.123.part.mp4").write_bytes(b"x")  # a lost worker's, never kept
    (run / ".my.part.notes").write_bytes(b"keep")
    (tmp_path / ".run.456.part.mp4").write_bytes(b"x")
    (tmp_path / ".run.456.concat.txt").write_text("x")
    (tmp_path / ".run.notes").write_text("keep")
    (tmp_path / "other.mp4").write_bytes(b"keep")
    folder.remove_leftovers()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.notes", "other.mp4", "run"]
    assert ".my.part.notes" in [p.name for p in run.iterdir()]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch, code):
    run = tmp_path / "run"
    folder = RunFolder(run)
    manifest = open_run(folder)
    real_replace = os.replace

    def refuse(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", refuse)
    for write in (lambda: write_json(run / "manifest.json", manifest),
                  lambda: finish(folder, manifest, 0),
                  lambda: folder.save_state(0, {"x": torch.zeros(1)})):
        with pytest.raises(RunError, match="run the same command again to resume") as caught:
            write()
        assert "\n" not in str(caught.value)
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(p.name for p in run.iterdir()) == [".lock", ".music2video", "manifest.json"]
    assert folder.done() == set()


def test_a_linked_lock_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = RunFolder(tmp_path / "run")
    finish(folder, open_run(folder), 0)
    folder.unlock()
    (tmp_path / "run" / ".lock").unlink()
    (tmp_path / "run" / ".lock").symlink_to(victim)
    with pytest.raises(RunError, match=r"\.lock is a symbolic link.*remove the link") as caught:
        open_run(RunFolder(tmp_path / "run"))
    assert "\n" not in str(caught.value)
    assert victim.read_text() == "precious"


def test_a_linked_journal_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.jsonl"
    victim.write_text('{"segment": 0}\n')
    folder = RunFolder(tmp_path / "run")
    manifest = open_run(folder)
    finish(folder, manifest, 0)
    journal = tmp_path / "run" / "progress.jsonl"
    journal.unlink()
    journal.symlink_to(victim)
    with pytest.raises(RunError, match="progress.jsonl is a symbolic link"):
        folder.done()
    with pytest.raises(RunError, match="progress.jsonl is a symbolic link"):
        finish(folder, manifest, 1)
    assert victim.read_text() == '{"segment": 0}\n'


def test_a_link_planted_at_a_temporary_name_is_not_followed(tmp_path):
    from music2video.driver.folder import write_bytes
    from music2video.output.video import part_path

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "run" / "chunk_00000.mp4"
    target.parent.mkdir()
    part_path(target).symlink_to(victim)
    write_bytes(target, b"chunk")
    assert target.read_bytes() == b"chunk" and not target.is_symlink()
    assert victim.read_text() == "precious"
    assert not part_path(target).exists()


@pytest.mark.parametrize("replace", [False, True])
def test_a_run_folder_deleted_mid_run_stops_with_one_line(tmp_path, replace):
    import shutil

    run = tmp_path / "run"
    folder = RunFolder(run)
    manifest = open_run(folder)
    finish(folder, manifest, 0)
    shutil.rmtree(run)
    if replace:
        run.mkdir()
    with pytest.raises(RunError, match="was deleted or replaced.*start the run again") as caught:
        finish(folder, manifest, 1)
    assert "\n" not in str(caught.value)
    with pytest.raises(RunError, match="was deleted or replaced"):
        folder.save_state(0, {"x": torch.zeros(1)})
    assert run.exists() == replace  # not silently made again
    assert not replace or list(run.iterdir()) == []


def test_outputs_beside_the_folder_that_the_run_did_not_write_are_refused(tmp_path):
    from music2video.driver.folder import check_outputs

    video, board = tmp_path / "run.mp4", tmp_path / "run_storyboard.png"
    outputs = {"video": video, "storyboard": board}
    folder = RunFolder(tmp_path / "run")
    check_outputs(folder, outputs, overwrite=False)  # nothing there yet
    video.write_bytes(b"the user's own")
    with pytest.raises(RunError, match=r"run\.mp4 already exists and was not written by this run"
                                       r".*--overwrite"):
        check_outputs(folder, outputs, overwrite=False)
    check_outputs(folder, outputs, overwrite=True)
    open_run(folder, info={"outputs": ["run.mp4"]})
    check_outputs(folder, outputs, overwrite=False)  # listed: the run's own
    board.write_bytes(b"the user's own")
    with pytest.raises(RunError, match="run_storyboard.png already exists"):
        check_outputs(folder, outputs, overwrite=False)
    board.unlink()
    board.mkdir()
    for overwrite in (False, True):
        with pytest.raises(RunError, match="run_storyboard.png is a folder, where the run's "
                                           "storyboard goes"):
            check_outputs(folder, outputs, overwrite=overwrite)
    assert video.read_bytes() == b"the user's own"


def test_a_linked_state_is_refused(tmp_path):
    folder = RunFolder(tmp_path / "run")
    manifest = open_run(folder)
    finish(folder, manifest, 0)
    state = tmp_path / "run" / state_name(0)
    state.rename(tmp_path / "elsewhere.pt")
    state.symlink_to(tmp_path / "elsewhere.pt")
    with pytest.raises(RunError, match="is a symbolic link"):
        folder.load_state(0)
