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

import numpy as np
import pytest
from helpers import REPO, command, decoded_frames, run_script, video_stats

from music2video.testing import demo

FPS = 30
LYRICS = ["00:03,a lighthouse", "00:09,a field of sunflowers"]


def loopback_only() -> bool:
    """Whether this process's network namespace has no interface but loopback."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]  # two header lines
    return [line.split(":")[0].strip() for line in lines] == ["lo"]


pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not loopback_only() and os.environ.get("MUSIC2VIDEO_RAY_TESTS") != "1",
    reason="Ray tests run in a loopback-only network namespace: "
           "unshare -n sh -c 'ip link set lo up && exec python -m pytest -q tests'")]


def two_parts(path: Path, half: float, second_bpm: float, seed: int) -> Path:
    """A song of two halves, 120 BPM then another tempo and key (so sections cut there)."""
    sr = 22050
    song = np.concatenate([demo.tonal_song(half, 120, sr),
                           demo.tonal_song(half, second_bpm, sr, start=0.0, seed=seed)])
    return demo.encode_audio(song.astype("float32"), sr, path)


@pytest.fixture(scope="module")
def two_part_song(tmp_path_factory) -> Path:
    """A 16-second song whose second half changes tempo and key."""
    return two_parts(tmp_path_factory.mktemp("s") / "two.mp3", 8.0, 90, 3)


def args_for(out: str, song: Path, lyrics: Path, model_flags, *extra) -> list[str]:
    """A small generate command with three sections."""
    return command(song, out, "-vid", "--sections", "3", "--warmup", "3", "-se", "0",
                   "--precision", "fp32", *extra, lyrics=lyrics, models=model_flags, seed=11)


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
    assert written_in_place(in_process["cwd"] / "o" / "v")


def test_two_ray_workers_give_the_same_frames(in_process, tmp_path, two_part_song, lyrics_file,
                                              model_flags):
    args = args_for("o/v.png", two_part_song, lyrics_file, model_flags, "--workers", "2")
    result = run_script("generate.py", args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert decoded_frames(tmp_path / "o" / "v.mp4") == in_process["frames"]
    manifest = json.loads((tmp_path / "o" / "v" / "manifest.json").read_text())
    assert manifest["sections"] == in_process["manifest"]["sections"]
    assert written_in_place(tmp_path / "o" / "v")  # the Ray workers see this machine's folder


def parent_of(pid: int) -> int | None:
    """A process's parent pid, or None once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def started_at(pid: int) -> str | None:
    """A process's start time (clock ticks since boot): with its pid, it names the process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def running(pid: int) -> bool:
    """Whether a process exists and has not exited (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except (OSError, IndexError):
        return False


def descendants(root: int) -> list[int]:
    """Pids of the processes below `root` in the process tree (its children, theirs, ...)."""
    parents = {int(e.name): parent_of(int(e.name)) for e in Path("/proc").iterdir()
               if e.name.isdigit()}
    found, frontier = [], {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier}
        found += sorted(frontier)
    return found


def ray_workers(root: int) -> list[int]:
    """Pids of the Ray workers (actors of scheduler.Worker) under `root`: the ones this test's
    own command started, through the Ray instance it started itself, never anyone else's."""
    pids = []
    for pid in descendants(root):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::Worker"):
                pids.append(pid)
        except OSError:
            pass
    return pids


def entries(run_dir: Path) -> list[dict]:
    """The run folder's journal lines (whole ones), in the order written."""
    path = run_dir / "progress.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def written_in_place(run_dir: Path) -> bool:
    """Whether every chunk was encoded into the run folder by its worker (renamed there, not
    sent as bytes and written again), and no temporary chunk is left."""
    sent = [entry["chunk_sent"] for entry in entries(run_dir) if "chunk_sent" in entry]
    return bool(sent) and not any(sent) and not list(run_dir.glob(".*.part*"))


def journal(run_dir: Path) -> list[int]:
    """The finished segments the run folder records, in the order written."""
    return [entry["segment"] for entry in entries(run_dir)]


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
    victim = wait_until(lambda: len(journal(run_dir)) >= 2 and ray_workers(proc.pid), proc)[0]
    os.kill(victim, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    written = journal(run_dir)
    assert sorted(set(written)) == list(range(len(in_process["manifest"]["segments"])))
    assert decoded_frames(tmp_path / "o" / "v.mp4") == in_process["frames"]
    assert written_in_place(run_dir)  # the dead worker's unfinished chunk is not left behind


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
    assert written_in_place(run_dir)


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


def stop_tree(proc: subprocess.Popen, seconds: float = 60) -> None:
    """Stops a process this test started and everything under it: SIGTERM to it (`ray start
    --block` then stops the processes it started), then SIGKILL to those of its descendants,
    as they were just before, that are still the same processes; no other process is
    signalled."""
    below = [(pid, started_at(pid)) for pid in descendants(proc.pid)]
    proc.terminate()
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=seconds)
    for pid, start in below:
        if start is not None and started_at(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A Ray cluster on this machine started as users start one: `ray start --head`, then
    `ray start --address` for each other node, each kept in the foreground (--block) and started
    from a folder of its own (a node resolves relative paths from where it was started). Only
    these processes, and those started in their folders, are ever signalled."""

    def __init__(self, root: Path, cpus: int = 1):
        import shutil

        self.root, self.nodes = root, {}
        self.ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        self.add("head", cpus, "--head", "--port", str(port), "--include-dashboard", "false")

    def add(self, name: str, cpus: int = 1, *args: str, hide: Path | None = None
            ) -> subprocess.Popen:
        """Starts a node (joining the head unless it is the head) and waits until it is up.
        `hide`: a folder the node does not see (an empty tmpfs over it, in a mount namespace of
        its own), as a machine without the driver's storage."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / "ray-start.log"
        join = [] if args else ["--address", self.address]
        command = [self.ray, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus",
                   str(cpus), "--num-gpus", "0", "--disable-usage-stats", *join, *args]
        if hide is not None:
            command = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"',
                       str(hide), *command]
        with open(log, "w") as out:
            node = subprocess.Popen(command, cwd=folder, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes[name] = node
        deadline = time.time() + 120
        while "Ray runtime started" not in log.read_text(errors="replace"):
            assert node.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.2)
        return node

    def process(self, node: str, program: bytes) -> int:
        """The pid of a node's process running `program` (raylet, gcs_server)."""
        for pid in descendants(self.nodes[node].pid):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(program):
                    return pid
            except OSError:
                pass
        raise AssertionError(f"no {program!r} under node {node}")

    def workers(self, node: str) -> list[int]:
        """The pids of a node's Ray workers (actors of driver.workers.Worker)."""
        return ray_workers(self.nodes[node].pid)

    def stop(self) -> None:
        """Stops every node, then any process still running in the nodes' folders (a worker or
        agent orphaned when its raylet was killed)."""
        for node in reversed(list(self.nodes.values())):
            stop_tree(node)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if Path(os.readlink(entry / "cwd")).is_relative_to(self.root):
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Ray cluster with 2 CPUs, stopped at the end: that cluster only."""
    one = Cluster(tmp_path_factory.mktemp("ray"), cpus=2)
    try:
        yield {"address": one.address, "env": one.env}
    finally:
        one.stop()


def test_a_cluster_renders_the_same_frames(in_process, cluster, tmp_path, two_part_song,
                                           lyrics_file, model_flags):
    # Joined through $RAY_ADDRESS, as `ray job submit` sets it. More workers than the cluster's
    # 2 CPUs: 2 render (the third waits for a node that never comes, holding no work).
    args = args_for("o/v.png", two_part_song, lyrics_file, model_flags, "--workers", "3")
    env = {**cluster["env"], "RAY_ADDRESS": cluster["address"]}
    result = run_script("generate.py", args, tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert f"Ray cluster at {cluster['address']} (from $RAY_ADDRESS)" in result.stderr
    assert "the Ray cluster has 2 CPU(s); 2 workers render" in result.stderr
    assert decoded_frames(tmp_path / "o" / "v.mp4") == in_process["frames"]
    report = json.loads((tmp_path / "o" / "v" / "report.json").read_text())
    assert sum(w["segments"] for w in report["workers"]) == len(in_process["manifest"]["segments"])
    assert written_in_place(tmp_path / "o" / "v")
    assert {w["chunks_sent"] for w in report["workers"]} == {0}
    assert "crossed the network" not in result.stderr
    assert {w["threads"] for w in report["workers"]} == {1}  # 2 cores / 3 sections, each worker


def test_a_worker_whose_weights_differ_is_refused_naming_node_and_file(cluster, tiny_models,
                                                                       monkeypatch):
    """Checked where the worker runs, against the fingerprints the driver sends."""
    from dataclasses import replace

    from music2video.driver.workers import Failed, RayScheduler
    from music2video.engine.modelset import WeightChoice, fingerprints, resolve_weights
    from music2video.engine.renderer import Finished, RenderSpec, Work
    from music2video.song.segments import Goal, Segment

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    choice = WeightChoice(*(str(tiny_models[k]) for k in ("vqgan_config", "vqgan_checkpoint",
                                                          "clip", "wav2clip")), None)
    prints = fingerprints(resolve_weights(choice, quiet=True))
    wrong = tuple(replace(p, sha256="0" * 64) if p.key == "ckpt" else p for p in prints)
    plan = tuple(Segment(k, k / 2, (k + 1) / 2, 2, 15 * k, 15 * (k + 1),
                         (Goal("audio", k / 2, (k + 1) / 2),)) for k in range(2))
    spec = RenderSpec(weights=choice, device="cpu", size=(64, 64), segments=plan, seed=1,
                      sr=16000, fps=30, precision="fp32", threads=1, num_cuts=2,
                      fingerprints=wrong)
    samples = np.zeros(16000, np.float32)
    work = Work(0, 0, 0, 1, write=frozenset({0, 1}))
    scheduler = RayScheduler(cluster["address"], 1)
    try:
        refused = list(scheduler.render({0: (spec, samples)}, [work]))
        fine = list(scheduler.render({0: (replace(spec, fingerprints=prints), samples)}, [work]))
    finally:
        scheduler.close()
    (failure,) = [e for e in refused if isinstance(e, Failed)]
    assert not [e for e in refused if isinstance(e, Finished)]
    assert str(tiny_models["vqgan_checkpoint"]) in failure.message
    assert "not the driver's file" in failure.message and "on 127.0.0.1 (" in failure.message
    assert "\n" not in failure.message
    assert sorted(e.index for e in fine if isinstance(e, Finished)) == [0, 1]


def test_a_dead_ray_address_is_one_line(tmp_path, short_song, model_flags):
    args = ["-ap", str(short_song), "-o", "o/v.png", "-s", "64", "64", "-ips", "1", *model_flags]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": "127.0.0.1:9"}
    result = run_script("generate.py", args, tmp_path, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert "127.0.0.1:9 (from $RAY_ADDRESS)" in errors[0] and "--ray local" in errors[0]
    assert not (tmp_path / "o" / "v.mp4").exists()


@pytest.fixture(scope="module")
def long_song(tmp_path_factory) -> Path:
    """A 24-second song in two parts: enough work for a node to join while it renders."""
    return two_parts(tmp_path_factory.mktemp("l") / "long.mp3", 12.0, 96, 5)


def long_args(song: Path, weights: list[str], *extra) -> list[str]:
    """Five sections of the long song; -ips 4."""
    return ["-o", "o/v.png", "-ap", str(song), "-ips", "4", "-s", "64", "64", "-cuts", "2",
            "-sd", "7", "--sections", "5", "--warmup", "3", "-se", "0", "--precision", "fp32",
            *weights, *extra]


def relative_weights(tiny_models, cwd: Path) -> list[str]:
    """The tiny models' flags as paths relative to `cwd`, where the command runs."""
    rel = {k: os.path.relpath(v, cwd) for k, v in tiny_models.items()}
    return ["-conf", rel["vqgan_config"], "-ckpt", rel["vqgan_checkpoint"], "-m", rel["clip"],
            "--wav2clip_checkpoint", rel["wav2clip"]]


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory, long_song, tiny_models) -> dict:
    """The long song rendered in one process: the frames a cluster must give."""
    cwd = tmp_path_factory.mktemp("ref")
    result = run_script("generate.py", long_args(long_song, relative_weights(tiny_models, cwd)),
                        cwd)
    assert result.returncode == 0, result.stderr
    return {"frames": decoded_frames(cwd / "o" / "v.mp4"),
            "manifest": json.loads((cwd / "o" / "v" / "manifest.json").read_text())}


