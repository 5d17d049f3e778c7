"""The run folder: a run's manifest, progress journal, states and chunks, owned by the driver
(workers that see it encode chunks into it under temporary names, which the driver renames).

    outputs/output/
        manifest.json    identity, seed, settings, the segment and section plan (written at start)
        progress.jsonl   one line per finished segment (appended; small on the hot path)
        state_s0003.pt   the state after the last finished segment of section 3
        chunk_00012.mp4  segment 12's frames
        thumb_00012.png  segment 12's last picture, small (for the storyboard)
        .lock            held (flock) by the run that uses the folder
        .music2video     made with the folder: only a folder holding it is ever used as a run's;
                         it holds the token that lets a worker see it shares the folder

A run only ever deletes files it made itself: those its manifest lists, or, when the manifest is
unreadable, files named exactly as a run names them. A folder the tool did not create is never
made into a run folder: a new one is built under a temporary name and renamed into place."""

import contextlib
import errno
import fcntl
import io
import json
import math
import os
import re
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from ..ffmpeg import VideoError, count_decoded
from ..files import (
    DISK_ERRORS,
    HANDED_CHUNK,
    RunError,
    disk_error,
    folder_gone,
    write_bytes,
    write_json,
)
from ..output.storyboard import last_frame, load_thumbnail, thumbnail

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


def open_own(path: Path, flags: int) -> int:
    """A file descriptor for a run folder's own file, never through a symbolic link (one-line
    RunError if the name is a link); new files get mode 0o644."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _linked(path) from None
        if err.errno in DISK_ERRORS:
            raise disk_error(path, err) from None
        raise


def _linked(path: Path) -> RunError:
    """The one-line RunError for a symbolic link where a run folder's own file goes."""
    return RunError(f"{path} is a symbolic link, not a file this run made; remove the link "
                    "(nothing it points to was touched), or choose another -o")


def read_own(path: Path) -> bytes | None:
    """The bytes of a run folder's own file (None when missing), never through a link."""
    try:
        fd = open_own(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read()
        except IsADirectoryError:
            raise RunError(f"{path} is a folder, not a file this run made; move it away, or "
                           "choose another -o") from None


def check_outputs(folder: "RunFolder", outputs: dict[str, Path], overwrite: bool) -> None:
    """Refuses, before anything renders, final outputs (what: path, beside the run folder) that a
    run may not write: anything but a file in the way (a folder), and, unless `overwrite`, a file
    that the run folder's manifest does not list as one its run wrote."""
    listed = None
    for what, path in outputs.items():
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        except OSError as err:
            raise RunError(f"cannot check {path} ({err.strerror}); choose another -o") from None
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a file"
            raise RunError(f"{path} is {kind}, where the run's {what} goes; move it away or "
                           "choose another -o")
        if overwrite:
            continue
        listed = folder.listed_outputs(outputs) if listed is None else listed
        if path.name not in listed:
            raise RunError(f"{path} already exists and was not written by this run; choose "
                           "another -o, or add --overwrite to replace it")


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
            or any(not isinstance(s, list) or len(s) != 2 or not all(map(_is_int, s))
                   for s in sections)):
        raise bad("no section list")
    if [s[0] for s in sections] != [0] + [s[1] + 1 for s in sections[:-1]] \
            or sections[-1][1] != len(segments) - 1:
        raise bad("sections do not tile the segments")
    for key, kind in (("identity", dict), ("seed", int), ("settings", dict), ("fps", (int, float))):
        if not isinstance(manifest.get(key), kind):
            raise bad(f"no {key}")
    problem = _field_problem(manifest)
    if problem:
        raise bad(problem)
    return manifest


