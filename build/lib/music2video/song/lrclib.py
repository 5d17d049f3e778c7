"""-lyr auto: the song's synced lyrics from LRCLIB, saved as an .lrc and reused.

Opt-in: nothing is requested unless the user asks for -lyr auto. The lookup is one GET of
`{base}/api/get` with artist_name, track_name, album_name (when known) and duration (whole
seconds), as LRCLIB documents it; the base URL is $MUSIC2VIDEO_LRCLIB_URL, else
https://lrclib.net. Artist, title and album come from the song's tags (mutagen), or from
--artist / --title, which win. The synced lyrics are written, atomically, as `<song stem>.lrc`
beside the song, or in the fallback folder the caller names when the song's folder cannot be
written (the CLI names the video's folder); a later run finds that file in either place and
sends no request (an .lrc of that name that the user put there is used the same way; names
given with --artist/--title then only warn that the saved file is used). Lyrics are saved only
once they parse and a line starts inside the song; a saved file (marked by its first line,
SAVED_MARK) that no longer fits the song is looked up again and replaced, never trusted.

Policy: every failure (no artist or title, offline, timeout, not found, instrumental, only
unsynced lyrics, a recording whose length differs by more than DURATION_TOLERANCE seconds,
an answer that is not LRCLIB's JSON, HTTP errors, lyrics that do not parse) is one
LyricsLookupError line. `find_lyrics` turns it into a warning and the run goes on with the
audio only, unless lyrics are required (--require_lyrics), when it stops the run.
"""

import http.client
import json
import os
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

from .. import __version__
from ..errors import UserError
from ..files import DiskError, writing
from .lyrics import LyricsError, drop_after, load_lyrics

DEFAULT_URL = "https://lrclib.net"
URL_VARIABLE = "MUSIC2VIDEO_LRCLIB_URL"
HOMEPAGE = "https://arxiv.org/abs/2201.03809"  # what the tool is, for LRCLIB's User-Agent rule
DURATION_TOLERANCE = 3.0  # seconds; LRCLIB itself matches /api/get within 2
TIMEOUT = 10.0  # seconds for the whole lookup
MAX_BYTES = 4 << 20  # an answer larger than this is not a lyrics record
FIX = "give -lyr FILE, or --artist and --title"
SAVED_MARK = "[re:music2video, from LRCLIB]"  # first line of a saved .lrc (LRC's creator tag)


class LyricsLookupError(UserError, RuntimeError):
    """A -lyr auto lookup that gave no usable lyrics; str() names the problem and the fix."""


def lrclib_url(base_url: str | None = None) -> str:
    """LRCLIB's address: base_url, else $MUSIC2VIDEO_LRCLIB_URL, else lrclib.net; checked."""
    base = (base_url or os.environ.get(URL_VARIABLE) or DEFAULT_URL).strip().rstrip("/")
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LyricsLookupError(f"LRCLIB address {base!r} is not an http(s) URL; set "
                                f"{URL_VARIABLE} like {DEFAULT_URL}, or unset it")
    return base


def user_agent() -> str:
    """The User-Agent LRCLIB asks clients to send: name, version and a link."""
    return f"music2video/{__version__} ({HOMEPAGE})"


def read_tags(path: Path) -> tuple[str | None, str | None, str | None]:
    """Artist, title and album from an audio file's tags (mp3, flac, ogg, m4a); None if missing."""
    import mutagen

    try:
        audio = mutagen.File(str(path), easy=True)
    except (mutagen.MutagenError, OSError, ValueError):
        return None, None, None
    tags = getattr(audio, "tags", None) or {}

    def first(*keys: str) -> str | None:
        for key in keys:
            try:
                values = tags.get(key) or []
            except (KeyError, ValueError):
                values = []
            for value in values if isinstance(values, list) else [values]:
                if str(value).strip():
                    return str(value).strip()
        return None

    return first("artist", "albumartist"), first("title"), first("album")


def lrc_name(song: Path) -> str:
    """The saved lyrics' file name: the song's stem with .lrc."""
    return f"{Path(song).stem}.lrc"


def saved_lyrics(song: Path, fallback_dir: Path, duration: float) -> Path | None:
    """An .lrc already there for the song, beside it or in the fallback folder: the user's own
    as it is; one this tool saved only if it still fits the song (else a warning: it will be
    replaced)."""
    for folder in (Path(song).parent, Path(fallback_dir)):
        path = folder / lrc_name(song)
        if not path.is_file():
            continue
        if not saved_here(path):
            return path
        try:
            check_lrc(path, duration, "the file")
            return path
        except LyricsLookupError as err:
            warnings.warn(f"{path}, saved earlier from LRCLIB, does not fit the song ({err}); "
                          "looking the lyrics up again to replace it")
    return None


