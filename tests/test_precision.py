"""`--precision auto`: the CUDA rule, and on the CPU a timing that decides and is kept per machine.

The timings are replaced by stand-ins wherever a test asserts a choice: real timings on a shared
CPU say nothing. One test runs the real probes once, for their shapes and bookkeeping."""

import json
import os

import pytest
import torch

from music2video.engine import precision

AMX_XEON = ("Intel(R) Xeon(R) Processor",
            frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}))
OLD_CPU = ("Intel(R) Core(TM) i7-7700", frozenset({"avx2", "fma", "avx512f"}))


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test has its own empty cache folder, never the user's."""
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "precision.json"


def stand_in_timer(monkeypatch, bf16_factor: float) -> list:
    """Probes 'take' 10 ms in fp32 and bf16_factor times that in bf16; returns the calls made."""
    calls = []

    def timer(fn, x, which):
        calls.append(which)
        return 0.010 * (bf16_factor if which == "bf16" else 1.0)

    monkeypatch.setattr(precision, "_step_seconds", timer)
    return calls


def fake_gpus(monkeypatch, capabilities: dict[int, tuple[int, int]], current: int = 0):
    """CUDA GPUs with these compute capabilities; GPU `current` is the current device."""
    asked = []

    def capability(device=None):
        index = current if device is None else device
        asked.append(index)
        return capabilities[index]

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    return asked


@pytest.mark.parametrize("capability, expected", [((7, 5), "fp32"), ((8, 0), "bf16"),
                                                   ((9, 0), "bf16"), ((6, 1), "fp32")])
def test_cuda_bf16_only_where_computed_natively(monkeypatch, capability, expected):
    fake_gpus(monkeypatch, {0: capability})
    assert precision.choose("cuda:0", (256, 256)) == expected


def test_cuda_looks_at_the_chosen_gpu_not_gpu_0(monkeypatch):
    asked = fake_gpus(monkeypatch, {0: (8, 0), 1: (7, 5)})
    assert precision.choose("cuda:1") == "fp32"
    assert asked == [1]
    assert precision.choose(torch.device("cuda", 0)) == "bf16"
    assert "compute capability 7.5" in precision.decide("cuda:1").reason


def test_plain_cuda_means_the_current_gpu(monkeypatch):
    asked = fake_gpus(monkeypatch, {0: (7, 0), 1: (8, 6)}, current=1)
    assert precision.choose("cuda") == "bf16" and asked == [1]


def test_cpu_without_bf16_instructions_is_fp32_without_timing(monkeypatch, own_cache):
    monkeypatch.setattr(precision, "cpu_info", lambda: OLD_CPU)
    calls = stand_in_timer(monkeypatch, 0.1)  # bf16 would "win": it must not even be timed
    choice = precision.decide("cpu", (256, 256), 8)
    assert choice.precision == "fp32" and calls == []
    assert "no bf16 instructions" in choice.reason
    assert not own_cache.exists()


@pytest.mark.parametrize("bf16_factor, expected", [(1.3, "fp32"), (0.95, "fp32"), (0.5, "bf16")])
def test_the_timing_decides_on_a_cpu_with_bf16(monkeypatch, bf16_factor, expected):
    """Slower bf16 (the Xeon without AMX) or bf16 within the 10% margin: fp32."""
    monkeypatch.setattr(precision, "cpu_info", lambda: AMX_XEON)
    calls = stand_in_timer(monkeypatch, bf16_factor)
    assert precision.choose("cpu", (256, 256), 8) == expected
    # both probes, both precisions alternating, one untimed round each
    assert calls.count("fp32") == calls.count("bf16") == 2 * (precision.ROUNDS + 1)


def test_the_cache_keeps_the_choice_without_timing_again(monkeypatch, own_cache):
    monkeypatch.setattr(precision, "cpu_info", lambda: AMX_XEON)
    calls = stand_in_timer(monkeypatch, 0.5)
    first = precision.decide("cpu", (256, 256), 8)
    timed = len(calls)
    assert first.precision == "bf16" and timed > 0 and "timed now" in first.reason
    stand_in_timer(monkeypatch, 2.0)  # the machine "changed its mind": the kept timing wins
    second = precision.decide("cpu", (256, 256), 8)
    assert second.precision == "bf16" and str(own_cache) in second.reason
    entry = json.loads(own_cache.read_text())[precision.machine_key((256, 256), 8)]
    assert entry["times"]["bf16"]["decoder"] == pytest.approx(0.005)
    assert [p.name for p in own_cache.parent.iterdir()] == ["precision.json"]  # no .part left


