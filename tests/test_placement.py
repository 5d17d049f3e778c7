"""Where the work runs, without starting Ray: $RAY_ADDRESS, what every worker is sent (the
runtime env, absolute weight paths and their fingerprints), and what is left of a lost worker's
section. The Ray runs themselves are in test_workers.py."""

import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from music2video.driver.workers import (
    PLACE_ENV,
    PLACE_SECONDS,
    RayScheduler,
    _Flight,
    place,
    place_seconds,
    runtime_env,
)
from music2video.engine.renderer import Work


def options(**given) -> SimpleNamespace:
    """The placement flags of a command line with nothing but `given` set."""
    return SimpleNamespace(**{"ray": None, "workers": None, "gpu_id": (0,), "cuda_device": "cpu",
                              "ray_device": "auto", **given})


def test_ray_address_is_joined_unless_local_is_asked(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6379")
    placement = place(options())
    assert (placement.ray, placement.from_env, placement.device) == ("10.1.2.3:6379", True, None)
    assert place(options(ray="192.168.0.9:6379")).ray == "192.168.0.9:6379"  # --ray wins
    assert not place(options(ray="192.168.0.9:6379")).from_env
    local = place(options(ray="local", workers=2))
    assert (local.ray, local.workers, local.from_env) == ("local", 2, False)
    assert place(options(ray_device="gpu")).kind == "gpu"
    monkeypatch.delenv("RAY_ADDRESS")
    assert place(options()).ray is None  # one worker, in this process


def test_every_worker_gets_the_package_and_our_settings(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MUSIC2VIDEO_CHECKPOINTS", "weights")
    monkeypatch.setenv("MUSIC2VIDEO_LRCLIB_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("OTHER_SETTING", "not ours")
    env = runtime_env()
    assert Path(env["py_modules"][0]).name == "music2video"
    assert env["env_vars"]["MUSIC2VIDEO_CHECKPOINTS"] == str(tmp_path / "weights")
    assert env["env_vars"]["MUSIC2VIDEO_LRCLIB_URL"] == "http://127.0.0.1:9"
    assert env["env_vars"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OTHER_SETTING" not in env["env_vars"]


@pytest.mark.parametrize("value, expected", [("", PLACE_SECONDS), ("15", 15.0), ("nan", PLACE_SECONDS),
                                             ("-1", PLACE_SECONDS), ("soon", PLACE_SECONDS)])
def test_the_placement_bound_can_be_set(monkeypatch, value, expected):
    monkeypatch.setenv(PLACE_ENV, value)
    assert place_seconds() == expected


def test_a_lost_workers_section_goes_on_from_the_last_state_received():
    work = Work(0, 1, 10, 19, {"segment": 9}, frozenset(range(12, 20)))
    fresh = _Flight(work)
    assert RayScheduler._remaining(fresh) == work  # nothing came back: all of it again
    flight = _Flight(work, received={12, 13, 14}, state=(13, {"segment": 13}), setup=(2, "bf16"))
    rest = RayScheduler._remaining(flight)
    # from the state after 13; 14 came back (it is not written again) but is replayed
    assert (rest.first, rest.last, rest.state, rest.write) == (14, 19, {"segment": 13},
                                                               frozenset(range(15, 20)))
    assert (rest.threads, rest.precision) == (2, "bf16")  # the section renders as it began
    done = _Flight(work, received=set(range(12, 20)), state=(19, {"segment": 19}))
    assert RayScheduler._remaining(done) is None


def test_weight_paths_are_made_absolute_where_the_command_runs(monkeypatch, tmp_path):
    from music2video.engine.modelset import WeightChoice

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MUSIC2VIDEO_CHECKPOINTS", raising=False)
    (tmp_path / "clip.pt").write_bytes(b"x")
    opts = SimpleNamespace(vqgan_config=Path("m/v.yaml"), vqgan_checkpoint=Path("m/v.ckpt"),
                           clip_model="clip.pt", wav2clip_checkpoint=None, checkpoints=None)
    choice = WeightChoice.of(opts)
    assert choice.vqgan_config == str(tmp_path / "m" / "v.yaml")
    assert choice.clip_model == str(tmp_path / "clip.pt")
    assert choice.checkpoints is None  # none chosen: each worker looks where it always does
    assert WeightChoice.of(SimpleNamespace(**{**vars(opts), "clip_model": "ViT-B/32"})
                           ).clip_model == "ViT-B/32"
    monkeypatch.setenv("MUSIC2VIDEO_CHECKPOINTS", "weights")  # chosen: the same folder everywhere
    assert WeightChoice.of(opts).checkpoints == str(tmp_path / "weights")


def test_a_weight_file_that_differs_from_the_drivers_is_refused(tmp_path, monkeypatch):
    from music2video.engine.modelset import check_fingerprints, fingerprints
    from music2video.models import download
    from music2video.models.networks import ModelError

    monkeypatch.setenv("MUSIC2VIDEO_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "v.ckpt"
    ckpt.write_bytes(b"the driver's weights")
    prints = fingerprints({"ckpt": ckpt})
    check_fingerprints({"ckpt": ckpt}, prints)  # the same file passes
    monkeypatch.setattr(download, "sha256sum", lambda path: pytest.fail("hashed twice"))
    check_fingerprints({"ckpt": ckpt}, prints)  # unchanged: its digest is kept by size and time
    monkeypatch.undo()
    monkeypatch.setenv("MUSIC2VIDEO_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"someone's weights!!!")  # as long, not the same
    with pytest.raises(ModelError) as caught:
        check_fingerprints({"ckpt": other}, prints)
    message = str(caught.value)
    assert str(other) in message and socket.gethostname() in message and "\n" not in message
    assert "not the driver's file" in message and "same weights" in message
    os.truncate(other, 3)
    with pytest.raises(ModelError, match="3 bytes, not 20"):
        check_fingerprints({"ckpt": other}, prints)


def bare_scheduler(kind: str, requested: int, gpus: int, cpus: int) -> RayScheduler:
    """A RayScheduler's bookkeeping without Ray: what it would ask for, given the live nodes."""
    scheduler = RayScheduler.__new__(RayScheduler)
    scheduler.kind, scheduler.requested, scheduler.warned = kind, requested, set()
    scheduler.capacity = {"GPU": gpus, "CPU": cpus, "nodes": 1}
    return scheduler


def test_workers_take_gpus_while_the_cluster_has_any_and_follow_its_size():
    auto = bare_scheduler("AUTO", 0, gpus=0, cpus=16)
    assert (auto._kind(), auto._target("CPU")) == ("CPU", 16)  # GPU nodes at zero: CPU workers
    auto.capacity.update(GPU=4)  # GPU nodes came up
    assert (auto._kind(), auto._target("GPU")) == ("GPU", 4)
    assert bare_scheduler("CPU", 0, gpus=4, cpus=16)._kind() == "CPU"  # --ray_device cpu
    wants_gpus = bare_scheduler("GPU", 0, gpus=0, cpus=16)
    assert (wants_gpus._kind(), wants_gpus._target("GPU")) == ("GPU", 1)  # one asks: autoscale
    few = bare_scheduler("AUTO", 3, gpus=0, cpus=2)
    with pytest.warns(UserWarning, match="--workers 3: the Ray cluster has 2 CPU"):
        assert few._target("CPU") == 3  # the third waits for a node, holding no work
    assert few._target("CPU") == 3  # said once
