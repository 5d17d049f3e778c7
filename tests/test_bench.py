"""The benchmark's pieces on tiny networks, and the speed levers against the fp32 loop.

No test here checks a speed: timings on a shared CPU say nothing in CI. They check that the
benchmark runs and reports, and that each lever kept on by default leaves the loss curve where
fp32 eager puts it."""

import json

import pytest
import torch

from music2video.engine import precision
from music2video.engine.guidance import MakeCutouts, Perceptor, Target
from music2video.engine.optimise import Optimiser
from music2video.models.autograd import vector_quantize
from tools import bench

STEPS = 10
# bf16 keeps 8 bits of mantissa: over 10 steps the tiny loop's losses stay within 4e-4 of fp32
# (measured); full-size ViT-B/32 + f16-16384 at 256², 8 cuts: see BENCHMARKS.md.
BF16_RTOL = 1e-2
SAME_RTOL = 1e-5  # levers that change only the memory layout or the order of the same sums


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared CPU, OpenMP threads spinning at barriers make tiny steps
    tens of times slower (the benchmark itself sets OMP_WAIT_POLICY=PASSIVE instead)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """No test writes the user's precision cache."""
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def nets():
    """Tiny VQGAN and CLIP, a start latent and two goals, as the benchmark builds them."""
    vqgan, clip_model = bench.build_models("ViT-B/32", "cpu", tiny=True)
    z = bench.random_latent(vqgan, 64, 64, torch.Generator().manual_seed(0))
    return vqgan, clip_model, z, bench.goal_embeds(clip_model, "cpu")


def losses(nets, steps=STEPS, **levers) -> list[float]:
    """The loss of each step of our loop from seed 0 (models left in their plain layout)."""
    vqgan, clip_model, z, embeds = nets
    perceptor = Perceptor(clip_model, MakeCutouts(clip_model.visual.input_resolution, 4))
    torch.manual_seed(0)
    opt = Optimiser(vqgan, perceptor, z, **levers)
    targets = [(Target(e), 1.0) for e in embeds]
    try:
        return [opt.step(targets, i).loss.item() for i in range(steps)]
    finally:
        vqgan.to(memory_format=torch.contiguous_format)
        clip_model.to(memory_format=torch.contiguous_format)


def assert_close(curve, reference, rtol):
    worst = max(abs(a - b) / abs(b) for a, b in zip(curve, reference))
    assert worst <= rtol, f"loss curve {curve} strays {worst:.2e} from fp32's {reference}"


