"""The installable package: the wheel's commands, python -m, --version, a torch-free --help,
and runs from any folder that write only what was asked for."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO

from music2video import __version__, cli


def test_python_dash_m_prints_the_version():
    done = subprocess.run([sys.executable, "-m", "music2video", "--version"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, f"music2video {__version__}")


def test_help_is_grouped_and_loads_neither_torch_nor_numpy():
    code = ("import sys\nfrom music2video.cli import run\nsys.argv = ['music2video', '--help']\n"
            "try:\n    run()\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'numpy' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.stderr.split() == ["False", "False"], done.stderr
    groups = [line for line in done.stdout.splitlines() if line.endswith(":") and not line[0].isspace()]
    assert groups == ["options:", "input:", "lyrics:", "prompts and style:", "models:",
                      "optimisation:", "motion and zoom:", "video and outputs:",
                      "devices, sections and workers:", "run control:", "examples:",
                      "the seed's commands work as they did:"]
    assert "(default: None)" not in done.stdout and "(default: False)" not in done.stdout


def test_every_flag_shows_at_most_one_default():
    for mode in ("beats", "interpolate", None):
        parser = cli.get_parser(mode)
        formatter = parser._get_formatter()
        for action in parser._actions:
            shown = formatter._expand_help(action) if action.help else ""
            assert shown.count("default") <= 1, shown


def test_the_song_is_an_argument_and_interpolate_a_flag(tmp_path):
    song = tmp_path / "a.mp3"
    opts = cli.parse_options(None, [song, "--interpolate", "--blend"])
    assert opts.audio_prompt == (song,) and opts.mode == "interpolate" and opts.blend
    assert opts.iterations_per_second == 100  # the seed's interpolate default
    beats = cli.parse_options(None, [song, "-ap", tmp_path / "b.mp3"])
    assert beats.mode == "beats" and beats.audio_prompt == (song, tmp_path / "b.mp3")
    assert beats.iterations_per_second == 0 and beats.output is None
    seed = cli.parse_options("beats", ["-ap", song, "-o", "outputs/output.png"])
    assert seed.audio_prompt == (song,) and seed.output == Path("outputs/output.png")


@pytest.mark.parametrize("argv, expected", [
    ([], "give a song"),
    (["a.mp3", "--blend"], "--blend"),
    (["a.mp3", "--interpolate", "--lyric_beats", "2"], "--lyric_beats"),
])
def test_impossible_music2video_commands_are_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.parse_options(None, argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and expected in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_built_wheel_installs_the_commands(tmp_path):
    """pip wheel, then the wheel installed alone (its dependencies are this environment's):
    music2video, music2video-combine and music2video-download run from an empty folder."""
    wheels, site, empty = tmp_path / "wheels", tmp_path / "site", tmp_path / "empty"
    empty.mkdir()
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the code
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "outputs", "checkpoints", "tests"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(source)], check=True, timeout=600, capture_output=True)
    (wheel,) = wheels.glob("music2video-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   timeout=600, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}

    def command(name, *args):
        return subprocess.run([str(site / "bin" / name), *args], cwd=empty, env=env,
                              capture_output=True, text=True, timeout=300)

    version = command("music2video", "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"music2video {__version__}")
    assert "devices, sections and workers:" in command("music2video", "--help").stdout
    listing = command("music2video-download", "--list")
    assert listing.returncode == 0 and listing.stdout.startswith("weights folder: ")
    combine = command("music2video-combine", "--help")
    assert combine.returncode == 0 and combine.stdout.startswith("usage: music2video-combine ")
    imported = subprocess.run([sys.executable, "-c", "import music2video; print(music2video.__file__)"],
                              cwd=empty, env=env, capture_output=True, text=True, timeout=60)
    assert imported.stdout.startswith(str(site))  # the wheel's copy, not the checkout
    assert list(empty.iterdir()) == []


@pytest.mark.slow
def test_an_offline_first_run_fails_in_seconds_and_leaves_the_folder_empty(tmp_path, short_song):
    """No weights anywhere and no network (conftest's closed local port): one line, problem
    first and fix last, before the song is analysed; nothing made in the folder run from."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "MUSIC2VIDEO_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    env.pop("MUSIC2VIDEO_CHECKPOINTS", None)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "music2video", str(short_song)], cwd=empty,
                          env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    lines = [line for line in done.stderr.splitlines() if not line.startswith("warning:")]
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("music2video: error: cannot download vqgan_imagenet_f16_16384")
    assert lines[0].endswith("; connect to the internet, or give -conf and -ckpt")
    assert len(lines[0]) - len(str(tmp_path)) < 200
    assert elapsed < 60  # seconds, not the minutes an analysis of the song would take first
    assert list(empty.iterdir()) == [] and done.stdout == ""


@pytest.mark.slow
def test_a_run_from_another_folder_writes_only_its_outputs(tmp_path, short_song, model_flags):
    """generate.py run from an empty folder, -o elsewhere: the folder stays empty, and stdout
    stays clean for scripts (every human line is on stderr)."""
    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    done = subprocess.run([sys.executable, str(REPO / "generate.py"), "-ap", str(short_song),
                           "-o", str(out / "v.png"), "-s", "64", "64", "-cuts", "2", "-ips", "1",
                           "-sd", "1", *model_flags], cwd=empty, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert list(empty.iterdir()) == [] and done.stdout == ""
    assert (out / "v.mp4").is_file() and (out / "v" / "report.json").is_file()
