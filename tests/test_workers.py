"""Sections on workers: the video depends on the sections and the seed, never on who rendered them.

These tests start Ray. Ray binds and connects over the machine's own address unless the network
has nothing but loopback, so they run only inside a loopback-only network namespace, as CI runs
the suite: unshare -n sh -c 'ip link set lo up && exec python -m pytest -q tests'."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, decoded_frames, run_script, video_stats, write_lyrics

from music2video import demo

FPS = 30
LYRICS = ["00:03,a lighthouse", "00:09,a field of sunflowers"]


def loopback_only() -> bool:
    """Whether this process's network namespace has no interface but loopback."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]  # two header lines
    return [line.split(":")[0].strip() for line in lines] == ["lo"]


pytestmark = pytest.mark.skipif(
    not loopback_only() and os.environ.get("MUSIC2VIDEO_RAY_TESTS") != "1",
    reason="Ray tests run in a loopback-only network namespace: "
           "unshare -n sh -c 'ip link set lo up && exec python -m pytest -q tests'")


@pytest.fixture(scope="module")
def two_part_song(tmp_path_factory) -> Path:
    """A 16-second song whose second half changes tempo and key (so sections cut there)."""
    import numpy as np

    sr = 22050
    song = np.concatenate([demo.tonal_song(8.0, 120, sr),
                           demo.tonal_song(8.0, 90, sr, start=0.0, seed=3)])
    return demo.encode_audio(song.astype("float32"), sr, tmp_path_factory.mktemp("s") / "two.mp3")


@pytest.fixture(scope="module")
def lyrics_file(tmp_path_factory) -> Path:
    return write_lyrics(tmp_path_factory.mktemp("lyr") / "two.csv", LYRICS)


def args_for(out: str, song: Path, lyrics: Path, model_flags, *extra) -> list[str]:
    """A small generate command with three sections."""
    return ["-vid", "-o", out, "-ap", str(song), "-lyr", str(lyrics), "-ips", "3", "-s", "64",
            "64", "-cuts", "2", "-sd", "11", "--sections", "3", "--warmup", "3", "-se", "0",
            "--precision", "fp32", *model_flags, *extra]


@pytest.fixture(scope="module")
def in_process(tmp_path_factory, two_part_song, lyrics_file, model_flags) -> dict:
    """--sections 3 rendered by one worker in this process: the frames to compare with."""
    cwd = tmp_path_factory.mktemp("one")
    result = run_script("generate.py", args_for("o/v.png", two_part_song, lyrics_file,
                                                model_flags), cwd)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((cwd / "o" / "v" / "manifest.json").read_text())
    return {"cwd": cwd, "video": cwd / "o" / "v.mp4", "manifest": manifest,
            "frames": decoded_frames(cwd / "o" / "v.mp4")}


def test_three_sections_tile_the_song_on_segment_cuts(in_process):
    manifest = in_process["manifest"]
    sections = manifest["sections"]
    assert len(sections) == 3
    assert sections[0][0] == 0 and sections[-1][1] == len(manifest["segments"]) - 1
    stats = video_stats(in_process["video"])
    assert stats["frames"] == manifest["segments"][-1]["frame_end"]
    assert abs(stats["frames"] / FPS - stats["audio_seconds"]) <= 1 / FPS