def test_a_node_that_joins_gets_work_and_its_loss_costs_nothing(long_reference, long_song,
                                                                tiny_models, tmp_path):
    """One node renders; a second joins mid-song and takes a section; its raylet is killed
    (the node is lost) mid-section; the run finishes on the first with the same frames. The
    weights are given as paths relative to where the command runs: the nodes run elsewhere.
    The second node does not see the driver's folder, so it sends its chunks as bytes, while
    the first writes its own in place."""
    nodes = Cluster(tmp_path / "cluster", cpus=1)
    cwd = tmp_path / "driver"
    cwd.mkdir()
    proc = None
    try:
        env = {**nodes.env, "MUSIC2VIDEO_PLACE_SECONDS": "30"}
        args = long_args(long_song, relative_weights(tiny_models, cwd), "--ray", nodes.address)
        proc = subprocess.Popen([sys.executable, str(REPO / "generate.py"), *args], cwd=cwd,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        run_dir = cwd / "o" / "v"
        wait_until(lambda: journal(run_dir), proc)
        nodes.add("joiner", cpus=1, hide=cwd)

        def joiner_rendered():
            pids = set(nodes.workers("joiner"))
            return pids and any(e.get("pid") in pids for e in entries(run_dir))

        wait_until(joiner_rendered, proc)
        os.kill(nodes.process("joiner", b"raylet"), signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        nodes.stop()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "Raylet is terminated" not in stdout + stderr
    lost = [line for line in stderr.splitlines() if "lost the worker" in line]
    assert len(lost) == 1 and "on the next free worker" in lost[0], stderr
    segments = len(long_reference["manifest"]["segments"])
    assert sorted(set(journal(run_dir))) == list(range(segments))
    assert decoded_frames(cwd / "o" / "v.mp4") == long_reference["frames"]
    report = json.loads((run_dir / "report.json").read_text())
    assert len({w["node"] for w in report["workers"]}) == 2  # both nodes rendered
    sent = {w["node"]: w["chunks_sent"] for w in report["workers"]}
    assert sorted(sent.values())[0] == 0 and sorted(sent.values())[1] > 0, report["workers"]
    assert "chunks crossed the network from 1 node that does not see the run folder" in stderr \
        or "chunk crossed the network from 1 node that does not see the run folder" in stderr
    assert not list(run_dir.glob(".*.part*"))


def stopped(proc: subprocess.Popen, seconds: float = 120) -> tuple[str, str, float]:
    """A generate run's stdout, stderr and the seconds it took to end from now."""
    start = time.time()
    stdout, stderr = proc.communicate(timeout=seconds)
    return stdout, stderr, time.time() - start


def one_error(stderr: str) -> str:
    """The one error line of a run that stopped (and no traceback)."""
    errors = [line for line in stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def test_a_lost_head_or_no_worker_left_is_one_line_and_a_new_cluster_resumes(
        in_process, tmp_path, two_part_song, lyrics_file, model_flags):
    """The head's GCS killed mid-song (its node goes with it): one line, within Ray's own 60 s.
    A new cluster, whose head has no CPU, resumes; its only worker node lost: one line once no
    worker starts within the bound. A node added, the run resumes to the same frames as one
    process."""
    first, proc = Cluster(tmp_path / "first", cpus=2), None
    args = args_for("o/v.png", two_part_song, lyrics_file, model_flags, "--ray", first.address)
    run_dir = tmp_path / "o" / "v"

    def launch(cluster: Cluster) -> subprocess.Popen:
        args[args.index("--ray") + 1] = cluster.address
        env = {**cluster.env, "MUSIC2VIDEO_PLACE_SECONDS": "10"}
        return subprocess.Popen([sys.executable, str(REPO / "generate.py"), *args], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    try:
        proc = launch(first)
        wait_until(lambda: len(journal(run_dir)) >= 2, proc)
        os.kill(first.process("head", b"gcs_server"), signal.SIGKILL)
        _, stderr, seconds = stopped(proc)
        assert proc.returncode == 1 and seconds < 50  # before Ray's own silent exit at 60 s
        line = one_error(stderr)
        assert "lost the Ray cluster's head" in line and "resume" in line
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        first.stop()
    second = Cluster(tmp_path / "second", cpus=0)
    try:
        second.add("worker", cpus=2)
        done = len(set(journal(run_dir)))
        proc = launch(second)
        wait_until(lambda: len(set(journal(run_dir))) >= done + 2, proc)
        os.kill(second.process("worker", b"raylet"), signal.SIGKILL)
        stdout, stderr, seconds = stopped(proc)
        assert proc.returncode == 1 and seconds < 50 and "resuming: " in stderr
        line = one_error(stderr)
        assert "no Ray worker is left" in line and "resume" in line
        second.add("another", cpus=2)
        result = run_script("generate.py", args, tmp_path, env=second.env)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        second.stop()
    assert result.returncode == 0, result.stderr
    assert "resuming: " in result.stderr
    assert decoded_frames(tmp_path / "o" / "v.mp4") == in_process["frames"]


def test_an_unreachable_cluster_is_one_line(tmp_path, short_song, model_flags):
    args = ["-ap", str(short_song), "-o", "o/v.png", "-s", "64", "64", "-ips", "1",
            "--ray", "127.0.0.1:9", *model_flags]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    result = run_script("generate.py", args, tmp_path, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "127.0.0.1:9" in errors[0], result.stderr


def test_the_bench_measures_each_segments_bytes_and_driver_time():
    from tools import bench

    every = bench.ray_overhead(64, segments=6, state_every=1)
    sparse = bench.ray_overhead(64, segments=6, state_every=3)
    assert every["segments"] == 6 and every["ms_per_segment"] > 0
    assert every["state_mb"] > 0 and every["chunk_kb"] > 0
    # two states of six instead of six: the bytes per segment fall by about the state's share
    state_kb = every["state_mb"] * 2**20 / 1000
    assert every["kb_per_segment"] - sparse["kb_per_segment"] == pytest.approx(
        state_kb * 4 / 6, rel=0.1)
    # chunks encoded into the run folder: their bytes no longer cross, the same file is kept
    placed = bench.ray_overhead(64, segments=6, state_every=3, in_place=True)
    assert placed["in_place"] and not sparse["in_place"] and placed["chunk_kb"] == sparse["chunk_kb"]
    assert sparse["kb_per_segment"] - placed["kb_per_segment"] == pytest.approx(
        sparse["chunk_kb"], rel=0.1)


def stand_in_worker(marker: Path):
    """A Ray worker class that renders nothing: each segment comes back at once, naming the
    worker that made it. Job 1's section 1 raises a user error; job 2's worker dies (os._exit)
    on its second segment the first time only (`marker` remembers)."""
    from music2video.driver.workers import Worker
    from music2video.engine.renderer import Finished, Progress, RenderError

    class StandIn(Worker):
        def __init__(self, device=None):
            super().__init__(device)
            self.name = f"{os.getpid()}-{id(self)}"

        def render(self, spec, samples, work):
            for index in range(work.first, work.last + 1):
                if work.job == 1 and work.section == 1:
                    raise RenderError("the loss became nan; lower -lr")
                if work.job == 2 and index == work.first + 1 and not marker.exists():
                    marker.write_text("died once")
                    os._exit(1)
                time.sleep(0.05)
                yield Progress(work.job, 1)
                yield Finished(work.job, work.section, index, None, None,
                               {"worker": self.name}, True)

    return StandIn


def spec_for(segments: int):
    """A render spec of `segments` one-step segments (nothing in it is rendered)."""
    from music2video.engine.renderer import RenderSpec
    from music2video.song.segments import Segment

    plan = tuple(Segment(k, k / 2, (k + 1) / 2, 1, 15 * k, 15 * (k + 1)) for k in range(segments))
    return RenderSpec(weights=None, device="cpu", size=(64, 64), segments=plan, seed=0,
                      sr=16000, fps=30, precision="fp32", threads=1)


def sections_of(job: int, count: int, length: int) -> list:
    """`count` sections of `length` segments each, as Work."""
    from music2video.engine.renderer import Work

    return [Work(job, k, k * length, (k + 1) * length - 1,
                 write=frozenset(range(k * length, (k + 1) * length))) for k in range(count)]


@pytest.fixture(scope="module")
def stand_in_scheduler(tmp_path_factory):
    """Two local Ray workers of the stand-in class (one Ray instance for these tests)."""
    from music2video.driver.workers import RayScheduler

    marker = tmp_path_factory.mktemp("marker") / "died"
    scheduler = RayScheduler("local", 2, worker=stand_in_worker(marker))
    try:
        yield {"scheduler": scheduler, "marker": marker}
    finally:
        scheduler.close()


def finished(events) -> list:
    """The Finished events among `events`."""
    from music2video.engine.renderer import Finished

    return [e for e in events if isinstance(e, Finished)]


def test_each_worker_keeps_going_from_section_to_section(stand_in_scheduler):
    scheduler = stand_in_scheduler["scheduler"]
    jobs = {0: (spec_for(12), np.zeros(1, np.float32))}
    events = list(scheduler.render(jobs, sections_of(0, 6, 2)))
    done = finished(events)
    assert sorted(e.index for e in done) == list(range(12))
    # Six sections on two workers: two actors rendered them all, each holding its networks.
    assert len({e.state["worker"] for e in done}) == 2
    assert len(scheduler.actors) == 2


def test_a_failing_song_stops_alone_and_its_worker_is_replaced(stand_in_scheduler):
    from music2video.driver.workers import Failed

    scheduler = stand_in_scheduler["scheduler"]
    jobs = {job: (spec_for(6), np.zeros(1, np.float32)) for job in (0, 1)}
    works = sections_of(0, 3, 2) + sections_of(1, 3, 2)
    events = list(scheduler.render(jobs, works))
    failures = [e for e in events if isinstance(e, Failed)]
    assert len(failures) == 1 and failures[0].job == 1 and "lower -lr" in failures[0].message
    assert sorted(e.index for e in finished(events) if e.job == 0) == list(range(6))
    assert len(scheduler.actors) <= 2


def test_a_dead_worker_costs_only_its_segment(stand_in_scheduler):
    from music2video.engine.renderer import Progress

    scheduler = stand_in_scheduler["scheduler"]
    jobs = {2: (spec_for(8), np.zeros(1, np.float32))}
    events = list(scheduler.render(jobs, sections_of(2, 2, 4)))
    done = finished(events)
    assert stand_in_scheduler["marker"].exists()  # a worker died
    assert sorted(e.index for e in done) == list(range(8))  # none lost, none twice
    assert sum(e.steps for e in events if isinstance(e, Progress)) == 8
    assert len(scheduler.actors) <= 2  # the dead one was replaced, not added to


def test_the_tests_find_and_stop_only_processes_they_started(tmp_path):
    """A process that looks like a Ray worker but is not under the given root is never picked,
    and stopping a tree leaves every process outside it alone."""
    def looks_like_a_worker() -> subprocess.Popen:
        return subprocess.Popen(["bash", "-c", 'exec -a "ray::Worker.render" sleep 60'])

    other, tree = looks_like_a_worker(), None
    try:
        tree = subprocess.Popen(["bash", "-c", 'exec -a "ray::Worker.render" sleep 60 & wait'],
                                start_new_session=True)
        wait_until(lambda: ray_workers(tree.pid), tree, 30)
        assert other.pid not in ray_workers(tree.pid)
        assert other.pid in ray_workers(os.getpid())  # it is found where it does belong
        (inner,) = ray_workers(tree.pid)
        stop_tree(tree)
        deadline = time.time() + 30
        while running(inner) and time.time() < deadline:
            time.sleep(0.05)
        assert not running(inner)
        assert other.poll() is None  # still running: not this tree's
    finally:
        other.kill()
        other.wait()
        if tree is not None and tree.poll() is None:
            tree.kill()
