"""-lyr auto against a local stand-in for LRCLIB on 127.0.0.1."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import REPO, serve

from music2video import __version__
from music2video.song import lrclib
from music2video.song.lyrics import load_lyrics
from music2video.testing import demo

SYNCED = "[00:01.00]first line\n[00:02.50]second line\n[00:04.00]\n[00:05.25]third line"
RECORD = {"id": 7, "trackName": "Kite", "artistName": "Demo Band", "albumName": "Skies",
          "duration": 30.0, "instrumental": False, "plainLyrics": "first line\nsecond line",
          "syncedLyrics": SYNCED}


@pytest.fixture
def lrclib_server():
    """A local LRCLIB: .answer = (status, body bytes, seconds to stall first); .requests logged."""
    requests, release = [], threading.Event()
    state = SimpleNamespace(answer=(200, json.dumps(RECORD).encode(), 0.0), requests=requests)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            requests.append({"path": url.path, "query": dict(urllib.parse.parse_qsl(url.query)),
                             "agent": self.headers.get("User-Agent")})
            status, body, stall = state.answer
            if stall:
                release.wait(stall)  # accepts the request, then says nothing
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with serve(Handler) as url:
        state.url = url
        try:
            yield state
        finally:
            release.set()


@pytest.fixture(scope="module")
def tagged_songs(tmp_path_factory) -> dict[str, Path]:
    """One second of sound as mp3, flac, ogg and m4a, each tagged Demo Band / Kite / Skies."""
    import mutagen

    folder = tmp_path_factory.mktemp("tagged")
    y = 0.1 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100)
    songs = {}
    for suffix in (".mp3", ".flac", ".ogg", ".m4a"):
        path = demo.encode_audio(y, 44100, folder / f"tagged{suffix}")
        audio = mutagen.File(str(path), easy=True)
        if audio.tags is None:
            audio.add_tags()
        audio["artist"], audio["title"], audio["album"] = "Demo Band", "Kite", "Skies"
        audio.save()
        songs[suffix] = path
    return songs


@pytest.fixture
def song(tmp_path) -> Path:
    """An untagged mp3 in a folder of its own."""
    path = tmp_path / "music" / "my song.mp3"
    path.parent.mkdir()
    y = 0.1 * np.sin(2 * np.pi * 220 * np.arange(44100) / 44100)
    return demo.encode_audio(y, 44100, path)


def fetch(song: Path, server, **kwargs) -> Path:
    """fetch_lyrics of a 30-second song against the local server, fallback in song/../run."""
    kwargs.setdefault("artist", "Demo Band")
    kwargs.setdefault("title", "Kite")
    return lrclib.fetch_lyrics(song, 30.2, base_url=server.url,
                               save_dir_fallback=song.parent.parent / "run", **kwargs)


def test_found_writes_lrc_beside_song_and_sends_documented_query(song, lrclib_server):
    path = fetch(song, lrclib_server, album="Skies")
    assert path == song.with_suffix(".lrc")
    assert path.read_text(encoding="utf-8") == f"{lrclib.SAVED_MARK}\n{SYNCED}\n"
    assert [(l.time, l.text) for l in load_lyrics(path)] == [
        (1.0, "first line"), (2.5, "second line"), (5.25, "third line")]
    (request,) = lrclib_server.requests
    assert request["path"] == "/api/get"
    assert request["query"] == {"artist_name": "Demo Band", "track_name": "Kite",
                                "album_name": "Skies", "duration": "30"}
    assert request["agent"].startswith(f"music2video/{__version__} (")
    assert not list(song.parent.glob(".*part*"))  # nothing half-written left


def test_saved_lrc_is_reused_without_a_request(song, lrclib_server):
    first = fetch(song, lrclib_server)
    lrclib_server.answer = (500, b"", 0.0)  # a second request would fail loudly
    assert fetch(song, lrclib_server) == first
    assert len(lrclib_server.requests) == 1


def test_lyrics_past_the_songs_end_are_not_saved(song, lrclib_server):
    late = "[00:40.00]after the end\n[00:45.00]long after"
    lrclib_server.answer = (200, json.dumps(RECORD | {"syncedLyrics": late}).encode(), 0)
    with pytest.raises(lrclib.LyricsLookupError, match="after the end of the audio") as err:
        fetch(song, lrclib_server)
    assert "part" not in str(err.value) and "-lyr" in str(err.value)
    assert sorted(p.name for p in song.parent.iterdir()) == [song.name]


def test_a_saved_lrc_that_no_longer_fits_is_looked_up_again_and_replaced(song, lrclib_server):
    saved = song.with_suffix(".lrc")  # as an earlier version saved it: every line past the end
    saved.write_text(f"{lrclib.SAVED_MARK}\n[00:40.00]after the end\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="saved earlier from LRCLIB, does not fit the song"):
        assert fetch(song, lrclib_server) == saved
    assert len(lrclib_server.requests) == 1
    assert [l.text for l in load_lyrics(saved)] == ["first line", "second line", "third line"]
    saved.write_text(f"{lrclib.SAVED_MARK}\nno tags, damaged\n", encoding="utf-8")
    lrclib_server.answer = (404, b"{}", 0)  # a failed lookup does not bring the bad file back
    with pytest.warns(UserWarning, match="does not fit"), \
            pytest.raises(lrclib.LyricsLookupError, match="no lyrics"):
        fetch(song, lrclib_server)


def test_the_users_own_lrc_is_trusted_as_it_is(song, lrclib_server):
    own = song.with_suffix(".lrc")
    own.write_text("[00:40.00]my words, after the end\n", encoding="utf-8")
    assert fetch(song, lrclib_server) == own
    assert own.read_text(encoding="utf-8") == "[00:40.00]my words, after the end\n"
    assert lrclib_server.requests == []


def test_existing_lrc_beside_song_or_in_run_folder_means_no_request(song, lrclib_server):
    own = song.with_suffix(".lrc")
    own.write_text("[00:03.00]my own words\n", encoding="utf-8")
    assert fetch(song, lrclib_server) == own
    own.unlink()
    run = song.parent.parent / "run"
    run.mkdir()
    (run / own.name).write_text("[00:03.00]saved earlier\n", encoding="utf-8")
    assert fetch(song, lrclib_server) == run / own.name
    assert lrclib_server.requests == []


@pytest.mark.parametrize("answer, words", [
    ((404, b'{"code":404,"name":"TrackNotFound","message":"Failed to find specified track"}', 0),
     "LRCLIB has no lyrics for 'Demo Band - Kite' (30 s)"),
    ((200, json.dumps(RECORD | {"instrumental": True, "syncedLyrics": None}).encode(), 0),
     "instrumental"),
    ((200, json.dumps(RECORD | {"syncedLyrics": None}).encode(), 0), "no synced lyrics"),
    ((200, json.dumps(RECORD | {"syncedLyrics": ""}).encode(), 0), "no synced lyrics"),
    ((200, json.dumps(RECORD | {"duration": 200.0}).encode(), 0),
     "lasts 200 s but the song 30.2 s"),
    ((200, b'{"id": 7, "syncedLyrics": "[00:01.00]cut sho', 0), "not a lyrics record"),
    ((200, b"<html>rate limited</html>", 0), "not a lyrics record"),
    ((200, b'["a list"]', 0), "not a lyrics record"),
    ((503, b"busy", 0), "answered HTTP 503"),
    ((200, json.dumps(RECORD | {"syncedLyrics": "no tags at all"}).encode(), 0), "not valid LRC"),
])
def test_failures_are_one_line_and_write_nothing(song, lrclib_server, answer, words):
    lrclib_server.answer = answer
    with pytest.raises(lrclib.LyricsLookupError) as err:
        fetch(song, lrclib_server)
    message = str(err.value)
    assert words in message and "\n" not in message
    assert "-lyr" in message  # the fix
    assert len(lrclib_server.requests) == 1
    assert sorted(p.name for p in song.parent.iterdir()) == [song.name]
    run = song.parent.parent / "run"
    assert not run.exists() or not any(run.iterdir())


def test_fetched_control_characters_never_reach_the_lyrics(song, lrclib_server):
    text = "[00:01.00]ring \x07the\fbell \x1b[5m🔔\n[00:02.00]second line"
    lrclib_server.answer = (200, json.dumps(RECORD | {"syncedLyrics": text}).encode(), 0)
    path = fetch(song, lrclib_server)
    with pytest.warns(UserWarning, match="control character"):
        found = load_lyrics(path)
    assert [l.text for l in found] == ["ring the bell [5m🔔", "second line"]


def test_duration_within_tolerance_is_accepted(song, lrclib_server):
    lrclib_server.answer = (200, json.dumps(RECORD | {"duration": 32.5}).encode(), 0)
    assert fetch(song, lrclib_server).is_file()


def test_server_that_hangs_times_out_quickly(song, lrclib_server):
    lrclib_server.answer = (200, b"", 30.0)
    start = time.monotonic()
    with pytest.raises(lrclib.LyricsLookupError, match=r"did not answer within 0\.5 s"):
        fetch(song, lrclib_server, timeout=0.5)
    assert time.monotonic() - start < 3.0
    assert len(lrclib_server.requests) == 1


@pytest.fixture
def dripping_server():
    """A local server that sends its status line and headers one byte every 0.05 s, for at most
    4 s (or until the client hangs up), then a whole answer: it stops by itself."""
    body = json.dumps(RECORD).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            head = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 80 + b"\r\n"
            end = time.monotonic() + 4.0
            try:
                for byte in head:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
                    if time.monotonic() > end:
                        break
                self.wfile.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:  # the client hung up
                pass

        def log_message(self, *args):
            pass

    with serve(Handler) as url:
        yield url


def test_headers_that_drip_in_are_bounded_by_the_one_deadline(song, dripping_server):
    start = time.monotonic()
    with pytest.raises(lrclib.LyricsLookupError, match=r"did not answer within 0\.5 s"):
        lrclib.fetch_lyrics(song, 30.2, "Demo Band", "Kite", base_url=dripping_server,
                            timeout=0.5, save_dir_fallback=song.parent / "run")
    assert time.monotonic() - start < 3.0
    assert sorted(p.name for p in song.parent.iterdir()) == [song.name]


def test_connection_refused_says_cannot_reach(song):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(lrclib.LyricsLookupError, match="cannot reach LRCLIB at http://127.0.0.1"):
        lrclib.fetch_lyrics(song, 30.0, "A", "B", base_url=f"http://127.0.0.1:{port}",
                            timeout=2.0, save_dir_fallback=song.parent / "run")


@pytest.mark.parametrize("suffix", [".mp3", ".flac", ".ogg", ".m4a"])
def test_read_tags(tagged_songs, suffix):
    assert lrclib.read_tags(tagged_songs[suffix]) == ("Demo Band", "Kite", "Skies")


def test_read_tags_of_untagged_or_unreadable_files(song, tmp_path):
    assert lrclib.read_tags(song) == (None, None, None)
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"\x00not audio" * 10)
    assert lrclib.read_tags(junk) == (None, None, None)


def test_lookup_by_tags(tagged_songs, tmp_path, lrclib_server):
    song = tmp_path / "album" / "tagged.mp3"
    song.parent.mkdir()
    shutil.copy(tagged_songs[".mp3"], song)
    path = lrclib.fetch_lyrics(song, 30.0, base_url=lrclib_server.url,
                               save_dir_fallback=tmp_path / "run")
    assert path == song.with_suffix(".lrc")
    assert lrclib_server.requests[0]["query"] == {"artist_name": "Demo Band", "track_name": "Kite",
                                                  "album_name": "Skies", "duration": "30"}


def test_given_names_win_over_tags_and_drop_the_tag_album(tagged_songs, tmp_path, lrclib_server):
    song = tmp_path / "tagged.mp3"
    shutil.copy(tagged_songs[".mp3"], song)
    lrclib.fetch_lyrics(song, 30.0, artist="Other", title="Song", base_url=lrclib_server.url,
                        save_dir_fallback=tmp_path / "run")
    assert lrclib_server.requests[0]["query"] == {"artist_name": "Other", "track_name": "Song",
                                                  "duration": "30"}


def test_no_names_known_asks_for_them_and_sends_nothing(song, lrclib_server):
    with pytest.raises(lrclib.LyricsLookupError,
                       match="no artist and title tag.*--artist and --title"):
        fetch(song, lrclib_server, artist=None, title=None)
    with pytest.raises(lrclib.LyricsLookupError, match="no title tag"):
        fetch(song, lrclib_server, title=None)
    assert lrclib_server.requests == []


def test_base_url_from_environment(song, lrclib_server, monkeypatch):
    monkeypatch.setenv(lrclib.URL_VARIABLE, lrclib_server.url + "/")
    path = lrclib.fetch_lyrics(song, 30.0, "Demo Band", "Kite", save_dir_fallback=song.parent)
    assert path.is_file() and len(lrclib_server.requests) == 1
    monkeypatch.setenv(lrclib.URL_VARIABLE, "lrclib.net")
    path.unlink()
    with pytest.raises(lrclib.LyricsLookupError, match="not an http"):
        lrclib.fetch_lyrics(song, 30.0, "Demo Band", "Kite", save_dir_fallback=song.parent)
    monkeypatch.delenv(lrclib.URL_VARIABLE)
    assert lrclib.lrclib_url() == "https://lrclib.net"


def _read_only_prefix(folder: Path) -> list[str]:
    """A command prefix under which folder is read-only (a private read-only bind mount as
    root, who ignores permissions; plain permissions otherwise)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare to make a folder read-only for root")
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, str(folder)]


