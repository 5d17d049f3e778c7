"""Fetching weight files: resumable, checksummed, renamed into place only once complete."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from .. import __version__
from ..errors import UserError

CHUNK = 1 << 20  # 1 MiB, for reading the network and for hashing
REASON_CHARS = 80  # a failure's reason in the one-line error is cut to this
USER_AGENT = f"music2video/{__version__}"


class DownloadError(UserError, RuntimeError):
    """A weight file that could not be fetched; str() is one line naming the file, why, and the
    fix; `problem` is the part before the fix, and `failures` each (URL, reason) tried."""

    def __init__(self, problem: str, fix: str, failures: list[tuple[str, str]] = ()):
        super().__init__(f"{problem}; {fix}")
        self.problem, self.failures = problem, list(failures)


class _Cut(Exception):
    """The body ended early; the .part file is kept and the next try resumes it."""


class _Failed(Exception):
    """One URL did not give a sound file; str() is the reason."""


def sha256sum(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def download(urls: str | Sequence[str], dest: Path, sha256: str | None = None,
             verify: Callable[[Path], None] | None = None,
             quiet: bool = False, timeout: float = 15.0, retries: int = 2) -> Path:
    """Downloads dest from the first of `urls` that works, with a tqdm bar; returns dest.

    A partial download is resumed from the first URL. A URL that fails (HTTP error, no
    connection, cut too often, wrong checksum, failed check) passes to the next one, which starts
    afresh so that bytes of two sources are never spliced; the error names every URL tried."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = []
    for number, url in enumerate(urls):
        if number:
            part.unlink(missing_ok=True)
        try:
            _attempt(url, dest, part, sha256, verify, quiet, timeout, retries)
        except _Failed as failure:
            failures.append((url, str(failure)))
            continue
        os.replace(part, dest)
        return dest
    raise _error(dest, failures)


def _attempt(url: str, dest: Path, part: Path, sha256: str | None,
             verify: Callable[[Path], None] | None, quiet: bool, timeout: float,
             retries: int) -> None:
    """Fetches url into part (resuming up to `retries` times) and checks it; raises _Failed."""
    for attempt in range(retries + 1):
        try:
            _fetch(url, dest, part, quiet, timeout)
            break
        except _Cut as cut:
            if attempt == retries:
                raise _Failed(str(cut)) from None
            if not quiet:
                tqdm.write(f"{dest.name}: {cut}; resuming ({attempt + 1}/{retries})")
        except (OSError, http.client.HTTPException) as err:
            raise _Failed(_reason(err)) from None
    _check(part, sha256, verify)


def _fetch(url: str, dest: Path, part: Path, quiet: bool, timeout: float) -> None:
    """Fetches url into part, appending when the server honours a Range request."""
    have = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, have, timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code != 416 or not have:
            raise
        # 416: the part is complete or too long already; start again
        response = _open(url, 0, timeout)
    with response:
        start, total = _span(response)
        if start not in (0, have):
            part.unlink()
            raise _Cut(f"server resumed at byte {start}, not {have}")
        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=dest.name,
                   disable=quiet)
        with open(part, "ab" if start else "wb") as file, bar:
            finished = _copy(response, file, bar)
    size = part.stat().st_size
    if not finished or (total is not None and size < total):
        raise _Cut(f"connection cut after {_mb(size)}" + (f" of {_mb(total)}" if total else ""))


def _open(url: str, have: int, timeout: float) -> http.client.HTTPResponse:
    """Opens url, asking for the bytes from `have` onwards when have > 0."""
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _span(response: http.client.HTTPResponse) -> tuple[int, int | None]:
    """First byte offset and full file size (None when unknown) of a 200 or 206 response."""
    length = response.headers.get("Content-Length")
    if response.status != 206:
        return 0, int(length) if length else None
    span, _, size = response.headers.get("Content-Range", "").partition("/")
    start = int(span.split()[-1].split("-")[0])  # "bytes 100-299/300" -> 100
    if size.isdigit():
        return start, int(size)
    return start, start + int(length) if length else None


def _copy(response, file, bar: tqdm) -> bool:
    """Copies the body to file in 1 MiB chunks; False when the connection broke mid-body."""
    while True:
        try:
            chunk = response.read(CHUNK)
        except TimeoutError:
            raise  # a stalled server is not retried: it would multiply the wait
        except (OSError, http.client.HTTPException):
            return False
        if not chunk:
            return True
        file.write(chunk)
        bar.update(len(chunk))


def _check(part: Path, sha256: str | None, verify: Callable[[Path], None] | None) -> None:
    """Checks the finished part file; deletes it and raises _Failed if it is wrong."""
    if sha256 is not None:
        got = sha256sum(part)
        if got != sha256.lower():
            part.unlink()
            raise _Failed(f"checksum did not match (expected {sha256[:12]}, got {got[:12]})")
    if verify is not None:
        try:
            verify(part)
        except Exception as err:
            part.unlink(missing_ok=True)
            raise _Failed(_check_reason(part, err)) from None


def _error(dest: Path, failures: list[tuple[str, str]]) -> DownloadError:
    """The one-line DownloadError for dest: the first source's reason (and how many others
    failed), then the fix; every URL and reason stay in its `failures`."""
    reason = failures[0][1][:REASON_CHARS] if failures else "no source"
    others = f", and {len(failures) - 1} more source(s)" if len(failures) > 1 else ""
    return DownloadError(f"cannot download {dest.name} into {dest.parent} ({reason}{others})",
                         "connect to the internet and run again, or put the file there by hand",
                         failures)


def _check_reason(part: Path, err: BaseException) -> str:
    """Why a downloaded file failed its check, without its own path or the check's advice."""
    text = _reason(err)
    for lead in (f"{part}: ", f"{part} "):
        text = text.removeprefix(lead)
    return text.split("; ")[0]


def _reason(err: BaseException) -> str:
    """A short, one-line reason for an error: 'HTTP Error 404: Not Found', '[Errno 111] ...'."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        err = err.reason if isinstance(err.reason, BaseException) else Exception(err.reason)
    if isinstance(err, TimeoutError):
        return "timed out"
    return " ".join(str(err).split()) or type(err).__name__


def _mb(size: int) -> str:
    """A byte count in megabytes, as '1.2 MB'."""
    return f"{size / 1e6:.1f} MB"
