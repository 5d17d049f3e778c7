"""Helpers the tests share (fixtures live in conftest.py): running the scripts, reading videos
back, lyrics files and a local HTTP server."""

import contextlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_script(script: str, args: list[str], cwd: Path, **kwargs):
    """Runs one of the top-level scripts as a user would, returning the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, **kwargs)


def video_stats(path: Path) -> dict:
    """Frame count, video seconds, audio seconds and streams of a finished video."""
    from music2video import ffmpeg
    from music2video.song import audio

    frames, seconds = ffmpeg.count_frames(path)
    streams = ffmpeg.probe(path)
    audio_seconds = len(audio.load_audio(path, 16000)) / 16000
    return {"frames": frames, "seconds": seconds, "audio_seconds": audio_seconds, **streams}


def decoded_frames(path: Path) -> list[bytes]:
    """Every decoded RGB frame of a video."""
    from music2video import ffmpeg

    return [frame.tobytes() for frame in ffmpeg.read_frames(path)]


def command(song: Path, out, *extra: str, lyrics: Path | None = None, models=(), size: int = 64,
            cuts: int = 2, ips: float = 3, seed: int | None = None) -> list[str]:
    """The one builder of a small generate command line: the song, -o, a small picture with few
    cut-outs and steps, the (tiny) models' flags, then `extra` and the lyrics."""
    args = ["-ap", str(song), "-o", str(out), "-s", str(size), str(size), "-cuts", str(cuts),
            "-ips", str(ips), *(["-sd", str(seed)] if seed is not None else []), *models, *extra]
    return args + (["-lyr", str(lyrics)] if lyrics else [])


def write_lyrics(path: Path, rows: list[str]) -> Path:
    """A CSV lyrics file in the seed's format."""
    path.write_text("timestamp,text\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@contextlib.contextmanager
def serve(handler: type):
    """A threaded HTTP server on 127.0.0.1 with this handler class; yields its base URL."""
    import threading
    from http.server import ThreadingHTTPServer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
