"""Tests for music2video.models.download against a local HTTP server on 127.0.0.1."""

import hashlib
import random
import socket
import time
from http.server import BaseHTTPRequestHandler
from types import SimpleNamespace

import pytest
from helpers import serve

from music2video.models.download import DownloadError, download, sha256sum

PAYLOAD = random.Random(0).randbytes(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
FIX = "connect to the internet and run again, or put the file there by hand"


def make_handler(state):
    """A request handler serving state.payload with Range support and switchable misbehaviours."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            state.requests.append(dict(self.headers))
            if state.not_found:
                self.send_error(404)
                return
            start, size = self.range_start(), len(state.payload)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.send_header("Content-Length", str(size - start))
            self.end_headers()
            body = state.payload[start:]
            if state.cut_after is not None:  # first request only: send part of it and hang up
                body, state.cut_after = body[:state.cut_after], None
            self.wfile.write(body)

        def range_start(self):
            header = self.headers.get("Range")
            if header is None or state.ignore_range:
                return 0
            return int(header.removeprefix("bytes=").rstrip("-"))

        def log_message(self, *args):
            pass

    return Handler


def misbehaving(path: str):
    """A served file whose server's state a test tweaks to make it misbehave."""
    state = SimpleNamespace(payload=PAYLOAD, requests=[], cut_after=None,
                            ignore_range=False, not_found=False)
    with serve(make_handler(state)) as url:
        state.url = f"{url}{path}"
        yield state


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1; tweak its state to make it misbehave."""
    yield from misbehaving("/Wav2CLIP.pt")


@pytest.fixture
def dest(tmp_path):
    """Where the weight file should land, in a folder that does not exist yet."""
    return tmp_path / "checkpoints" / "Wav2CLIP.pt"


def part_of(dest):
    return dest.with_name(dest.name + ".part")


def assert_one_line_with_fix(err, dest, url):
    """One line that names the file and its folder, then the fix; the URL is in its failures."""
    text = str(err)
    assert "\n" not in text
    assert text.startswith(f"cannot download {dest.name} into {dest.parent} (")
    assert text.endswith(FIX) and url in [tried for tried, _ in err.failures]


def test_sha256sum_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(PAYLOAD * 4)  # more than one 1 MiB chunk
    assert sha256sum(path) == hashlib.sha256(PAYLOAD * 4).hexdigest()


def test_plain_download(server, dest):
    assert download(server.url, dest, sha256=DIGEST, quiet=True) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not part_of(dest).exists()
    assert sha256sum(dest) == DIGEST
    assert len(server.requests) == 1
    assert "Range" not in server.requests[0]
    assert server.requests[0]["User-Agent"].startswith("music2video/")


def test_resume_after_cut_connection(server, dest):
    server.cut_after = 100_000
    with pytest.raises(DownloadError, match="connection cut") as info:
        download(server.url, dest, quiet=True, retries=0)
    assert_one_line_with_fix(info.value, dest, server.url)
    assert not dest.exists()
    assert part_of(dest).stat().st_size == 100_000

    download(server.url, dest, sha256=DIGEST, quiet=True, retries=0)
    assert server.requests[-1]["Range"] == "bytes=100000-"
    assert dest.read_bytes() == PAYLOAD
    assert not part_of(dest).exists()


def test_retries_resume_within_one_call(server, dest):
    server.cut_after = 100_000
    download(server.url, dest, sha256=DIGEST, quiet=True, retries=1)
    assert [r.get("Range") for r in server.requests] == [None, "bytes=100000-"]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, dest):
    server.ignore_range = True
    dest.parent.mkdir(parents=True)
    part_of(dest).write_bytes(b"x" * 1000)  # stale bytes that must not be kept
    download(server.url, dest, quiet=True, retries=0)
    assert server.requests[0]["Range"] == "bytes=1000-"
    assert dest.read_bytes() == PAYLOAD


def test_part_too_long_restarts_from_zero(server, dest):
    dest.parent.mkdir(parents=True)
    part_of(dest).write_bytes(b"x" * (len(PAYLOAD) + 10))  # server answers 416
    download(server.url, dest, quiet=True, retries=0)
    assert [r.get("Range") for r in server.requests] == [f"bytes={len(PAYLOAD) + 10}-", None]
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch(server, dest):
    with pytest.raises(DownloadError, match="checksum did not match") as info:
        download(server.url, dest, sha256="0" * 64, quiet=True)
    assert "0" * 12 in str(info.value) and DIGEST[:12] in str(info.value)
    assert_one_line_with_fix(info.value, dest, server.url)
    assert not dest.exists()
    assert not part_of(dest).exists()


def test_verify_failure(server, dest):
    def verify(path):
        raise ValueError("not a torch checkpoint")

    with pytest.raises(DownloadError, match="not a torch checkpoint") as info:
        download(server.url, dest, verify=verify, quiet=True)
    assert_one_line_with_fix(info.value, dest, server.url)
    assert not dest.exists()
    assert not part_of(dest).exists()


def test_dest_appears_only_once_verified(server, dest):
    seen = []

    def verify(path):
        seen.append((path, dest.exists(), path.read_bytes() == PAYLOAD))

    download(server.url, dest, sha256=DIGEST, verify=verify, quiet=True)
    assert seen == [(part_of(dest), False, True)]
    assert dest.read_bytes() == PAYLOAD


def test_http_404(server, dest):
    server.not_found = True
    with pytest.raises(DownloadError, match="HTTP Error 404") as info:
        download(server.url, dest, quiet=True)
    assert_one_line_with_fix(info.value, dest, server.url)
    assert len(server.requests) == 1  # not retried
    assert not dest.exists() and not part_of(dest).exists()


def test_offline_fails_fast(dest):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/Wav2CLIP.pt"
    started = time.monotonic()
    with pytest.raises(DownloadError, match="refused") as info:
        download(url, dest, quiet=True)
    assert time.monotonic() - started < 5
    assert_one_line_with_fix(info.value, dest, url)
    assert not dest.exists() and not part_of(dest).exists()


def test_silent_server_times_out(dest):
    with socket.socket() as sock:  # accepts connections in the backlog, never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/Wav2CLIP.pt"
        started = time.monotonic()
        with pytest.raises(DownloadError, match="timed out") as info:
            download(url, dest, quiet=True, timeout=0.3)
        assert time.monotonic() - started < 5
    assert_one_line_with_fix(info.value, dest, url)


# Several URLs for one file (mirrors), tried in order

@pytest.fixture
def mirror():
    """A second server with the same file, and its own misbehaviours."""
    yield from misbehaving("/mirror/Wav2CLIP.pt")


def closed_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/Wav2CLIP.pt"


def test_urls_are_tried_in_order(server, mirror, dest):
    server.not_found = True
    dead = closed_url()
    assert download([server.url, dead, mirror.url], dest, sha256=DIGEST, quiet=True) == dest
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 1 and len(mirror.requests) == 1
    assert not part_of(dest).exists()


def test_the_first_url_that_works_is_used(server, mirror, dest):
    download([server.url, mirror.url], dest, sha256=DIGEST, quiet=True)
    assert (len(server.requests), len(mirror.requests)) == (1, 0)


def test_error_names_every_url_tried(server, mirror, dest):
    server.not_found = True
    mirror.payload = b"<html>a login page</html>"
    dead = closed_url()
    with pytest.raises(DownloadError) as info:
        download([server.url, dead, mirror.url], dest, sha256=DIGEST, quiet=True)
    text, failures = str(info.value), dict(info.value.failures)
    assert "\n" not in text and len(text) < 300
    assert text.startswith(f"cannot download {dest.name} into {dest.parent} (HTTP Error 404")
    assert "and 2 more source(s)" in text and text.endswith(FIX)
    assert list(failures) == [server.url, dead, mirror.url]
    assert failures[server.url].startswith("HTTP Error 404") and "refused" in failures[dead]
    assert failures[mirror.url].startswith("checksum did not match")
    assert not dest.exists() and not part_of(dest).exists()


def test_a_mirror_that_fails_its_check_passes_to_the_next(server, mirror, dest):
    server.payload = b"not the weights" * 100
    checked = []

    def verify(path):
        checked.append(path.read_bytes()[:15])
        if path.read_bytes() != PAYLOAD:
            raise ValueError("not a Wav2CLIP checkpoint")

    download([server.url, mirror.url], dest, verify=verify, quiet=True)
    assert checked == [b"not the weights", PAYLOAD[:15]]
    assert dest.read_bytes() == PAYLOAD


def test_bytes_of_two_sources_are_never_spliced(server, mirror, dest):
    server.cut_after = 100_000  # the first source hangs up for good
    server.payload = bytes(len(PAYLOAD))  # and would have served something else
    download([server.url, mirror.url], dest, quiet=True, retries=0)
    assert "Range" not in mirror.requests[0]  # the next source starts from byte 0
    assert dest.read_bytes() == PAYLOAD