def saved_here(path: Path) -> bool:
    """Whether an .lrc file is one this tool saved (its first line is SAVED_MARK)."""
    try:
        with open(path, "rb") as file:
            return file.readline(len(SAVED_MARK) + 8).rstrip(b"\r\n") == SAVED_MARK.encode()
    except OSError:
        return False


def check_lrc(path: Path, duration: float, name: str | None = None) -> None:
    """LyricsLookupError unless the LRC file parses and a line starts inside the song
    (`name` stands for the path in the message)."""
    try:
        with warnings.catch_warnings():  # the run itself warns about these lyrics
            warnings.simplefilter("ignore")
            drop_after(load_lyrics(path), duration, path)
    except LyricsError as err:
        raise LyricsLookupError(str(err).replace(str(path), name) if name else str(err)) from None


def _label(artist: str, title: str) -> str:
    """'artist - title' for messages."""
    return f"'{artist} - {title}'"


class _Deadline:
    """One time limit for a whole request: when it passes, every connection opened for it is
    shut down, so a read blocked on headers or body that drip in byte by byte returns."""

    def __init__(self, seconds: float):
        self.sockets: list[socket.socket] = []
        self.expired = False
        self.timer = threading.Timer(seconds, self._cut)
        self.timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        """Shuts the socket down at the deadline (at once when it has passed)."""
        self.sockets.append(sock)
        if self.expired:
            self._cut()

    def _cut(self) -> None:
        self.expired = True
        for sock in self.sockets:
            try:  # the plain socket's shutdown: for TLS too, so no SSL state is touched here
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()


class _WatchedHTTP(http.client.HTTPConnection):
    """An HTTP connection whose socket the request's _Deadline cuts."""

    def __init__(self, *args, deadline: _Deadline, **kwargs):
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    def connect(self):
        super().connect()
        self.deadline.watch(self.sock)


class _WatchedHTTPS(_WatchedHTTP, http.client.HTTPSConnection):
    """An HTTPS connection whose socket the request's _Deadline cuts."""


class _HTTPHandler(urllib.request.HTTPHandler):
    """urllib's http handler, on connections a _Deadline cuts."""

    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, req):
        return self.do_open(_WatchedHTTP, req, deadline=self.deadline)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    """urllib's https handler (certificates checked, as by default), on connections a
    _Deadline cuts."""

    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline, self.context = deadline, ssl.create_default_context()

    def https_open(self, req):
        return self.do_open(_WatchedHTTPS, req, deadline=self.deadline, context=self.context)


def _read(url: str, timeout: float) -> bytes:
    """The body of a GET, within `timeout` seconds for the whole request (connecting, the
    headers and the body), however slowly the server sends them; TimeoutError if not."""
    request = urllib.request.Request(url, headers={"User-Agent": user_agent(),
                                                   "Accept": "application/json"})
    with _Deadline(timeout) as deadline:
        opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline))
        try:
            with opener.open(request, timeout=timeout) as response:
                body = bytearray()
                while chunk := response.read1(1 << 16):
                    body += chunk
                    if len(body) > MAX_BYTES:
                        raise LyricsLookupError(f"the answer from {url} is over "
                                                f"{MAX_BYTES >> 20} MiB, not a lyrics record; "
                                                "give -lyr FILE")
        except (urllib.error.URLError, http.client.HTTPException, OSError):
            if deadline.expired:
                raise TimeoutError from None
            raise
        if deadline.expired:  # cut short: the body may be incomplete
            raise TimeoutError
        return bytes(body)