def test_benchmark_prints_one_json_line_last(capsys):
    result = bench.main(["--tiny", "--device", "cpu", "--size", "32", "32", "--cuts", "2",
                         "--steps", "1", "--precision", "fp32"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(result))
    for key in ("device", "size", "cuts", "baseline_steps_per_s", "ours_steps_per_s", "ratio",
                "flops_per_step", "peak_rss_mb"):
        assert key in result
    assert result["device"] == "cpu" and result["size"] == [32, 32] and result["cuts"] == 2
    assert result["flops_per_step"] > 0 and result["peak_rss_mb"] > 0
    rates = result["ours_steps_per_s"], result["baseline_steps_per_s"]
    assert result["ratio"] == pytest.approx(rates[0] / rates[1])


def test_levers_table_has_a_row_per_lever(capsys):
    result = bench.main(["--tiny", "--device", "cpu", "--size", "32", "32", "--cuts", "2",
                         "--steps", "1", "--levers", "--precision", "bf16"])
    out = capsys.readouterr().out
    rows = result["levers"]
    assert {"baseline", "fp32 eager", "bf16 autocast", "bf16 + channels_last",
            "fp32 + fused SiLU", "bf16 + fused SiLU"} <= set(rows)
    assert rows["baseline"]["ratio"] == 1.0
    assert all(f"| {name} |" in out for name in rows)
    assert len(result["video"]) == 3 and all(s > 0 for s in result["video"].values())


def test_seed_recreation_does_the_same_math_as_our_fp32_loop(nets, tmp_path):
    """The baseline times the seed's way of doing our work, not other work."""
    vqgan, clip_model, z, embeds = nets
    torch.manual_seed(0)
    seed = bench.SeedLoop(vqgan, clip_model, z, embeds, 4, tmp_path)
    seed_curve = [seed.step(i) for i in range(STEPS)]
    assert_close(seed_curve, losses(nets, precision="fp32"), SAME_RTOL)
    assert len(list(tmp_path.glob("*.png"))) == STEPS + 1  # a PNG a step, and the preview
    assert seed.finish().stat().st_size > 0


def test_bf16_holds_the_fp32_loss_curve(nets):
    assert_close(losses(nets, precision="bf16"), losses(nets, precision="fp32"), BF16_RTOL)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_each_auto_precision_repeats_exactly(nets, precision):
    """Same seed, same losses, whichever precision `auto` picks on the machine."""
    assert losses(nets, 3, precision=precision) == losses(nets, 3, precision=precision)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_silu_gives_the_same_losses(nets, precision):
    """The bench's SiLU lever computes taming's x * sigmoid(x), only in one kernel."""
    plain = losses(nets, precision=precision)
    with bench.fused_silu():
        fused = losses(nets, precision=precision)
    assert_close(fused, plain, SAME_RTOL if precision == "fp32" else BF16_RTOL)


def test_fused_silu_puts_taming_back():
    import taming.modules.diffusionmodules.model as taming_model

    saved = taming_model.nonlinearity
    with pytest.raises(RuntimeError), bench.fused_silu():
        assert taming_model.nonlinearity is torch.nn.functional.silu
        raise RuntimeError
    assert taming_model.nonlinearity is saved


def test_auto_precision_comes_from_precision_choose(capsys, monkeypatch):
    """The bench's `auto` is the CLI's: precision.decide on this device, size and cut count."""
    seen = []

    def decide(device, size, cuts):
        seen.append((torch.device(device).type, list(size), cuts))
        return precision.Choice("fp32", "stand-in")

    monkeypatch.setattr(precision, "decide", decide)
    result = bench.main(["--tiny", "--device", "cpu", "--size", "32", "32", "--cuts", "2",
                         "--steps", "1"])
    assert seen == [("cpu", [32, 32], 2)]
    assert result["precision"] == "fp32" and result["precision_reason"] == "auto: stand-in"
    assert "precision fp32 (auto: stand-in)" in capsys.readouterr().out


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_channels_last_gives_the_same_losses(nets, precision):
    # In bf16 the layout picks other kernels, which round at other places: on a CPU without
    # bf16 instructions (AMD EPYC, AVX2 only) the curves differed by 7.6e-4, within bf16's own
    # tolerance; on CPUs with them they matched to 1e-5.
    plain = losses(nets, precision=precision)
    assert_close(losses(nets, precision=precision, channels_last=True), plain,
                 SAME_RTOL if precision == "fp32" else BF16_RTOL)


def test_codebook_lookup_stays_fp32_under_autocast():
    """bf16 distances snap near ties to other codes (77 of these 256 points, unguarded)."""
    gen = torch.Generator().manual_seed(0)
    codebook = torch.randn(1024, 256, generator=gen)
    a, b = torch.randint(1024, (2, 256), generator=gen)
    x = (codebook[a] + codebook[b]) / 2 + 0.01 * torch.randn(256, 256, generator=gen)  # (256, e)
    plain = vector_quantize(x, codebook)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = vector_quantize(x, codebook)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, plain)


def test_cutouts_stay_fp32_under_autocast(nets):
    """The augments' sampling grids and random draws are those of fp32."""
    vqgan, clip_model, z, _ = nets
    cutouts = MakeCutouts(clip_model.visual.input_resolution, 4)
    image = vqgan.synth(z)
    torch.manual_seed(0)
    plain = cutouts(image)
    seen = []
    hook = cutouts.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            Perceptor(clip_model, cutouts).encode_views(image.bfloat16())
    finally:
        hook.remove()
    assert seen == [plain.dtype] == [torch.float32]


@pytest.mark.slow
def test_memory_mode_reports_each_songs_peak():
    result = bench.memory([0.1])
    (run,) = result["memory"].values()
    assert run["peak_rss_mb"] > 0 and run["song_s"] == pytest.approx(6)


HOOK = """
import importlib.abc, os, runpy, sys
seen = []
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
sys.meta_path.insert(0, Spy())
sys.argv = [sys.argv[1], "-ap", "/nonexistent/song.mp3", "-q"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")  # the script as users run it
except SystemExit:
    pass
import torch
print(seen[0])
"""


@pytest.mark.slow
@pytest.mark.parametrize("script", ["generate.py", "generate_interpolate.py"])
@pytest.mark.parametrize("preset", [None, "ACTIVE"])
def test_scripts_make_openmp_threads_sleep_before_torch_loads(script, preset):
    """What the bench learned: spinning OpenMP threads make CPU steps collapse under load.

    A policy the user set is kept."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", HOOK, str(root / script)], cwd=root, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == (preset or "PASSIVE")