@pytest.mark.slow
def test_read_only_song_folder_saves_in_run_folder(song, lrclib_server, tmp_path):
    run = tmp_path / "run"
    code = ("import sys; from pathlib import Path; from music2video.song import lrclib; "
            "print(lrclib.fetch_lyrics(Path(sys.argv[1]), 30.0, 'Demo Band', 'Kite', "
            "base_url=sys.argv[2], save_dir_fallback=Path(sys.argv[3])))")
    cmd = [*_read_only_prefix(song.parent), sys.executable, "-c", code, str(song),
           lrclib_server.url, str(run)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    finally:
        song.parent.chmod(0o755)
    if result.returncode and "mount" in result.stderr:
        pytest.skip(f"cannot make a read-only folder here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == run / "my song.lrc"
    assert (run / "my song.lrc").read_text(encoding="utf-8") == f"{lrclib.SAVED_MARK}\n{SYNCED}\n"
    assert not song.with_suffix(".lrc").exists()
    lrclib_server.answer = (500, b"", 0.0)
    assert fetch(song, lrclib_server) == run / "my song.lrc"  # found there next time
    assert len(lrclib_server.requests) == 1


def test_find_lyrics_warns_and_goes_on_unless_required(song, lrclib_server, monkeypatch):
    monkeypatch.setenv(lrclib.URL_VARIABLE, lrclib_server.url)
    lrclib_server.answer = (404, b"{}", 0)
    with pytest.warns(UserWarning, match="no lyrics for .*; going on with the audio only"):
        assert lrclib.find_lyrics(song, 30.0, "A", "B", save_dir_fallback=song.parent) is None
    with pytest.raises(lrclib.LyricsLookupError):
        lrclib.find_lyrics(song, 30.0, "A", "B", save_dir_fallback=song.parent, required=True)
    lrclib_server.answer = (200, json.dumps(RECORD).encode(), 0)
    assert lrclib.find_lyrics(song, 30.0, "A", "B", save_dir_fallback=song.parent) == \
        song.with_suffix(".lrc")


@pytest.mark.slow
def test_generate_with_lyr_auto_saves_uses_and_then_reuses_the_lrc(tmp_path, lrclib_server,
                                                                   short_song, model_flags):
    """The whole command: tags → LRCLIB → <song>.lrc beside the song → lyric goals; the second
    run reads the saved file and sends nothing."""
    import mutagen
    from helpers import run_script

    song = tmp_path / "kite.mp3"
    shutil.copy(short_song, song)
    tags = mutagen.File(str(song), easy=True)
    if tags.tags is None:
        tags.add_tags()
    tags["artist"], tags["title"] = "Demo Band", "Kite"
    tags.save()
    lrclib_server.answer = (200, json.dumps({**RECORD, "duration": 10.0}).encode(), 0.0)
    env = {**os.environ, lrclib.URL_VARIABLE: lrclib_server.url}
    args = ["-ap", str(song), "-lyr", "auto", "-o", "o/v.png", "-s", "64", "64", "-cuts", "2",
            "-ips", "1", "-sd", "1", "-q", *model_flags]
    first = run_script("generate.py", args, tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert len(lrclib_server.requests) == 1
    assert lrclib_server.requests[0]["query"]["artist_name"] == "Demo Band"
    saved = tmp_path / "kite.lrc"
    assert [l.text for l in load_lyrics(saved)] == ["first line", "second line", "third line"]
    manifest = json.loads((tmp_path / "o" / "v" / "manifest.json").read_text())
    texts = [g["text"] for s in manifest["segments"] for g in s["goals"] if g["kind"] == "text"]
    assert sorted(texts) == ["first line", "second line", "third line"]
    again = run_script("generate.py", [*args, "-o", "p/v.png"], tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert len(lrclib_server.requests) == 1


@pytest.mark.slow
def test_generate_with_lyr_auto_goes_on_without_lyrics_when_not_found(tmp_path, lrclib_server,
                                                                     short_song, model_flags):
    from helpers import run_script

    lrclib_server.answer = (404, b'{"code": 404, "name": "TrackNotFound"}', 0.0)
    env = {**os.environ, lrclib.URL_VARIABLE: lrclib_server.url}
    args = ["-ap", str(short_song), "-lyr", "auto", "--artist", "Nobody", "--title", "Nothing",
            "-o", "o/v.png", "-s", "64", "64", "-cuts", "2", "-ips", "1", "-q", *model_flags]
    result = run_script("generate.py", args, tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "LRCLIB" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: "), result.stderr
    assert "going on with the audio only" in warned[0]
    required = run_script("generate.py", [*args, "--require_lyrics", "-o", "p/v.png"], tmp_path,
                          env=env)
    assert required.returncode == 1 and "Traceback" not in required.stderr
    assert len([l for l in required.stderr.splitlines() if "error" in l]) == 1