def _inode(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a path, None when it is gone."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _regular(path: Path) -> bool:
    """Whether a path is a regular file itself (not a link to one)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_int(value) -> bool:
    """A JSON whole number (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value, low: float = -math.inf) -> bool:
    """A finite JSON number (not a bool) of at least `low`."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= low)


def _field_problem(manifest: dict) -> str | None:
    """What is wrong with a manifest's values (types and ranges), for check_manifest; None
    when each is as a run writes it."""
    fps, segments = manifest["fps"], manifest["segments"]
    if not _is_number(fps) or fps <= 0:
        return f"fps {fps!r} is not a positive number"
    if not _is_int(manifest["seed"]) or not 0 <= manifest["seed"] < 2**32:
        return f"seed {manifest['seed']!r} is not a whole number from 0 to {2**32 - 1}"
    frame = 0
    for k, r in enumerate(segments):
        if not (_is_number(r["start"], 0) and _is_number(r["end"], r["start"])
                and _is_int(r["iterations"]) and r["iterations"] >= 1
                and _is_int(r["frame_start"]) and r["frame_start"] == frame
                and _is_int(r["frame_end"]) and r["frame_end"] >= frame
                and abs(r["frame_start"] - r["start"] * fps) <= 1
                and abs(r["frame_end"] - r["end"] * fps) <= 1):
            return f"segment {k} has a bad time, frame range or step count at {fps:g} fps"
        if r["chunk"] != (chunk_name(k, len(segments)) if r["frame_end"] > frame else None):
            return f"segment {k} names chunk {r['chunk']!r}"
        if not isinstance(r["goals"], list) or not r["goals"] or not all(
                isinstance(g, dict) and g.get("kind") in ("audio", "text")
                and isinstance(g.get("text", ""), str) for g in r["goals"]):
            return f"segment {k} has a bad goal list"
        frame = r["frame_end"]
    settings = manifest["settings"]
    if not isinstance(settings.get("precision", ""), str) or not (
            _is_int(settings.get("threads", 1)) and settings.get("threads", 1) >= 0) or not (
            _is_number(settings.get("seam_seconds", 0), 0)):
        return "bad settings"
    for key in ("audio_path", "video"):
        if not isinstance(manifest.get(key, ""), str):
            return f"{key} is not a path"
    ofps = manifest.get("output_video_fps", 0)
    if not _is_number(ofps) or not (ofps == 0 or ofps > fps):
        return f"output_video_fps {ofps!r} is neither 0 nor above fps {fps:g}"
    if not isinstance(manifest.get("burn_lyrics", False), bool):
        return "burn_lyrics is not true or false"
    cues = manifest.get("cues", [])
    if not isinstance(cues, list) or not all(
            isinstance(c, dict) and set(c) == {"start", "end", "text"} and _is_number(c["start"], 0)
            and _is_number(c["end"], c["start"]) and isinstance(c["text"], str) for c in cues):
        return "bad subtitle cues"
    return None


def describe_problems(problems: dict[int, str], records: list[dict]) -> str:
    """Chunks that cannot be joined, for one line: 'chunk_00004.mp4 does not decode, ...'."""
    named = [f"{records[k]['chunk']} {why}" for k, why in sorted(problems.items())]
    more = f" (and {len(named) - 5} more)" if len(named) > 5 else ""
    return ", ".join(named[:5]) + more


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
        self._inode = None  # (st_dev, st_ino) of the folder once this run holds it

    @property
    def video(self) -> Path:
        """The video beside the run folder: <folder name>.mp4 (never a path from the manifest)."""
        return self.path.with_name(self.path.name + ".mp4")

    # ---- reading --------------------------------------------------------------------------

    def read(self) -> dict | None:
        """The manifest, checked; None when the folder holds no run."""
        try:
            data = read_own(self.manifest_path)
            if data is None:
                return None
            manifest = json.loads(data.decode("utf-8"))
        except (OSError, ValueError) as err:
            raise RunError(f"{self.manifest_path} is unreadable ({type(err).__name__}); rerun the "
                           "generate command with --overwrite to start the video again") from None
        return check_manifest(manifest, self.manifest_path)

    def listed_outputs(self, outputs: dict[str, Path]) -> set[str]:
        """Names of the files beside this folder that its run lists as its own outputs (none when
        the folder holds no readable run). A manifest from before outputs were listed, whose video
        is this folder's, owns the usual `outputs`."""
        try:
            manifest = self.read() if self.made_by_tool() else None
        except RunError:
            return set()
        if manifest is None:
            return set()
        names = manifest.get("outputs")
        if names is None and Path(str(manifest.get("video", ""))).name == self.video.name:
            names = [p.name for p in outputs.values()]
        return {n for n in names or () if isinstance(n, str)}

    def check_video(self, manifest: dict) -> None:
        """Refuses a manifest whose video is not this folder's own <folder name>.mp4."""
        named = manifest.get("video", self.video.name)
        if not isinstance(named, str) or Path(named).name != self.video.name:
            raise RunError(f"{self.manifest_path} names the video {named!r}, but this run folder's "
                           f"video is {self.video.name}; the manifest was edited or the folder "
                           "renamed: give the folder back its name, or pass --output")

    def _journal_lines(self) -> list[dict]:
        """The journal's records (a torn or foreign line is skipped)."""
        data = read_own(self.journal_path)
        lines = []
        for line in (data or b"").decode("utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    lines.append(record)
        return lines

    def entries(self) -> list[dict]:
        """The journal's records of finished segments, in order: {"segment": k, ...}."""
        found = []
        for record in self._journal_lines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                found.append({**record, "segment": int(record["segment"])})
        return found

    def done(self) -> set[int]:
        """Indices of the segments the journal records as finished (a torn last line is skipped)."""
        return {entry["segment"] for entry in self.entries()}

    def setups(self) -> dict[int, dict]:
        """{section: its journal entry}: the threads and precision each section that wrote a
        segment rendered with, and which worker did (journals of older runs record neither)."""
        return {e["section"]: e for e in self.entries()
                if _is_int(e.get("section")) and _is_int(e.get("threads"))}

    def ledger(self) -> dict[str, dict]:
        """What each invocation of the run had spent when it last wrote a segment down: its id ->
        {wall, render, steps} (seconds, seconds, steps rendered), from the journal."""
        spent = {}
        for record in self._journal_lines():
            cost = record.get("spent")
            if isinstance(cost, dict) and isinstance(record.get("run"), str):
                spent[record["run"]] = {key: float(cost.get(key, 0) or 0)
                                        for key in ("wall", "render", "steps")}
        return spent

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
        problems = self.chunk_problems(records[:prefix])
        if problems:
            raise RunError(f"{self.path}: {describe_problems(problems, records)}; rerun the "
                           "generate command to render them again")
        return [self.chunk(r) for r in records[:prefix] if r["chunk"]]

    def chunk_problem(self, record: dict) -> str | None:
        """Why a segment's chunk cannot be joined (it is missing, does not decode, or has
        another number of frames than the manifest's); None when it is whole or the segment
        has no frames."""
        chunk = self.chunk(record)
        if chunk is None:
            return None
        if not chunk.is_file():
            return "is missing"
        try:
            frames = count_decoded(chunk)
        except VideoError:
            return "does not decode"
        expected = record["frame_end"] - record["frame_start"]
        return None if frames == expected else f"has {frames} frames, not {expected}"

    def chunk_problems(self, records: list[dict]) -> dict[int, str]:
        """{segment index: why} for the chunks of these segments that cannot be joined
        (each decoded in full, several at once)."""
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            found = zip([r["index"] for r in records], pool.map(self.chunk_problem, records))
            return {index: why for index, why in found if why}

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
            self._inode = _inode(self.path)
            return fresh
        if not self.path.is_dir():
            raise RunError(f"{self.path} exists and is not a folder; choose another -o")
        if not self.made_by_tool():
            raise RunError(f"{self.path} already exists and is not a music2video run folder; "
                           "choose another -o (nothing in it was touched)")
        self.lock()
        try:
            self._inode = _inode(self.path)
            return self._reopen(identity, plan, sections, overwrite, fresh, info)
        except BaseException:
            self.unlock()
            raise

    def made_by_tool(self) -> bool:
        """Whether this folder is a run folder the tool made: it holds the marker (or is an
        older version's run folder, whose manifest says so)."""
        if _regular(self.path / MARKER):
            return True
        try:
            old = json.loads(read_own(self.manifest_path) or b"")
        except (OSError, ValueError, RunError):
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
            self._acquire(staging / LOCK, new=True)
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

    def check_present(self) -> None:
        """Stops the run when its folder was deleted (or replaced) while the run held it."""
        if self._inode is not None and (_inode(self.path) != self._inode
                                        or not _regular(self.path / MARKER)):
            raise folder_gone(self.path)

    def lock(self) -> None:
        """Takes the folder's lock for this process's lifetime, or says who holds it."""
        self._acquire(self.path / LOCK)

    def _acquire(self, path: Path, new: bool = False) -> None:
        """flock on the lock file (`new`: created here, exclusively); a held lock is a RunError
        naming the holder's pid. The file is never opened through a link."""
        if self._lock is not None:
            return
        flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if new else 0)
        try:
            handle = os.fdopen(open_own(path, flags), "r+", encoding="utf-8")
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
        if path.is_symlink():
            raise _linked(path)
        if not path.is_file():
            return None
        try:
            return safe_load(path, fix="rerun with --overwrite to start the video again")
        except CheckpointError as err:
            raise RunError(str(err)) from None

    def save_state(self, section: int, state: dict) -> None:
        """Saves a section's state atomically and durably, as every other file is written.

        It is serialised in memory first (a latent and its optimiser's moments: small), so a
        full disk is an OSError of write_bytes, never torch.save's own RuntimeError."""
        import torch

        self.check_present()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_bytes(self.path / state_name(section), buffer.getvalue())

    def handoff_token(self) -> str:
        """A fresh token in the folder's marker: a worker that reads it there sees this folder
        (not one of the same path on another machine) and encodes its chunks into it."""
        token = os.urandom(16).hex()
        write_bytes(self.path / MARKER, token.encode("ascii"))
        return token

    def record(self, manifest: dict, index: int, chunk: bytes | Path | None,
               thumb: bytes | None, section: int | None = None, state: dict | None = None,
               spent: dict | None = None, extra: dict | None = None) -> None:
        """Writes a finished segment: its chunk (its bytes, or the file a worker encoded into
        this folder: renamed, so it is written once), thumbnail and section state, then the
        journal (with what this invocation has spent so far, `spent`: {run, wall, render,
        steps}, and `extra` facts: its section, threads, precision, worker).

        In that order, so a segment the journal lists always has its files."""
        self.check_present()
        record = manifest["segments"][index]
        if record["chunk"]:
            if chunk is None:
                raise RunError(f"segment {index} came back without its chunk")
            if isinstance(chunk, Path):
                self.keep(chunk, record["chunk"], index)
            else:
                write_bytes(self.path / record["chunk"], chunk)
        if thumb is not None:
            write_bytes(self.path / thumb_name(index, len(manifest["segments"])), thumb)
        if state is not None:
            self.save_state(section, state)
        self.journal(index, spent, extra)

    def keep(self, handed: Path, name: str, index: int) -> None:
        """Renames the chunk a worker encoded into this folder to its final name. Only a worker's
        temporary chunk of this very segment, in this folder, is ever taken."""
        match = HANDED_CHUNK.fullmatch(handed.name)
        if handed.parent != self.path.resolve() or not match or int(match[1]) != index:
            raise RunError(f"segment {index} came back naming {handed} as its chunk, which is "
                           "not one this run's workers write; rerun the same command to resume")
        if not _regular(handed):
            raise RunError(f"segment {index}'s chunk {handed} is not a file in the run folder; "
                           "rerun the same command to resume")
        try:
            os.replace(handed, self.path / name)
        except OSError as err:
            if err.errno in DISK_ERRORS:
                raise disk_error(self.path / name, err) from None
            raise RunError(f"cannot keep segment {index}'s chunk {handed} "
                           f"({err.strerror or err}); rerun the same command to resume") from None

    def journal(self, index: int, spent: dict | None = None, extra: dict | None = None) -> None:
        """Appends a finished segment to the journal, durably (after a line a crash tore, on a
        line of its own); `spent` ({run, wall, render, steps}) goes with it for the report, and
        `extra` facts about it (its section, threads, precision, worker)."""
        entry = {"segment": index, **(extra or {})}
        if spent:
            entry |= {"run": spent["run"],
                      "spent": {key: spent[key] for key in ("wall", "render", "steps")}}
        line = (json.dumps(entry) + "\n").encode("utf-8")
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_APPEND
            with os.fdopen(open_own(self.journal_path, flags), "r+b") as f:
                f.seek(0, os.SEEK_END)
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
