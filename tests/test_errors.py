"""The one UserError base: every public error class of the package derives from it, keeps its
old second base, and the command line prints any of them as one line."""

import importlib
import inspect
import pkgutil

import pytest

import music2video
from music2video import cli
from music2video.errors import UserError


def public_errors() -> dict[str, type]:
    """Every exception class the package defines under a public name, by module.name."""
    found = {}
    for info in pkgutil.walk_packages(music2video.__path__, "music2video."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException)
                    and value.__module__ == module.__name__ and not name.startswith("_")):
                found[f"{info.name}.{name}"] = value
    return found


def test_every_error_a_user_can_meet_derives_from_user_error():
    errors = public_errors()
    assert "music2video.output.sync.SyncError" in errors
    assert [name for name, cls in errors.items() if not issubclass(cls, UserError)] == []


@pytest.mark.parametrize("name, second", [
    ("music2video.song.audio.AudioError", ValueError),
    ("music2video.output.sync.SyncError", ValueError),
    ("music2video.files.RunError", RuntimeError),
    ("music2video.ffmpeg.VideoError", RuntimeError),
    ("music2video.models.networks.ModelError", RuntimeError),
])
def test_errors_keep_their_old_second_base(name, second):
    assert issubclass(public_errors()[name], second)


def test_the_command_line_prints_a_sync_error_as_one_line(monkeypatch, capsys, tmp_path):
    from music2video.driver import pipeline
    from music2video.output.sync import SyncError

    def fail(*args, **kwargs):
        raise SyncError("no onsets to measure; give a song with a beat")

    monkeypatch.setattr(pipeline, "generate", fail)
    song = tmp_path / "song.mp3"
    song.write_bytes(b"")
    code = cli.main("beats", ["-ap", str(song), "-o", str(tmp_path / "o.png")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert [line for line in err.splitlines() if "no onsets" in line] != []
