"""The one-command GPU report, run on the CPU with tiny models: every part leaves figures (or,
for what needs CUDA, the reason it has none), a failing part leaves the others running, and the
profiled step does what Optimiser.step does."""

import gzip
import json
import subprocess
import sys
import threading
import traceback
import warnings
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from music2video.engine import precision
from music2video.engine.guidance import MakeCutouts, Perceptor, Target
from music2video.engine.optimise import Optimiser
from tools import bench, gpureport

pytestmark = pytest.mark.slow  # runs the scripts or Ray end to end

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    """`python -m tools.gpureport OUT --tiny --device cpu`: its exit, stdout and folder."""
    out = tmp_path_factory.mktemp("gpureport") / "out"
    work = out.parent / "work"
    done = subprocess.run([sys.executable, "-m", "tools.gpureport", str(out), "--tiny",
                           "--device", "cpu", "--work", str(work)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out, json.loads((out / gpureport.REPORT_JSON).read_text()), done.stdout


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """No test writes the user's precision cache."""
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "cache"))


def test_every_part_ran_and_only_reports_land_in_the_folder(tiny_report):
    out, report, stdout = tiny_report
    assert {name: part["status"] for name, part in report["parts"].items()} == {
        name: "ok" for name in gpureport.PARTS}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [gpureport.REPORT_JSON, gpureport.REPORT_MD, gpureport.TRACE])
    for name in gpureport.PARTS:
        assert f"{name}: ok" in stdout
    env = report["parts"]["environment"]["result"]
    assert env["torch"] == torch.__version__ and "--tiny" in env["command"]
    assert env["matmul_bf16_tflops"] is None and "CUDA" in env["gpu_skipped"]


def test_bench_rows_have_figures(tiny_report):
    _, report, _ = tiny_report
    result = report["parts"]["bench"]["result"]
    rows = result["rows"]
    assert list(rows) == ["seed", "ours fp32", "ours bf16"]
    assert "CUDA" in result["fp16_skipped"] and result["flops_per_step"] > 0
    seed = rows["seed"]["steps_per_s"]
    for row in rows.values():
        assert row["steps_per_s"] > 0 and row["tflops"] > 0
        assert row["ratio_to_seed"] == pytest.approx(row["steps_per_s"] / seed)
        assert row["tflops"] == pytest.approx(result["flops_per_step"] * row["steps_per_s"] / 1e12)
        assert row["mfu"] is None and row["peak_gpu_mb"] is None  # no card on a CPU


def test_profile_times_every_part_of_the_step(tiny_report):
    out, report, _ = tiny_report
    result = report["parts"]["profile"]["result"]
    parts = result["parts_ms"]
    for name in ("step", *gpureport.TOP_LEVEL, *gpureport.IN_BACKWARD):
        assert parts[name]["host_ms"] > 0, name
        assert parts[name]["gpu_ms"] is None
    assert parts["step"]["host_ms"] >= parts["backward"]["host_ms"] >= parts[
        "decoder backward"]["host_ms"]
    assert result["top_ops"] and all(op["self_cpu_ms"] >= 0 for op in result["top_ops"])
    assert not {op["name"] for op in result["top_ops"]} & set(gpureport.TOP_LEVEL)
    assert result["syncs"] is None and "CUDA" in result["syncs_skipped"]
    trace = json.loads(gzip.decompress((out / gpureport.TRACE).read_bytes()))
    assert any(e.get("name") == "decoder backward" for e in trace["traceEvents"])


def test_pipeline_runs_generate_and_checks_the_video(tiny_report):
    _, report, _ = tiny_report
    result = report["parts"]["pipeline"]["result"]
    assert set(result["models"]) == {"vqgan_config", "vqgan_checkpoint", "clip", "wav2clip"}
    assert result["song_seconds"] == gpureport.MODES["tiny"]["song_seconds"]
    runs = result["runs"]
    assert list(runs) == ["-ips 10", "-ips 0 (loudness rule)"]
    planned = result["budget_plan"]["planned_steps"]
    for (label, run), ips in zip(runs.items(), ("10", "0")):
        assert run["status"] == "ok", label
        assert run["steps"] == planned[ips] and run["steps_per_second"] > 0
        assert run["wall_s"] >= run["wall_seconds"] > 0
        assert run["realtime_factor_wall"] == pytest.approx(run["wall_s"] / result["song_seconds"])
        assert run["check"]["frames_match"] and run["check"]["in_sync"], run["check"]
        assert f"-ips {ips}" in run["command"] and "--precision auto" in run["command"]
    assert runs["-ips 10"]["steps"] == 5  # round(10 x 0.5 s)
    assert runs["-ips 0 (loudness rule)"]["steps"] > runs["-ips 10"]["steps"]


def test_markdown_table(tiny_report):
    out, _, _ = tiny_report
    text = (out / gpureport.REPORT_MD).read_text()
    for heading in ("## Bench", "## One step of ours by part", "## generate.py on the demo song",
                    "| ours bf16 |", "| ↳ decoder backward |", "| -ips 0 (loudness rule) |"):
        assert heading in text