def test_the_cache_is_kept_per_machine_and_probe_size(monkeypatch, own_cache):
    monkeypatch.setattr(precision, "cpu_info", lambda: AMX_XEON)
    stand_in_timer(monkeypatch, 0.5)
    precision.choose("cpu", (256, 256), 8)
    monkeypatch.setattr(precision, "cpu_info", lambda: ("AMD EPYC", AMX_XEON[1]))
    calls = stand_in_timer(monkeypatch, 1.5)
    assert precision.choose("cpu", (256, 256), 8) == "fp32" and calls  # another machine: timed
    calls.clear()
    assert precision.choose("cpu", (64, 64), 8) == "fp32" and calls  # another probe size: timed
    calls.clear()
    assert precision.choose("cpu", (512, 512), 8) == "fp32" and not calls  # same probe as 256²
    assert len(json.loads(own_cache.read_text())) == 3


def test_a_corrupt_cache_is_timed_again_and_rewritten(monkeypatch, own_cache):
    monkeypatch.setattr(precision, "cpu_info", lambda: AMX_XEON)
    own_cache.parent.mkdir(parents=True)
    own_cache.write_text("{not json")
    calls = stand_in_timer(monkeypatch, 0.5)
    assert precision.choose("cpu", (256, 256), 8) == "bf16" and calls
    assert precision.machine_key((256, 256), 8) in json.loads(own_cache.read_text())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_cache_still_chooses(monkeypatch, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    monkeypatch.setenv(precision.CACHE_ENV, str(locked / "music2video"))
    monkeypatch.setattr(precision, "cpu_info", lambda: AMX_XEON)
    stand_in_timer(monkeypatch, 0.5)
    try:
        with pytest.warns(UserWarning, match="cannot keep the precision timing"):
            assert precision.choose("cpu", (256, 256), 8) == "bf16"
    finally:
        locked.chmod(0o700)


def test_a_cache_path_that_is_a_file_still_chooses(monkeypatch, tmp_path):
    """The same failure for root too: the cache folder's place is taken by a file."""
    (tmp_path / "taken").write_text("")
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "taken"))
    monkeypatch.setattr(precision, "cpu_info", lambda: AMX_XEON)
    stand_in_timer(monkeypatch, 1.5)
    with pytest.warns(UserWarning, match=precision.CACHE_ENV):
        assert precision.choose("cpu", (256, 256), 8) == "fp32"


def test_other_devices_are_fp32():
    assert precision.choose("mps") == "fp32"


def test_cache_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(precision.CACHE_ENV)
    monkeypatch.delenv("MUSIC2VIDEO_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert precision.cache_path() == tmp_path / "music2video" / "precision.json"
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "mine"))
    assert precision.cache_path() == tmp_path / "mine" / "precision.json"


def test_cpu_info_names_this_cpu():
    name, flags = precision.cpu_info()
    assert name and isinstance(flags, frozenset)
    if os.path.exists("/proc/cpuinfo") and torch.cpu._is_avx512_bf16_supported():
        assert "avx512_bf16" in flags


def test_probe_shapes_follow_the_picture_and_stay_small():
    assert precision.probe_shapes((64, 32), 4) == ((16, 32), 4)
    assert precision.probe_shapes((1024, 576), 32) == ((precision.PROBE_SIDE,) * 2,
                                                       precision.PROBE_CUTS)


def test_bf16_ratio_weighs_each_probe_by_its_share_of_the_step():
    """A decoder-heavy step follows the decoder probe; a cut-heavy one the CLIP probe."""
    times = {"fp32": {"decoder": 1.0, "clip": 1.0}, "bf16": {"decoder": 0.5, "clip": 2.0}}
    big_picture = precision.bf16_ratio(times, (1024, 1024), 1)
    many_cuts = precision.bf16_ratio(times, (32, 32), 64)
    assert 0.5 < big_picture < 0.6 and 1.75 < many_cuts < 2.0


def test_real_probes_run_and_leave_the_random_stream_alone():
    """The real timing on a tiny picture: both probes, forward and backward, both precisions."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    times = precision.measure((16, 16), 1, rounds=1)
    assert torch.equal(torch.rand(3), expected)
    assert set(times) == {"fp32", "bf16"}
    assert all(s > 0 for probes in times.values() for s in probes.values())


def test_timing_works_inside_no_grad():
    """A caller in torch.no_grad (or inference code) still gets a timing, not an error."""
    with torch.no_grad():
        times = precision.measure((16, 16), 1, rounds=1)
    assert all(s > 0 for probes in times.values() for s in probes.values())
