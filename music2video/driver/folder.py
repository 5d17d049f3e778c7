"""The run folder: a run's manifest, progress journal, states and chunks, owned by the driver.

    outputs/output/
        manifest.json    identity, seed, settings, the segment and section plan (written at start)
        progress.jsonl   one line per finished segment (appended; small on the hot path)
        state_s0003.pt   the state after the last finished segment of section 3
        chunk_00012.mp4  segment 12's frames
        thumb_00012.png  segment 12's last picture, small (for the storyboard)
        .lock            held (flock) by the run that uses the folder
        .music2video     made with the folder: only a folder holding it is ever used as a run's

A run only ever deletes files it made itself: those its manifest lists, or, when the manifest is
unreadable, files named exactly as a run names them. A folder the tool did not create is never
made into a run folder: a new one is built under a temporary name and renamed into place."""

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from ..output.storyboard import last_frame, load_thumbnail, thumbnail
from ..files import DISK_ERRORS, RunError, disk_error, write_bytes, write_json, writing

MANIFEST = "manifest.json"
JOURNAL = "progress.jsonl"
REPORT = "report.json"
LOCK = ".lock"
MARKER = ".music2video"  # made with the folder: the tool made this folder
VERSION = 2
# What a run names its files; used to clean up when the manifest cannot say what the run made.
OWN_FILE = re.compile(r"(chunk_\d+\.mp4|thumb_\d+\.png|state_s?\d+\.pt|manifest\.json|"
                      r"progress\.jsonl|report\.json|\.(chunk|thumb|state|manifest|progress|report)"
                      r"_?[\w-]*\.\d+\.part(\.\w+)?)")


def chunk_name(index: int, count: int) -> str:
    """A chunk's file name, zero-padded so names sort in segment order at any count."""
    return f"chunk_{index:0{_width(count)}d}.mp4"


def thumb_name(index: int, count: int) -> str:
    """A segment's thumbnail file name."""
    return f"thumb_{index:0{_width(count)}d}.png"


def state_name(section: int) -> str:
    """The file holding a section's state after its last finished segment."""
    return f"state_s{section:04d}.pt"


def _width(count: int) -> int:
    """Digits for zero-padded names of `count` items (at least 5)."""
    return max(5, len(str(max(count - 1, 0))))


def segment_record(seg, count: int) -> dict:
    """A segment as the manifest lists it."""
    record = asdict(seg)
    record["chunk"] = chunk_name(seg.index, count) if seg.frames > 0 else None
    return record


def check_manifest(manifest, where: Path) -> dict:
    """The manifest if it has the shape this version writes, else a one-line RunError."""
    def bad(what: str) -> RunError:
        return RunError(f"{where} is not a run manifest this version can use ({what}); rerun the "
                        "generate command with --overwrite to start the video again")

    if not isinstance(manifest, dict):
        raise bad("not a JSON object")
    if manifest.get("version") != VERSION:
        raise bad(f"version {manifest.get('version')!r}, expected {VERSION}")
    segments, sections = manifest.get("segments"), manifest.get("sections")
    if not isinstance(segments, list) or not segments:
        raise bad("no segment list")
    keys = {"index", "start", "end", "iterations", "frame_start", "frame_end", "goals", "chunk"}
    for k, record in enumerate(segments):
        if not isinstance(record, dict) or not keys <= set(record) or record["index"] != k:
            raise bad(f"segment {k} is malformed")
        if record["chunk"] is not None and not re.fullmatch(r"chunk_\d+\.mp4", str(record["chunk"])):
            raise bad(f"segment {k} names chunk {record['chunk']!r}")
    if (not isinstance(sections, list) or not sections
            or any(not isinstance(s, list) or len(s) != 2 for s in sections)):
        raise bad("no section list")
    if [s[0] for s in sections] != [0] + [s[1] + 1 for s in sections[:-1]] \
            or sections[-1][1] != len(segments) - 1:
        raise bad("sections do not tile the segments")
    for key, kind in (("identity", dict), ("seed", int), ("settings", dict), ("fps", (int, float))):
        if not isinstance(manifest.get(key), kind):
            raise bad(f"no {key}")
    return manifest


def _same(key: str, value, old: dict) -> bool:
    """Whether an identity entry matches the old run's (a -sd equal to its drawn seed does)."""
    if key == "seed" and "seed" not in old.get("identity", {}):
        return value == old.get("seed")
    return old.get("identity", {}).get(key) == value