def test_a_failing_part_is_recorded_and_the_others_run(tmp_path, monkeypatch):
    def broken(ctx, result):
        result["half"] = 1.0
        raise RuntimeError("profiler exploded\nsecond line")

    monkeypatch.setattr(gpureport, "profile", broken)
    report = gpureport.main([str(tmp_path / "out"), "--tiny", "--device", "cpu", "--steps", "1",
                             "--parts", "environment", "profile", "bench"])
    parts = report["parts"]
    assert list(parts) == ["environment", "profile", "bench"]
    assert parts["profile"]["status"] == "error"
    assert parts["profile"]["error"] == "RuntimeError: profiler exploded"
    assert "profiler exploded" in parts["profile"]["traceback"]
    assert parts["profile"]["result"] == {"half": 1.0}  # what it had, kept
    assert parts["environment"]["status"] == parts["bench"]["status"] == "ok"
    assert parts["bench"]["result"]["rows"]["ours fp32"]["steps_per_s"] > 0
    saved = json.loads((tmp_path / "out" / gpureport.REPORT_JSON).read_text())
    assert saved["parts"]["profile"]["status"] == "error"
    assert "- profile: error: RuntimeError: profiler exploded" in (
        tmp_path / "out" / gpureport.REPORT_MD).read_text()


def test_profiled_step_is_optimisers_step():
    """Same seed, same losses and latent: the profile times the loop the project runs. The hooks
    that mark the parts reorder a few float sums in the backward pass (gradients differ by
    ~1e-7), so the exact comparison is against Optimiser.step with the same hooks on."""
    vqgan, clip_model = bench.build_models("ViT-B/32", "cpu", tiny=True)
    z = bench.random_latent(vqgan, 32, 32, torch.Generator().manual_seed(0))
    targets = [(Target(e), 1.0) for e in bench.goal_embeds(clip_model, "cpu")]

    def run(profiled: bool, hooked: bool = True):
        perceptor = Perceptor(clip_model, MakeCutouts(clip_model.visual.input_resolution, 2))
        opt = Optimiser(vqgan, perceptor, z)
        watch = gpureport.Stopwatch(torch.device("cpu"))
        torch.manual_seed(0)
        losses, seen = [], set()
        hooks = gpureport.instrumented(vqgan, perceptor, watch) if hooked else nullcontext()
        with hooks:
            for i in range(3):
                if profiled:
                    losses.append(gpureport.profiled_step(opt, targets, i, watch)[1].item())
                else:
                    losses.append(opt.step(targets, i).loss.item())
                seen |= set(watch.take())
        return losses, opt.z.detach(), seen

    hooked, z_hooked, _ = run(False)
    timed, z_timed, seen = run(True)
    assert timed == hooked and torch.equal(z_timed, z_hooked)
    plain, z_plain, _ = run(False, hooked=False)
    assert timed == pytest.approx(plain, rel=1e-6)
    assert torch.allclose(z_timed, z_plain, atol=1e-5)
    assert seen == {"step", *gpureport.IN_BACKWARD, *gpureport.TOP_LEVEL} - {"frame hand-off"}
    for module in (vqgan.decoder, vqgan.post_quant_conv, clip_model.visual):  # hooks removed
        assert not (module._forward_hooks or module._forward_pre_hooks
                    or module._backward_hooks or module._backward_pre_hooks)


def raise_sync_warning():
    """Stands in for a torch op under set_sync_debug_mode('warn')."""
    warnings.warn("called a synchronizing CUDA operation", UserWarning)


def test_sync_warnings_are_grouped_by_site_and_thread():
    with gpureport.sync_warnings() as records:
        for _ in range(2):
            raise_sync_warning()
        thread = threading.Thread(target=raise_sync_warning, name="writer")
        thread.start()
        thread.join()
        warnings.warn("something else")
    sites = gpureport.sync_sites(records)
    assert [(s["count"], s["thread"]) for s in sites] == [(2, "MainThread"), (1, "writer")]
    assert all(s["site"].startswith(f"{__file__}:") and "raise_sync_warning" in s["site"]
               for s in sites)


def test_sync_site_is_the_innermost_project_or_kornia_frame():
    frames = [traceback.FrameSummary("/x/music2video/optimise.py", 10, "step"),
              traceback.FrameSummary("/x/site-packages/kornia/augmentation/base.py", 20, "fwd"),
              traceback.FrameSummary("/x/site-packages/torch/functional.py", 30, "op"),
              traceback.FrameSummary(str(Path(gpureport.__file__).resolve()), 40, "show")]
    (site,) = gpureport.sync_sites([("called a synchronizing CUDA operation", "t", frames)])
    assert site["site"] == "/x/site-packages/kornia/augmentation/base.py:20 (fwd)"
    assert site["caller"] == "/x/music2video/optimise.py:10 (step)"
    assert site["innermost"] == "/x/site-packages/torch/functional.py:30"


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0), ("NVIDIA H200 NVL", 835.0), ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA L40S", 362.0), ("NVIDIA L4", 121.0), ("NVIDIA GeForce RTX 4090", 165.0),
    ("Tesla T4", None)])
def test_peak_by_card_name(name, peak):
    assert gpureport.peak_bf16_tflops(name) == peak


def test_song_is_shortened_to_the_budget(monkeypatch, tmp_path):
    ctx = gpureport.Context(gpureport.parse_args([str(tmp_path), "--device", "cpu"]),
                            torch.device("cpu"), tmp_path, tmp_path,
                            gpureport.time.monotonic() + 200, {"parts": {}}, precision="bf16")
    ctx.report["parts"]["bench"] = {"result": {"rows": {"ours bf16": {"steps_per_s": 17.0}}}}
    monkeypatch.setattr(gpureport, "planned_steps", lambda argv: 1500)  # 50 steps per song second
    result = {}
    seconds = gpureport.song_length(ctx, result, {100.0: [], 0.0: []})
    # two runs: 60 s of overhead; 100 steps per song second at 0.85 x 17 steps/s
    assert seconds == pytest.approx((200 - 60) / (100 / (0.85 * 17)), rel=0.01)
    assert result["budget_plan"]["planned_steps"] == {"100": 1500, "0": 1500}
    ctx.deadline += 10_000
    assert gpureport.song_length(ctx, {}, {100.0: [], 0.0: []}) == 30.0
