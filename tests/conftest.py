"""Shared fixtures: tiny random-weight models in the real files' formats, and small songs."""

from pathlib import Path

import pytest

from music2video import demo, tiny

SR = 44100


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """The four files `python -m music2video.tiny DIR` writes."""
    return tiny.write_all(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def model_flags(tiny_models) -> list[str]:
    """The generate flags that select the tiny models, as CI and the README use them."""
    return ["-conf", str(tiny_models["vqgan_config"]), "-ckpt", str(tiny_models["vqgan_checkpoint"]),
            "-m", str(tiny_models["clip"]), "--wav2clip_checkpoint", str(tiny_models["wav2clip"])]


@pytest.fixture(scope="session")
def short_song(tmp_path_factory) -> Path:
    """A 10-second synthesised song at 120 BPM, as mp3."""
    path = tmp_path_factory.mktemp("song") / "short song.mp3"
    return demo.encode_audio(demo.tonal_song(10.0, 120, SR), SR, path)
