"""Files written whole or not at all: a temporary name beside the final one, fsynced, then
renamed into place; a write the disk refuses becomes one line that says what to do."""

import contextlib
import errno
import json
import os
from pathlib import Path

from .errors import UserError


def part_path(path: Path) -> Path:
    """The temporary name a file is written under until it is complete.

    It carries the process id: an ffmpeg orphaned by a killed run may still be finishing its
    own temporary file while a resumed run writes the same chunk."""
    return path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")


CACHE_ENV = "MUSIC2VIDEO_CACHE"  # this machine's cache folder (default $XDG_CACHE_HOME/music2video)


def cache_folder() -> Path:
    """$MUSIC2VIDEO_CACHE, else $XDG_CACHE_HOME/music2video, else ~/.cache/music2video."""
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        folder = Path(root) / "music2video"
    return Path(folder)


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO, errno.EFBIG)


class RunError(UserError, RuntimeError):
    """A file or run folder that cannot be used as asked; str() says why and what to do."""


def disk_error(path: Path, err: OSError) -> RunError:
    """The one-line RunError for a write that the disk refused."""
    reason = err.strerror or type(err).__name__
    return RunError(f"cannot write {path} ({reason}); free some space or fix the folder's "
                    "permissions, then run the same command again to resume")


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
    """Makes a folder (and its parents) and checks it takes files, or raises a one-line RunError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
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
