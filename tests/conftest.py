"""Shared fixtures: tiny random-weight models in the real files' formats, and small songs."""

import os

# Idle OpenMP threads sleep instead of spinning: the tests run scripts in subprocesses beside
# the test process on a 2-core machine, and spinning threads starve each other.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import pytest
from helpers import serve, write_lyrics

from music2video.testing import demo, tiny

SR = 44100


def pytest_collection_modifyitems(config, items):
    """Skips the tests marked requires_cuda where no CUDA GPU is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "requires_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def machine_cache(tmp_path_factory):
    """Keeps the tool's per-user folder (weights, the precision timing) out of the user's home,
    and every weight download on a local port where nothing listens: no test reaches a real
    host, and a missing weight file fails at once, as offline. Subprocesses inherit this."""
    folder = tmp_path_factory.mktemp("cache")
    values = {"MUSIC2VIDEO_CACHE": str(folder), "MUSIC2VIDEO_HOME": str(folder / "home"),
              "MUSIC2VIDEO_WEIGHTS_URL": "http://127.0.0.1:9/weights"}
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    yield folder
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """The four files `python -m music2video.tiny DIR` writes."""
    return tiny.write_all(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def model_flags(tiny_models) -> list[str]:
    """The generate flags that select the tiny models, as CI and the README use them."""
    return ["-conf", str(tiny_models["vqgan_config"]), "-ckpt", str(tiny_models["vqgan_checkpoint"]),
            "-m", str(tiny_models["clip"]), "--wav2clip_checkpoint", str(tiny_models["wav2clip"])]


@pytest.fixture(scope="module")
def lyrics_file(request, tmp_path_factory) -> Path:
    """The test module's LYRICS rows ('M:SS,text') as a CSV lyrics file in the seed's format."""
    return write_lyrics(tmp_path_factory.mktemp("lyr") / "song.csv", request.module.LYRICS)


@pytest.fixture(scope="session")
def short_song(tmp_path_factory) -> Path:
    """A 10-second synthesised song at 120 BPM, as mp3."""
    path = tmp_path_factory.mktemp("song") / "short song.mp3"
    return demo.encode_audio(demo.tonal_song(10.0, 120, SR), SR, path)


@pytest.fixture
def http_files():
    """A local HTTP server on 127.0.0.1: GET /NAME answers the bytes put in .files['/NAME']."""
    from http.server import BaseHTTPRequestHandler
    from types import SimpleNamespace

    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path.split("?")[0])
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with serve(Handler) as url:
        yield SimpleNamespace(url=url, files=files)


@pytest.fixture(scope="session")
def video_chunk(tmp_path_factory):
    """chunk(frames): the bytes of a real 16x16 H.264 chunk of that many frames."""
    import numpy as np

    from music2video.output.video import FrameWriter

    folder, made = tmp_path_factory.mktemp("chunks"), {}

    def chunk(frames: int) -> bytes:
        if frames not in made:
            with FrameWriter(folder / f"{frames}.mp4", 16, 16, 30) as writer:
                for k in range(frames):
                    writer.write(np.full((16, 16, 3), 8 * k, np.uint8))
            made[frames] = (folder / f"{frames}.mp4").read_bytes()
        return made[frames]

    return chunk
