"""Files written whole or not at all: a temporary name beside the final one, fsynced, then
renamed into place; a write the disk refuses becomes one line that says what to do."""

import contextlib
import errno
import json
import os
import re
import secrets
from pathlib import Path

from .errors import UserError


def part_path(path: Path) -> Path:
    """The temporary name a file is written under until it is complete.

    It carries the process id: an ffmpeg orphaned by a killed run may still be finishing its
    own temporary file while a resumed run writes the same chunk."""
    return path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")


# A chunk a worker encoded into a run folder, waiting for the driver to rename it: the temporary
# name (part_path) of handed_chunk(folder, index).
HANDED_CHUNK = re.compile(r"\.chunk_(\d+)_[0-9a-f]+\.\d+\.part\.mp4")


def handed_chunk(folder: Path, index: int) -> Path:
    """A name for a worker to encode segment `index`'s chunk under in a run folder (random, so
    two workers never share it); the file is written as its part_path, which the driver
    recognises (HANDED_CHUNK) and renames to the chunk's final name."""
    return Path(folder) / f"chunk_{index}_{secrets.token_hex(4)}.mp4"


HOME_VAR = "MUSIC2VIDEO_HOME"  # the tool's per-user folder (downloaded weights, machine cache)
CACHE_ENV = "MUSIC2VIDEO_CACHE"  # this machine's cache files (default: user_cache())


def user_cache() -> Path:
    """The tool's per-user folder: $MUSIC2VIDEO_HOME, else $XDG_CACHE_HOME/music2video, else
    ~/.cache/music2video (as whisper and CLIP keep theirs)."""
    if os.environ.get(HOME_VAR):
        return Path(os.environ[HOME_VAR])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "music2video"


def cache_folder() -> Path:
    """Where this machine's cache files go (the precision timing, weights' digests):
    $MUSIC2VIDEO_CACHE, else user_cache()."""
    return Path(os.environ.get(CACHE_ENV) or user_cache())


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO, errno.EFBIG)


class RunError(UserError, RuntimeError):
    """A file or run folder that cannot be used as asked; str() says why and what to do."""


class DiskError(RunError):
    """A write the disk refused (full, read-only, not permitted); `reason` is the system's word."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot write {path} ({reason}); free some space or fix the folder's "
                         "permissions, then run the same command again to resume")
        self.reason = reason


def folder_gone(path: Path) -> RunError:
    """The one-line error for a run folder deleted or replaced while a run was using it."""
    return RunError(f"{path} was deleted or replaced while this run was using it, so the run can "
                    "neither go on nor be resumed from it; start the run again (adding "
                    "--overwrite to replace the files it already wrote beside it)")


def disk_error(path: Path, err: OSError) -> DiskError:
    """The one-line error for a write that the disk refused."""
    return DiskError(path, err.strerror or type(err).__name__)


@contextlib.contextmanager
def writing(path: Path):
    """Yields a temporary path to write; renames it over `path` on success, removes it on failure.

    Disk errors (full, read-only, quota) become one-line RunErrors."""
    part = part_path(path)
    try:
        part.unlink(missing_ok=True)  # a stale one (or a link planted there), never its target
        os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
        yield part
        os.replace(part, path)
    except OSError as err:
        part.unlink(missing_ok=True)
        if err.errno in DISK_ERRORS:
            raise disk_error(path, err) from None
        raise
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """Writes a file atomically and durably (its folder made if missing)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with writing(path) as part, open(part, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: Path, data) -> None:
    """Writes JSON atomically: a temporary file, fsynced, then renamed over the old one."""
    write_bytes(path, json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8"))


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (or would, once written)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_writable(folder: Path) -> None:
    """Checks that a folder takes files, or that it could be made where it is, without making
    it (a run makes its folders when it first writes); else a one-line RunError."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != folder:
        if not existing.is_dir():
            raise RunError(f"cannot write to {folder}: part of that path is a file, not a "
                           f"folder ({existing}); choose another output path")
        if not os.access(existing, os.W_OK | os.X_OK):
            reason = ("Read-only file system" if os.statvfs(existing).f_flag & os.ST_RDONLY
                      else "Permission denied")
            raise RunError(f"cannot write to {folder} ({reason} in {existing}); choose another "
                           "output path")
        return
    try:
        probe = folder / f".music2video.{os.getpid()}.probe"
        probe.unlink(missing_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        probe.unlink()
    except (FileExistsError, NotADirectoryError):
        raise RunError(f"cannot write to {folder}: part of that path is a file, not a folder; "
                       "choose another output path") from None
    except OSError as err:
        raise RunError(f"cannot write to {folder} ({err.strerror}); choose another output "
                       "path") from None