def query(artist: str, title: str, album: str | None, duration: float, *,
           base_url: str, timeout: float = TIMEOUT) -> dict:
    """LRCLIB's record for a track (GET /api/get), or LyricsLookupError."""
    query = {"artist_name": artist, "track_name": title}
    if album:
        query["album_name"] = album
    query["duration"] = str(round(duration))
    url = f"{base_url}/api/get?{urllib.parse.urlencode(query)}"
    what = _label(artist, title)
    try:
        body = _read(url, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise LyricsLookupError(f"LRCLIB has no lyrics for {what} ({round(duration)} s); "
                                    f"check the names or {FIX}") from None
        raise LyricsLookupError(f"LRCLIB at {base_url} answered HTTP {err.code} for {what}; "
                                f"try again later or give -lyr FILE") from None
    except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(err, TimeoutError) or isinstance(reason, TimeoutError):
            raise LyricsLookupError(f"LRCLIB at {base_url} did not answer within {timeout:g} s; "
                                    "try again later or give -lyr FILE") from None
        raise LyricsLookupError(f"cannot reach LRCLIB at {base_url} "
                                f"({reason or type(err).__name__}); check the network or give "
                                "-lyr FILE") from None
    try:
        record = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        record = None
    if not isinstance(record, dict):
        raise LyricsLookupError(f"LRCLIB at {base_url} answered something that is not a lyrics "
                                f"record for {what}; check {URL_VARIABLE} or give -lyr FILE")
    return record


def synced_text(record: dict, artist: str, title: str, duration: float) -> str:
    """The LRC text of an LRCLIB record for a song `duration` seconds long, or LyricsLookupError."""
    what = _label(artist, title)
    if record.get("instrumental"):
        raise LyricsLookupError(f"LRCLIB lists {what} as instrumental (no lyrics); "
                                "run without -lyr")
    found = record.get("duration")
    if isinstance(found, (int, float)) and abs(found - duration) > DURATION_TOLERANCE:
        raise LyricsLookupError(f"LRCLIB's {what} lasts {found:g} s but the song {duration:.1f} s "
                                f"(another recording); give -lyr FILE")
    text = record.get("syncedLyrics")
    if not isinstance(text, str) or not text.strip():
        raise LyricsLookupError(f"LRCLIB has no synced lyrics for {what} (only plain text or "
                                "none); give -lyr FILE with timestamps")
    return text if text.endswith("\n") else text + "\n"


def _save(text: str, path: Path, duration: float) -> Path:
    """Writes the lyrics atomically, marked as saved here, after checking they parse as LRC
    and fit the song; OSError if it cannot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path) as part:
        part.write_text(f"{SAVED_MARK}\n{text}", encoding="utf-8")
        try:
            check_lrc(part, duration, "the answer")
        except LyricsLookupError as err:
            raise LyricsLookupError(f"LRCLIB's lyrics are not valid LRC for this song ({err}); "
                                    "give -lyr FILE") from None
    return path


def save_lyrics(text: str, song: Path, fallback_dir: Path, duration: float) -> Path:
    """Saves LRC text as the song's .lrc: beside it, else in the fallback folder."""
    errors = []
    for folder in (Path(song).parent, Path(fallback_dir)):
        try:
            return _save(text, folder / lrc_name(song), duration)
        except OSError as err:
            errors.append(f"{folder}: {err.strerror or err}")
        except DiskError as err:
            errors.append(f"{folder}: {err.reason}")
    raise LyricsLookupError(f"cannot save the lyrics ({'; '.join(errors)}); make the song's "
                            "folder writable or give -lyr FILE")


def fetch_lyrics(song: Path, duration: float, artist: str | None = None,
                 title: str | None = None, album: str | None = None, *,
                 base_url: str | None = None, timeout: float = TIMEOUT,
                 save_dir_fallback: Path) -> Path:
    """The song's synced lyrics as an .lrc file: the saved one, else fetched from LRCLIB."""
    song = Path(song)
    saved = saved_lyrics(song, save_dir_fallback, duration)
    if saved is not None:
        if artist or title:
            warnings.warn(f"using the lyrics saved in {saved}; --artist/--title look them up "
                          "again only once that file is deleted")
        return saved
    tag_artist, tag_title, tag_album = read_tags(song)
    artist, title = artist or tag_artist, title or tag_title
    if (artist, title) == (tag_artist, tag_title):  # a tag album may not fit names given
        album = album or tag_album
    if not artist or not title:
        missing = " and ".join(n for n, v in (("artist", artist), ("title", title)) if not v)
        raise LyricsLookupError(f"{song} has no {missing} tag to look its lyrics up by; "
                                f"{FIX}")
    record = query(artist, title, album, duration, base_url=lrclib_url(base_url),
                    timeout=timeout)
    return save_lyrics(synced_text(record, artist, title, duration), song, save_dir_fallback,
                       duration)


def find_lyrics(song: Path, duration: float, artist: str | None = None,
                title: str | None = None, *, save_dir_fallback: Path, required: bool = False,
                timeout: float = TIMEOUT) -> Path | None:
    """fetch_lyrics for -lyr auto; a failure warns and gives None unless lyrics are required."""
    try:
        return fetch_lyrics(song, duration, artist, title, save_dir_fallback=save_dir_fallback,
                            timeout=timeout)
    except LyricsLookupError as err:
        if required:
            raise
        warnings.warn(f"{err}; going on with the audio only (--require_lyrics stops instead)")
        return None