class RunFolder:
    """The folder beside the output that holds a run's chunks, states and manifest."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.manifest_path = self.path / MANIFEST
        self.journal_path = self.path / JOURNAL
        self._lock = None

    # ---- reading --------------------------------------------------------------------------

    def read(self) -> dict | None:
        """The manifest, checked; None when the folder holds no run."""
        if not self.manifest_path.is_file():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise RunError(f"{self.manifest_path} is unreadable ({type(err).__name__}); rerun the "
                           "generate command with --overwrite to start the video again") from None
        return check_manifest(manifest, self.manifest_path)

    def done(self) -> set[int]:
        """Indices of the segments the journal records as finished (a torn last line is skipped)."""
        if not self.journal_path.is_file():
            return set()
        done = set()
        for line in self.journal_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                done.add(int(json.loads(line)["segment"]))
        return done

    def chunk(self, record: dict) -> Path | None:
        """Path of a segment's chunk (None for a segment with no frames)."""
        return self.path / record["chunk"] if record["chunk"] else None

    def finished_chunks(self, manifest: dict, partial: bool = False) -> list[Path]:
        """The chunks to join, in order: all of them, or (partial) those of the finished prefix.

        A missing chunk is named in the error."""
        done, records = self.done(), manifest["segments"]
        prefix = next((k for k in range(len(records)) if k not in done), len(records))
        if not partial and prefix < len(records):
            raise RunError(f"{self.path}: only {len(done & set(range(len(records))))} of "
                           f"{len(records)} segments are finished; rerun the generate command to "
                           "resume, or join with --partial")
        chunks = [self.chunk(r) for r in records[:prefix] if r["chunk"]]
        missing = [c.name for c in chunks if not c.is_file()]
        if missing:
            raise RunError(f"{self.path}: missing chunk(s) {', '.join(missing[:5])}; rerun the "
                           "generate command to render them again")
        return chunks

    def finished_prefix(self, manifest: dict) -> int:
        """How many segments from the start are finished."""
        done = self.done()
        return next((k for k in range(len(manifest["segments"])) if k not in done),
                    len(manifest["segments"]))

    # ---- a run's life --------------------------------------------------------------------

    def open(self, identity: dict, segments: list, sections: list[tuple[int, int]],
             overwrite: bool, seed: int, settings: dict, info: dict) -> dict:
        """Locks the folder and returns the manifest to work from: the folder's own when it is the
        same run, else a new one (created under a temporary name and renamed into place).

        A run with no finished segment is simply replaced. A new run records `seed` and
        `settings` (the precision and threads chosen); a resumed one keeps its own."""
        identity = json.loads(json.dumps(identity))  # tuples become lists, as when read back
        plan = json.loads(json.dumps([segment_record(s, len(segments)) for s in segments]))
        sections = [list(s) for s in sections]
        fresh = {"version": VERSION, "identity": identity, "seed": seed, "settings": settings,
                 "segments": plan, "sections": sections, **info}
        if not self.path.exists() and self._create(fresh):
            return fresh
        if not self.path.is_dir():
            raise RunError(f"{self.path} exists and is not a folder; choose another -o")
        if not self.made_by_tool():
            raise RunError(f"{self.path} already exists and is not a music2video run folder; "
                           "choose another -o (nothing in it was touched)")
        self.lock()
        try:
            return self._reopen(identity, plan, sections, overwrite, fresh, info)
        except BaseException:
            self.unlock()
            raise

    def made_by_tool(self) -> bool:
        """Whether this folder is a run folder the tool made: it holds the marker (or is an
        older version's run folder, whose manifest says so)."""
        if (self.path / MARKER).is_file():
            return True
        try:
            old = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return (isinstance(old, dict) and old.get("version") == 1
                and {"identity", "segments", "seed", "done"} <= set(old))

    def _reopen(self, identity: dict, plan: list, sections: list, overwrite: bool, fresh: dict,
                info: dict) -> dict:
        """The manifest of a locked existing run folder: resumed when the run is the same,
        replaced when it finished nothing (or with --overwrite), else refused."""
        try:
            old = self.read()
        except RunError:
            if not overwrite:
                raise
            old = None
        if old is not None and not overwrite and self.done():
            differs = [k for k in identity if not _same(k, identity[k], old)]
            if not differs and (old["segments"] != plan or old["sections"] != sections):
                differs = ["segment or section plan"]
            if differs:
                raise RunError(f"{self.path} holds another run (different {', '.join(differs)}); "
                               "rerun with --overwrite to replace it, or choose another -o")
            old.update(info)
            self.write_manifest(old)
            self.remove_leftovers()
            return old
        self.clear(old)
        write_bytes(self.path / MARKER, b"")
        self.write_manifest(fresh)
        return fresh

    def _create(self, manifest: dict) -> bool:
        """Builds a new run folder under a temporary name, locked, and renames it into place.

        False when another process created the folder first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir()
            self._acquire(staging / LOCK)
            write_bytes(staging / MARKER, b"")
            write_json(staging / MANIFEST, manifest)
            os.rename(staging, self.path)
        except BaseException as err:
            self.unlock()
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(err, OSError) and err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return False
            if isinstance(err, OSError) and err.errno in DISK_ERRORS:
                raise disk_error(self.path, err) from None
            raise
        return True

    def lock(self) -> None:
        """Takes the folder's lock for this process's lifetime, or says who holds it."""
        self._acquire(self.path / LOCK)

    def _acquire(self, path: Path) -> None:
        """flock on the lock file; a held lock is a RunError naming the holder's pid."""
        if self._lock is not None:
            return
        try:
            handle = open(path, "a+", encoding="utf-8")
        except OSError as err:
            raise disk_error(path, err) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunError(f"{self.path} is in use by another run (pid {holder}); wait for it to "
                           "finish, or choose another -o") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle

    def unlock(self) -> None:
        """Releases the folder's lock."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def write_manifest(self, manifest: dict) -> None:
        """Saves the manifest atomically."""
        write_json(self.manifest_path, manifest)

    def owned_files(self, manifest: dict | None) -> list[Path]:
        """The files of this folder a run made: those its manifest names, or (no manifest)
        those named as a run names them. Temporary files of any run are included."""
        if manifest is None:
            return [p for p in self.path.iterdir() if p.is_file() and OWN_FILE.fullmatch(p.name)]
        count = len(manifest["segments"])
        names = {MANIFEST, JOURNAL, REPORT}
        names |= {r["chunk"] for r in manifest["segments"] if r["chunk"]}
        names |= {thumb_name(k, count) for k in range(count)}
        names |= {state_name(s) for s in range(len(manifest["sections"]))}
        temporary = [p for p in self.path.glob(".*.part*") if OWN_FILE.fullmatch(p.name)]
        return [self.path / n for n in sorted(names) if (self.path / n).is_file()] + temporary

    def clear(self, manifest: dict | None) -> None:
        """Removes what the previous run wrote here (see owned_files), nothing else."""
        for item in self.owned_files(manifest):
            item.unlink(missing_ok=True)

    def remove_leftovers(self) -> None:
        """Deletes temporary files an interrupted run left, in its folder and beside it."""
        inside = [p for p in self.path.glob(".*.part*") if OWN_FILE.fullmatch(p.name)]
        beside = re.compile(re.escape(f".{self.path.name}.") + r"\d+\.(part\.\w+|concat\.txt)")
        outside = [p for p in self.path.parent.glob(f".{self.path.name}.*")
                   if beside.fullmatch(p.name) and p.is_file()]
        for item in inside + outside:
            item.unlink(missing_ok=True)

    # ---- progress -------------------------------------------------------------------------

    def load_state(self, section: int):
        """The state saved after the last finished segment of a section, or None."""
        from ..models.checkpoint import CheckpointError, safe_load

        path = self.path / state_name(section)
        if not path.is_file():
            return None
        try:
            return safe_load(path, fix="rerun with --overwrite to start the video again")
        except CheckpointError as err:
            raise RunError(str(err)) from None

    def save_state(self, section: int, state: dict) -> None:
        """Saves a section's state atomically."""
        import torch

        path = self.path / state_name(section)
        with writing(path) as part:
            torch.save(state, part)

    def record(self, manifest: dict, index: int, chunk: bytes | None, thumb: bytes | None,
               section: int | None = None, state: dict | None = None) -> None:
        """Writes a finished segment: its chunk, thumbnail and section state, then the journal.

        In that order, so a segment the journal lists always has its files."""
        record = manifest["segments"][index]
        if record["chunk"]:
            if chunk is None:
                raise RunError(f"segment {index} came back without its chunk")
            write_bytes(self.path / record["chunk"], chunk)
        if thumb is not None:
            write_bytes(self.path / thumb_name(index, len(manifest["segments"])), thumb)
        if state is not None:
            self.save_state(section, state)
        self.journal(index)

    def journal(self, index: int) -> None:
        """Appends a finished segment to the journal, durably (after a line a crash tore, on a
        line of its own)."""
        line = (json.dumps({"segment": index}) + "\n").encode("utf-8")
        try:
            with open(self.journal_path, "a+b") as f:
                if f.tell() and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n":
                    line = b"\n" + line
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            if err.errno in DISK_ERRORS:
                raise disk_error(self.journal_path, err) from None
            raise


def saved_pictures(run_dir: Path, manifest: dict, done: set[int]) -> dict:
    """Thumbnails of a run's finished segments: the saved ones, else their chunks' last frames."""
    records, pictures = manifest["segments"], {}
    for index in sorted(k for k in done if 0 <= k < len(records)):
        picture = load_thumbnail(Path(run_dir) / thumb_name(index, len(records)))
        chunk = Path(run_dir) / records[index]["chunk"] if records[index]["chunk"] else None
        if picture is None and chunk is not None and chunk.is_file():
            frame = last_frame(chunk)
            picture = thumbnail(frame) if frame is not None else None
        if picture is not None:
            pictures[index] = picture
    return pictures