def test_two_ray_workers_give_the_same_frames(in_process, tmp_path, two_part_song, lyrics_file,
                                              model_flags):
    args = args_for("o/v.png", two_part_song, lyrics_file, model_flags, "--workers", "2")
    result = run_script("generate.py", args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert decoded_frames(tmp_path / "o" / "v.mp4") == in_process["frames"]
    manifest = json.loads((tmp_path / "o" / "v" / "manifest.json").read_text())
    assert manifest["sections"] == in_process["manifest"]["sections"]


def ray_workers() -> list[int]:
    """Pids of Ray worker processes rendering a section right now."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::render_task"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def journal(run_dir: Path) -> list[int]:
    """The finished segments the run folder records, in the order written."""
    path = run_dir / "progress.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["segment"] for line in path.read_text().splitlines()
            if line.endswith("}")]


def start(cwd: Path, args: list[str]) -> subprocess.Popen:
    """generate.py in the background."""
    return subprocess.Popen([sys.executable, str(REPO / "generate.py"), *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(check, proc: subprocess.Popen, seconds: float = 300):
    """Polls check() until it returns something truthy while proc runs."""
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting: {proc.communicate(timeout=60)}")


def test_a_killed_worker_costs_at_most_its_segment(in_process, tmp_path, two_part_song,
                                                   lyrics_file, model_flags):
    args = args_for("o/v.png", two_part_song, lyrics_file, model_flags, "--workers", "2")
    proc = start(tmp_path, args)
    run_dir = tmp_path / "o" / "v"
    wait_until(lambda: len(journal(run_dir)) >= 2 and ray_workers(), proc)
    victim = ray_workers()[0]
    os.kill(victim, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    written = journal(run_dir)
    assert sorted(set(written)) == list(range(len(in_process["manifest"]["segments"])))
    assert decoded_frames(tmp_path / "o" / "v.mp4") == in_process["frames"]


def test_a_killed_driver_resumes_with_another_worker_count(in_process, tmp_path, two_part_song,
                                                           lyrics_file, model_flags):
    args = args_for("o/v.png", two_part_song, lyrics_file, model_flags)
    proc = start(tmp_path, [*args, "--workers", "2"])
    run_dir = tmp_path / "o" / "v"
    wait_until(lambda: len(journal(run_dir)) >= 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    result = run_script("generate.py", [*args, "--workers", "1"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout + result.stderr
    assert decoded_frames(tmp_path / "o" / "v.mp4") == in_process["frames"]


def test_a_batch_with_a_corrupt_song_finishes_the_others(tmp_path, short_song, model_flags):
    songs = tmp_path / "album"
    songs.mkdir()
    (songs / "one.mp3").write_bytes(short_song.read_bytes())
    (songs / "two.mp3").write_bytes(short_song.read_bytes())
    (songs / "bad.mp3").write_bytes(b"not audio at all")
    args = ["-ap", str(songs), "-o", "videos", "-ips", "1", "-s", "64", "64", "-cuts", "2",
            "-sd", "2", "--workers", "2", "-q", *model_flags]
    result = run_script("generate.py", args, tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "bad.mp3" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "videos").glob("*.mp4")) == ["one.mp4", "two.mp4"]
    for name in ("one", "two"):
        stats = video_stats(tmp_path / "videos" / f"{name}.mp4")
        assert abs(stats["frames"] / FPS - stats["audio_seconds"]) <= 1 / FPS


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Ray cluster started as users start one (`ray start --head`), then stopped."""
    import shutil
    import socket

    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port",
                    str(port), "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard",
                    "false", "--disable-usage-stats"], env=env, check=True, capture_output=True,
                   timeout=120)
    try:
        yield {"address": f"127.0.0.1:{port}", "env": env}
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_a_cluster_renders_the_same_frames(in_process, cluster, tmp_path, two_part_song,
                                           lyrics_file, model_flags):
    args = args_for("o/v.png", two_part_song, lyrics_file, model_flags, "--ray",
                    cluster["address"])
    result = run_script("generate.py", args, tmp_path, env=cluster["env"])
    assert result.returncode == 0, result.stderr
    assert decoded_frames(tmp_path / "o" / "v.mp4") == in_process["frames"]


def test_an_unreachable_cluster_is_one_line(tmp_path, short_song, model_flags):
    args = ["-ap", str(short_song), "-o", "o/v.png", "-s", "64", "64", "-ips", "1",
            "--ray", "127.0.0.1:9", *model_flags]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    result = run_script("generate.py", args, tmp_path, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "127.0.0.1:9" in errors[0], result.stderr


def test_the_bench_times_rays_cost_per_segment():
    from music2video import bench

    figure = bench.ray_overhead(64, segments=5)
    assert figure["segments"] == 5 and figure["ms_per_segment"] > 0
    assert figure["state_mb"] > 0 and figure["chunk_kb"] > 0
