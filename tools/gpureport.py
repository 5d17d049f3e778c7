"""One command that measures the real job on a GPU, written as JSON and a short table.

The bench's loops, one step profiled part by part, and generate.py on a 30-second song:

    python -m tools.gpureport OUT_DIR [--device cuda] [--budget-seconds 300]
    python -m tools.gpureport OUT_DIR --tiny --device cpu   # tiny models: the tests, CI

OUT_DIR gets report.json, report.md and profile_trace.json.gz (torch.profiler's trace of one
step), rewritten after every part, so a run cut short still leaves the figures it has. The
parts, each recorded with its error if it fails while the others go on:
    environment  torch, CUDA, driver, card, its bf16 matrix-product rate, date, command line
    bench        the seed's loop against ours in fp32, bf16 and fp16 (bench.py's loops):
                 steps/s, ratio, TFLOP/s, MFU against the card's bf16 dense peak, peak memory
    profile      one step of ours by part (decoder, CLIP, cut-outs forward and backward,
                 quantisation, loss, optimiser, frame hand-off), its top kernels, and every
                 host synchronisation with where it comes from (CUDA only)
    pipeline     generate.py on the demo song with full-size random-weight models in the real
                 files' formats, at -ips 100 and at the loudness rule: realtime factor, steps/s,
                 peak GPU memory, and the video checked against the song
Models, songs and videos go to a scratch folder (--work; deleted afterwards unless given), never
to OUT_DIR, whose files must stay few and small to come back from a lent GPU machine."""

import os

# Run as a script, before torch loads OpenMP (bench.py does the same): sleeping idle threads keep
# CPU timings steady. (Importing this module changes nothing.)
if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from music2video.engine import precision  # noqa: E402
from music2video.engine.guidance import MakeCutouts, Perceptor, Target, spherical_loss  # noqa: E402
from music2video.engine.optimise import Optimiser, autocast, to_frame  # noqa: E402
from music2video.files import write_bytes  # noqa: E402
from tools import bench  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REPORT_JSON, REPORT_MD, TRACE = "report.json", "report.md", "profile_trace.json.gz"
PARTS = ("environment", "bench", "profile", "pipeline")
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's datasheets (H100/H200 SXM
# 989, PCIe 756, NVL 835; A100 312; L40S 362; L4 121) and the Ada whitepaper for the RTX 4090
# (165, fp32 accumulate). Matched against torch.cuda.get_device_name, most specific name first;
# a card not listed gets no MFU and its name is recorded. The H100's SXM part is named plainly
# (e.g. 'NVIDIA H100 80GB HBM3'), as is the H200's ('NVIDIA H200').
PEAK_BF16_TFLOPS = (("H200 NVL", 835.0), ("H200", 989.0), ("H100 NVL", 835.0),
                    ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0),
                    ("L4", 121.0), ("RTX 4090", 165.0))
PEAK_SOURCE = ("vendor datasheet, dense bf16 tensor-core peak (no sparsity); a ceiling, not a "
               "measurement: environment.matmul_bf16_tflops is what this card measured")
MATMUL_SIDE = 8192  # the bf16 matrix product that measures the card's ceiling
RUN_OVERHEAD_S = 30.0  # per generate run, beyond its steps: start, model loading, joining, sync
PIPELINE_SHARE = 0.85  # a run's steps/s over the bench loop's (segments, chunks, embeddings)
SYNC_MESSAGE = "synchroniz"  # torch's sync debug warning: 'called a synchronizing CUDA operation'
SITE_MARKERS = (f"{os.sep}music2video{os.sep}", f"{os.sep}kornia{os.sep}")
TAIL = 4000  # characters of a traceback or log kept in the report
MODES = {  # per mode: size, cuts, timed steps per loop, profiled steps, song seconds, -ips runs
    "full": {"size": [512, 512], "cuts": 32, "steps": 20, "profile_steps": 5,
             "song_seconds": 30.0, "ips": [100.0, 0.0]},
    "tiny": {"size": [64, 64], "cuts": 4, "steps": 2, "profile_steps": 2,
             "song_seconds": 0.5, "ips": [10.0, 0.0]},
}


class Skipped(Exception):
    """A part (or a piece of one) that cannot run here; str() says why."""


@dataclass
class Context:
    """What the parts share: the settings, the folders, the deadline and the report so far."""

    args: argparse.Namespace
    device: torch.device
    out: Path
    work: Path
    deadline: float  # time.monotonic() by which the whole command should be done
    report: dict
    nets: tuple | None = None  # (vqgan, clip, z, embeds), built once for bench and profile
    precision: str | None = None  # what --precision auto means here

    def remaining(self) -> float:
        """Seconds left of the budget."""
        return self.deadline - time.monotonic()

    def models(self) -> tuple:
        """The bench's full-size (or tiny) networks, start latent and goals, built once."""
        if self.nets is None:
            a = self.args
            self.nets = bench.setup_nets(argparse.Namespace(clip_model=a.clip_model, size=a.size,
                                                        tiny=a.tiny), self.device)
        return self.nets

    def auto(self) -> str:
        """The precision --precision auto picks for this device and size, recorded once."""
        if self.precision is None:
            choice = precision.decide(self.device, self.args.size, self.args.cuts)
            self.precision = choice.precision
            self.report["auto_precision"] = {"precision": choice.precision,
                                             "reason": choice.reason}
        return self.precision

    def flush(self) -> None:
        """Rewrites report.json and report.md with what is known so far."""
        self.report["updated"] = now()
        _atomic_write(self.out / REPORT_JSON, json.dumps(self.report, indent=1, default=str))
        _atomic_write(self.out / REPORT_MD, markdown(self.report))


def now() -> str:
    """The time in UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _atomic_write(path: Path, text: str) -> None:
    """Writes text atomically (files.write_bytes)."""
    write_bytes(path, text.encode("utf-8"))


def note(message: str) -> None:
    """One progress line on stdout, at once."""
    print(f"[gpureport {time.strftime('%H:%M:%S')}] {message}", flush=True)


def peak_bf16_tflops(name: str) -> float | None:
    """The card's dense bf16 peak from PEAK_BF16_TFLOPS, or None for a card not listed."""
    for fragment, peak in PEAK_BF16_TFLOPS:
        if fragment.lower() in name.lower():
            return peak
    return None


def _sync(device: torch.device) -> None:
    """Waits for the device's queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _command(cmd: list[str], timeout: float = 30) -> str | None:
    """A command's stdout, stripped, or None when it is missing or fails."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _version(package: str) -> str | None:
    """An installed distribution's version, or None."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


# --- environment ---------------------------------------------------------------------------

def matmul_tflops(device: torch.device, side: int = MATMUL_SIDE, rounds: int = 10) -> float:
    """TFLOP/s of a side^3 bf16 matrix product on the GPU (the mean of `rounds`, after 3 more)."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(side, side, device=device, dtype=torch.bfloat16, generator=gen)
    b = torch.randn(side, side, device=device, dtype=torch.bfloat16, generator=gen)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(rounds):
        a @ b
    end.record()
    end.synchronize()
    return 2 * side ** 3 * rounds / (start.elapsed_time(end) / 1e3) / 1e12


def environment(ctx: Context, result: dict) -> None:
    """Versions, the card, its measured bf16 ceiling, the date and the command line."""
    device = ctx.device
    result.update({
        "date": now(), "command": shlex.join([sys.executable, "-m", "tools.gpureport",
                                              *ctx.report["argv"]]),
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device), "device_name": bench.device_name(device),
        "cpu_count": os.cpu_count(),
        "git_commit": _command(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
        "packages": {name: _version(name) for name in (
            "torchvision", "kornia", "clip-anytorch", "taming-transformers-rom1504", "wav2clip",
            "librosa", "numpy", "imageio-ffmpeg", "omegaconf", "torch-optimizer")},
    })
    from music2video.ffmpeg import ffmpeg_exe

    version = _command([ffmpeg_exe(), "-hide_banner", "-version"])
    result["ffmpeg"] = version.splitlines()[0] if version else None
    smi = _command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                    "--format=csv,noheader"])
    result["nvidia_smi"] = smi if smi is not None else "nvidia-smi not found or failed"
    if device.type != "cuda":
        result["matmul_bf16_tflops"] = None
        result["gpu_skipped"] = f"{device}: the card's figures need CUDA"
        return
    props = torch.cuda.get_device_properties(device)
    name = torch.cuda.get_device_name(device)
    result.update({
        "card": name, "capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
        "memory_gib": props.total_memory / 2 ** 30,
        "peak_bf16_tflops": peak_bf16_tflops(name), "peak_source": PEAK_SOURCE,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    })
    if smi:
        result["driver"] = smi.splitlines()[0].split(",")[1].strip()
    result["matmul_bf16_tflops"] = matmul_tflops(device)


# --- bench -----------------------------------------------------------------------------------

def bench_precisions(device: torch.device) -> list[str]:
    """The precisions our loop is timed in: fp16 on CUDA only, as bench --levers does."""
    return ["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"]


def bench_rows(ctx: Context, result: dict) -> None:
    """The seed's loop against ours in each precision, steps alternating (bench.run_loops)."""
    a, device = ctx.args, ctx.device
    vqgan, clip_model, z, embeds = ctx.models()
    auto = ctx.auto()
    name = bench.device_name(device)
    peak = peak_bf16_tflops(name) if device.type == "cuda" else None
    flops = bench.step_flops(vqgan, clip_model, z, embeds, a.cuts)
    precisions = bench_precisions(device)
    result.update({"device_name": name, "size": a.size, "cuts": a.cuts,
                   "clip_model": "tiny" if a.tiny else a.clip_model, "steps": a.steps,
                   "auto_precision": auto, "flops_per_step": flops,
                   "peak_bf16_tflops": peak, "peak_source": PEAK_SOURCE if peak else None})
    if device.type != "cuda":
        result["fp16_skipped"] = "fp16 autocast is timed on CUDA only (as bench --levers)"
    block = 1 if device.type == "cpu" else max(1, a.steps // 3)
    note(f"bench: {name}, {a.size[0]}x{a.size[1]}, {a.cuts} cuts, seed loop against ours in "
        f"{', '.join(precisions)}, {a.steps} timed steps each")
    with tempfile.TemporaryDirectory(prefix="bench-", dir=ctx.work) as tmp:
        loops = {"seed": bench.SeedLoop(vqgan, clip_model, z, embeds, a.cuts, Path(tmp) / "seed")}
        for p in precisions:
            loops[f"ours {p}"] = bench.OurLoop(vqgan, clip_model, z, embeds, a.cuts,
                                               Path(tmp) / f"{p}.mp4", precision=p)
        stats = bench.run_loops(loops, a.steps, device, block)
    seed_rate = 1 / stats["seed"]["s_per_step"]
    rows = {}
    for label, st in stats.items():
        rate = 1 / st["s_per_step"]
        tflops = flops * rate / 1e12
        rows[label] = {
            "precision": "fp32" if label == "seed" else label.split()[1],
            "steps_per_s": rate, "loop_steps_per_s": 1 / statistics.median(st["blocks"]),
            "ratio_to_seed": rate / seed_rate, "tflops": tflops,
            "mfu": tflops / peak if peak else None,
            "s_per_song_s_at_ips_100": bench.IPS / rate,
            "peak_gpu_mb": st["peak_cuda_mb"] if device.type == "cuda" else None,
            "first_step_s": st["first_s"], "block_s_per_step": st["blocks"],
            "frame_ms_per_step": st["frame_s_per_step"] * 1e3,
            "video_finish_ms_per_frame": st["finish_s_per_frame"] * 1e3}
        note(f"  {label:10s} {rate:8.2f} steps/s  x{rate / seed_rate:.2f} seed  {tflops:.1f} "
            f"TFLOP/s" + (f"  MFU {tflops / peak:.1%}" if peak else ""))
    result["rows"] = rows


# --- profile ---------------------------------------------------------------------------------

class Stopwatch:
    """Marks the parts of a step: a torch.profiler range each, timed by the host clock and, on a
    GPU, by CUDA events (which need no host sync until the step's figures are read)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.open: dict[str, tuple] = {}
        self.spans: list[tuple] = []  # (name, start event, end event, start s, end s)

    def _event(self):
        """A CUDA event recorded now on the current stream (None off CUDA)."""
        if not self.cuda:
            return None
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def begin(self, name: str) -> None:
        """Opens the part `name`."""
        scope = torch.autograd.profiler.record_function(name)
        scope.__enter__()
        self.open[name] = (scope, self._event(), time.perf_counter())

    def end(self, name: str) -> None:
        """Closes the part `name` (a part not open is ignored)."""
        if name not in self.open:
            return
        scope, event, start = self.open.pop(name)
        self.spans.append((name, event, self._event(), start, time.perf_counter()))
        scope.__exit__(None, None, None)

    @contextlib.contextmanager
    def part(self, name: str):
        """The part `name` around a block."""
        self.begin(name)
        try:
            yield
        finally:
            self.end(name)

    def take(self) -> dict[str, dict]:
        """Milliseconds per part (host, and GPU after one sync) since the last take."""
        if self.cuda:
            torch.cuda.synchronize()
        parts: dict[str, dict] = {}
        for name, e0, e1, t0, t1 in self.spans:
            entry = parts.setdefault(name, {"host_ms": 0.0, "gpu_ms": 0.0 if self.cuda else None})
            entry["host_ms"] += (t1 - t0) * 1e3
            if self.cuda:
                entry["gpu_ms"] += e0.elapsed_time(e1)
        self.spans = []
        return parts


# Where each part of a step begins and ends: (module, hook, action, part). Forward parts open at
# a module's forward pre-hook and close at its forward hook; backward parts at its full backward
# pre-hook and backward hook. 'quantise' is opened by profiled_step before vqgan.synth.
def _hooks(vqgan, perceptor) -> list[tuple]:
    """The module hooks that mark the parts of a step."""
    visual = perceptor.clip.visual
    return [(vqgan.post_quant_conv, "forward_pre", "end", "quantise"),
            (vqgan.post_quant_conv, "forward_pre", "begin", "decoder forward"),
            (vqgan.decoder, "forward", "end", "decoder forward"),
            (perceptor.cutouts, "forward_pre", "begin", "cut-outs and augments forward"),
            (perceptor.cutouts, "forward", "end", "cut-outs and augments forward"),
            (visual, "forward_pre", "begin", "CLIP forward"),
            (visual, "forward", "end", "CLIP forward"),
            (visual, "backward_pre", "begin", "CLIP backward"),
            (visual, "backward", "end", "CLIP backward"),
            (perceptor.cutouts, "backward_pre", "begin", "cut-outs and augments backward"),
            (perceptor.cutouts, "backward", "end", "cut-outs and augments backward"),
            (vqgan.decoder, "backward_pre", "begin", "decoder backward"),
            (vqgan.decoder, "backward", "end", "decoder backward")]


@contextlib.contextmanager
def instrumented(vqgan, perceptor, watch: Stopwatch):
    """Hooks on the decoder, the cut-outs and CLIP's image tower that mark their parts; removed
    on leaving, so the modules are as they were."""
    handles = []
    register = {"forward_pre": "register_forward_pre_hook", "forward": "register_forward_hook",
                "backward_pre": "register_full_backward_pre_hook",
                "backward": "register_full_backward_hook"}
    for module, hook, action, name in _hooks(vqgan, perceptor):
        mark = getattr(watch, action)
        handles.append(getattr(module, register[hook])(lambda *_, mark=mark, name=name: mark(name)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def profiled_step(opt: Optimiser, targets: list, iteration: int, watch: Stopwatch,
                  writer=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimiser.step's work in its order (init_weight 0, as the bench runs it), each part
    marked, then the frame handed to the writer as OurLoop does; returns (picture, loss).

    The module parts (decoder, cut-outs, CLIP) are marked by `instrumented`'s hooks."""
    with watch.part("step"):
        with watch.part("zero_grad"):
            opt.opt.zero_grad(set_to_none=True)
        with autocast(opt.device, opt.precision):
            watch.begin("quantise")  # closed where the decoder's first layer starts
            image = opt.vqgan.synth(opt.z)
            embeds = opt.perceptor.encode_views(image).float()  # (cutn, D)
        with watch.part("loss"):
            loss = torch.stack([spherical_loss(embeds, t, w) for t, w in targets]).sum()
        with watch.part("backward"):
            loss.backward()
        with watch.part("optimiser step"):
            opt.opt.step()
        with watch.part("latent clamp"), torch.no_grad():
            opt.z.copy_(opt.z.maximum(opt.z_min).minimum(opt.z_max))
        image = image.detach().float()
        if writer is not None:
            with watch.part("frame hand-off"):
                writer.write(to_frame(image, cpu=False))
    return image, loss.detach()


TOP_LEVEL = ("zero_grad", "quantise", "decoder forward", "cut-outs and augments forward",
             "CLIP forward", "loss", "backward", "optimiser step", "latent clamp",
             "frame hand-off")
IN_BACKWARD = ("CLIP backward", "cut-outs and augments backward", "decoder backward")


def by_part(steps: list[dict]) -> dict:
    """The median of each part over the steps, in the step's order, with what the named parts
    leave unexplained."""
    order = ["step", *TOP_LEVEL[:TOP_LEVEL.index("backward") + 1], *IN_BACKWARD,
             *TOP_LEVEL[TOP_LEVEL.index("backward") + 1:]]
    table = {}
    for name in order:
        row = {}
        for clock in ("host_ms", "gpu_ms"):
            values = [s[name][clock] for s in steps if name in s and s[name][clock] is not None]
            row[clock] = statistics.median(values) if values else None
        if any(name in s for s in steps):
            table[name] = row
    for clock in ("host_ms", "gpu_ms"):
        if table.get("backward", {}).get(clock) is not None:
            inside = sum(table[n][clock] or 0 for n in IN_BACKWARD if n in table)
            table.setdefault("backward other (quantise, loss, clamp)", {})[clock] = (
                table["backward"][clock] - inside)
        if table.get("step", {}).get(clock) is not None:
            named = sum(table[n][clock] or 0 for n in TOP_LEVEL if n in table)
            table.setdefault("other (in step, outside the parts)", {})[clock] = (
                table["step"][clock] - named)
    return table


def _event_attr(event, *names) -> float:
    """The first of a profiler event's attributes that exists (torch renamed cuda to device)."""
    for name in names:
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def top_ops(prof, cuda: bool, marks: set[str], count: int = 15) -> list[dict]:
    """The ops with the most self time (GPU time on CUDA), our part ranges left out."""
    rows = []
    for e in prof.key_averages():
        if e.key in marks:
            continue
        device_us = _event_attr(e, "self_device_time_total", "self_cuda_time_total")
        rows.append({"name": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
                     "self_gpu_ms": device_us / 1e3 if cuda else None})
    key = "self_gpu_ms" if cuda else "self_cpu_ms"
    return sorted(rows, key=lambda r: -(r[key] or 0))[:count]


def gpu_kernels(prof, marks: set[str]) -> tuple[int, float]:
    """The GPU-side events of a profile (kernels, copies) and their summed milliseconds."""
    from torch.autograd import DeviceType

    kernels = [e for e in prof.events()
               if e.device_type == DeviceType.CUDA and e.name not in marks]
    return len(kernels), sum(e.time_range.elapsed_us() for e in kernels) / 1e3


def sync_sites(records: list[tuple]) -> list[dict]:
    """Distinct host synchronisations: where each comes from (the innermost frame in this
    project or kornia, and the innermost of this project), how often, on which thread."""
    sites: dict[tuple, dict] = {}
    here = str(Path(__file__).resolve())
    for message, thread, stack in records:
        frames = [f for f in stack if f.filename != here and Path(f.filename).name != "warnings.py"]
        ours = [f for f in frames if any(m in f.filename for m in SITE_MARKERS)]
        project = [f for f in ours if SITE_MARKERS[0] in f.filename]
        site = ours[-1] if ours else (frames[-1] if frames else None)
        where = f"{site.filename}:{site.lineno} ({site.name})" if site else "unknown"
        caller = (f"{project[-1].filename}:{project[-1].lineno} ({project[-1].name})"
                  if project else None)
        innermost = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None
        entry = sites.setdefault((where, thread), {
            "site": where, "caller": caller, "innermost": innermost, "thread": thread,
            "code": site.line if site else None, "message": message.splitlines()[0][:200],
            "count": 0})
        entry["count"] += 1
    return sorted(sites.values(), key=lambda s: -s["count"])


@contextlib.contextmanager
def sync_warnings():
    """Collects torch's sync-debug warnings, each with the thread and the Python stack that
    raised it (the backward pass's arrive from loss.backward(), where autograd replays them)."""
    records = []

    def show(message, category, filename, lineno, file=None, line=None):
        if SYNC_MESSAGE in str(message):
            records.append((str(message), threading.current_thread().name,
                            traceback.extract_stack()[:-1]))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield records


def find_syncs(opt: Optimiser, targets: list, writer_path: Path, size: tuple, start: int):
    """Host syncs of one real step (Optimiser.step, the finite check and the frame's trip
    through a FrameWriter, as render.Renderer does them) under set_sync_debug_mode('warn')."""
    from music2video.output.video import FrameWriter

    writer = FrameWriter(writer_path, *size, bench.FPS)
    finite = torch.ones((), dtype=torch.bool, device=opt.device)
    with sync_warnings() as records:
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = opt.step(targets, start)
            finite &= torch.isfinite(result.loss)
            writer.write(to_frame(result.image, cpu=False))
            writer.close()  # the writer thread's copy of the frame happens inside the window
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sync_sites(records)


@contextlib.contextmanager
def extra(result: dict, key: str):
    """A figure a part can do without: its error is kept under key_error and the part goes on."""
    try:
        yield
    except Exception as err:  # the part's main figures are already in `result`
        result[key] = None
        result[f"{key}_error"] = f"{type(err).__name__}: {str(err)[:300]}"


def profile(ctx: Context, result: dict) -> None:
    """One step of ours by part, its top ops, a trace, and its host syncs (CUDA)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from music2video.output.video import FrameWriter

    a, device = ctx.args, ctx.device
    vqgan, clip_model, z, embeds = ctx.models()
    prec = ctx.auto()
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # as render.load_for sets it
    perceptor = Perceptor(clip_model, MakeCutouts(clip_model.visual.input_resolution, a.cuts))
    opt = Optimiser(vqgan, perceptor, z, precision=prec)
    targets = [(Target(e), 1.0) for e in embeds]
    size = (z.shape[3] * vqgan.factor, z.shape[2] * vqgan.factor)
    result.update({"precision": prec, "size": list(size), "cuts": a.cuts,
                   "steps_timed": a.profile_steps})
    watch = Stopwatch(device)
    marks = set(TOP_LEVEL) | set(IN_BACKWARD) | {"step"}
    note(f"profile: one step of ours in {prec}, by part ({a.profile_steps} steps, then "
        "torch.profiler)")
    with tempfile.TemporaryDirectory(prefix="profile-", dir=ctx.work) as tmp:
        writer = FrameWriter(Path(tmp) / "frames.mp4", *size, bench.FPS)
        with instrumented(vqgan, perceptor, watch):
            for i in range(2):  # warm-up: cuDNN's autotuning, the allocator, lazy inits
                profiled_step(opt, targets, i, watch, writer)
            watch.take()
            steps = []
            for i in range(a.profile_steps):
                profiled_step(opt, targets, 2 + i, watch, writer)
                steps.append(watch.take())
            result["parts_ms"] = by_part(steps)
            ctx.flush()
            with extra(result, "top_ops"):  # torch.profiler's view of one more step
                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
                with torch_profile(activities=activities) as prof:
                    profiled_step(opt, targets, 2 + a.profile_steps, watch, writer)
                    _sync(device)
                watch.take()
                result["top_ops"] = top_ops(prof, cuda, marks)
                if cuda:
                    with extra(result, "gpu_busy_ms"):
                        kernels, busy = gpu_kernels(prof, marks)
                        step_ms = result["parts_ms"]["step"]["gpu_ms"]
                        result.update({"gpu_events_per_step": kernels, "gpu_busy_ms": busy,
                                       "gpu_busy_share": busy / step_ms if step_ms else None})
                with extra(result, "trace"):
                    trace = Path(tmp) / "trace.json"
                    prof.export_chrome_trace(str(trace))
                    with open(trace, "rb") as src, gzip.open(ctx.out / TRACE, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    result["trace"] = TRACE
        writer.close()
        ctx.flush()
        if not cuda:
            result["syncs"] = None
            result["syncs_skipped"] = (f"{device}: torch.cuda.set_sync_debug_mode needs CUDA; "
                                       "there is no host sync to find on a CPU")
            return
        note("profile: one real step under torch.cuda.set_sync_debug_mode('warn')")
        result["syncs"] = find_syncs(opt, targets, Path(tmp) / "sync.mp4", size,
                                     3 + a.profile_steps)
        note(f"  {sum(s['count'] for s in result['syncs'])} host syncs at "
            f"{len(result['syncs'])} sites")


# --- pipeline --------------------------------------------------------------------------------

def model_files(ctx: Context) -> dict[str, Path]:
    """Random-weight models in the real files' formats: the bench's architectures, or tiny."""
    from music2video.testing import tiny

    folder = ctx.work / "models"
    if ctx.args.tiny:
        return tiny.write_all(folder)
    return tiny.write_full_size(folder, bench.VQGAN_F16_16384,
                                bench.CLIP_ARCHS[ctx.args.clip_model])


def planned_steps(argv: list) -> int:
    """The steps a generate.py command line would render, from the project's own planner."""
    from music2video.cli import parse_options
    from music2video.song import plan

    opts = parse_options("beats", argv)
    song = plan.read_song(opts.audio_prompt[0], opts.audio_sampling_freq)
    lyrics, _ = plan.read_lyrics(opts.lyrics, song.duration, opts.fps)
    return sum(s.iterations for s in plan.build_schedule(opts, song, lyrics))


def song_length(ctx: Context, result: dict, argvs: dict[float, list]) -> float:
    """Seconds of the demo song to render: all asked for, or less where the runs' planned steps
    would not fit what is left of the budget at the rate the bench measured for our loop."""
    asked = ctx.args.song_seconds
    steps = {ips: planned_steps(argv) for ips, argv in argvs.items()}
    rows = ctx.report["parts"].get("bench", {}).get("result", {}).get("rows", {})
    rate = rows.get(f"ours {ctx.precision}", {}).get("steps_per_s")
    plan = result["budget_plan"] = {"planned_steps": {f"{ips:g}": n for ips, n in steps.items()},
                                    "bench_steps_per_s": rate}
    if not rate:
        plan["note"] = "no bench rate to plan with: the song is not shortened"
        return asked
    seconds_per_song_s = sum(steps.values()) / asked / (PIPELINE_SHARE * rate)
    fit = (ctx.remaining() - RUN_OVERHEAD_S * len(steps)) / seconds_per_song_s
    plan.update({"predicted_s": RUN_OVERHEAD_S * len(steps) + seconds_per_song_s * asked,
                 "remaining_s": ctx.remaining(), "fits_song_seconds": fit})
    return min(asked, fit)


def write_song(folder: Path, seconds: float) -> tuple[Path, Path | None]:
    """The demo song's first `seconds` as mp3, and its lyrics (None when none fall inside)."""
    from music2video.song.lyrics import parse_timestamp
    from music2video.testing import demo

    folder.mkdir(parents=True, exist_ok=True)
    song = demo.encode_audio(demo.demo_song()[:round(seconds * demo.DEMO_SR)], demo.DEMO_SR,
                             folder / "song.mp3", bitrate="128k")
    if parse_timestamp(demo.DEMO_LYRICS[0][0]) >= seconds:
        return song, None
    lyrics = folder / "lyrics.csv"
    demo.write_lyrics(lyrics)
    return song, lyrics


def run_generate(cmd: list[str], log: Path, timeout: float) -> float:
    """Runs generate.py, its stderr to `log`; returns its wall seconds. Past the timeout it
    gets a Ctrl-C (it stops cleanly), then a kill."""
    start = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        try:
            code = proc.wait(timeout=max(timeout, 1))
        except BaseException:  # the timeout, or this command itself being stopped
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    if code:
        raise RuntimeError(f"generate.py exited {code}: "
                           f"{log.read_text(errors='replace')[-TAIL:].strip()}")
    return time.perf_counter() - start


def check_video(rep: dict) -> dict:
    """The video against its song: frames == round(song * fps), and its audio track within one
    frame of the picture."""
    from music2video.song.audio import load_audio

    sr = 16000
    audio_s = len(load_audio(Path(rep["video"]), sr)) / sr
    frame_s = 1 / rep["fps"]
    return {"video_frames": rep["video_frames"], "song_frames": rep["song_frames"],
            "frames_match": rep["video_frames"] == rep["song_frames"],
            "video_seconds": rep["video_seconds"], "audio_seconds": audio_s,
            "audio_video_gap_frames": abs(rep["video_seconds"] - audio_s) / frame_s,
            "in_sync": (rep["video_frames"] == rep["song_frames"]
                        and abs(rep["video_seconds"] - audio_s) <= frame_s)}


REPORT_FIELDS = ("song_seconds", "segments", "steps", "render_seconds", "steps_per_second",
                 "wall_seconds", "realtime_factor", "peak_gpu_mb", "peak_gpu_reserved_mb",
                 "peak_ram_mb", "device", "precision", "frame_difference", "sync")


def pipeline(ctx: Context, result: dict) -> None:
    """generate.py on the demo song, once per -ips setting, with the models in real formats."""
    from music2video.driver.folder import REPORT

    a = ctx.args
    ctx.nets = None  # the bench's networks: the generate runs need the GPU's memory
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    ctx.auto()
    note("pipeline: writing " + ("tiny" if a.tiny else "full-size") + " random-weight models")
    start = time.perf_counter()
    files = model_files(ctx)
    result["models"] = {key: {"path": path.name, "mb": path.stat().st_size / 2 ** 20}
                        for key, path in files.items()}
    result["models_write_s"] = time.perf_counter() - start
    flags = ["-conf", files["vqgan_config"], "-ckpt", files["vqgan_checkpoint"],
             "-m", files["clip"], "--wav2clip_checkpoint", files["wav2clip"]]

    def argv(ips: float, song: Path, lyrics: Path | None) -> list[str]:
        """generate.py's command line for one run."""
        out = ctx.work / f"ips{ips:g}" / "video.png"
        return [str(c) for c in ["-ap", song, *(["-lyr", lyrics] if lyrics else []), "-o", out,
                                 "-s", *a.size, "-cuts", a.cuts, "-sd", 0, "--precision",
                                 "auto", "-se", 0, "-ips", f"{ips:g}", "-cd", ctx.device, "-q",
                                 *flags]]

    song, lyrics = write_song(ctx.work / "song", a.song_seconds)
    seconds = song_length(ctx, result, {ips: argv(ips, song, lyrics) for ips in a.ips})
    if seconds < min(3.0, a.song_seconds):
        raise Skipped(f"only {ctx.remaining():.0f} s of the budget left: {seconds:.1f} s of song "
                      "would fit; give a larger --budget-seconds")
    result["song_seconds_asked"] = a.song_seconds
    result["song_seconds"] = seconds = min(a.song_seconds, round(seconds, 1))
    if seconds < a.song_seconds:
        song, lyrics = write_song(ctx.work / "song_short", seconds)
    runs = result.setdefault("runs", {})
    ctx.flush()
    for ips in a.ips:
        label = f"-ips {ips:g}" + (" (loudness rule)" if ips == 0 else "")
        args = argv(ips, song, lyrics)
        cmd = [sys.executable, str(REPO / "generate.py"), *args]
        out = Path(args[args.index("-o") + 1])
        runs[label] = run = {"command": shlex.join(cmd[1:])}
        timeout = ctx.remaining() - 10
        if timeout < 20:
            run["status"] = "skipped: the budget is spent"
            continue
        note(f"pipeline: generate.py {label} on {seconds:g} s of song (timeout {timeout:.0f} s)")
        try:
            wall = run_generate(cmd, ctx.work / f"ips{ips:g}.log", timeout)
        except subprocess.TimeoutExpired:
            run["status"] = f"timed out after {timeout:.0f} s (the budget)"
            ctx.flush()
            continue
        except BaseException:
            run["status"] = "interrupted"
            raise
        rep = json.loads((out.with_suffix("") / REPORT).read_text())
        run.update({key: rep.get(key) for key in REPORT_FIELDS})
        run.update({"status": "ok", "wall_s": wall, "realtime_factor_wall": wall / seconds,
                    "check": check_video(rep)})
        gpu = f", peak GPU {run['peak_gpu_mb']:.0f} MiB" if run["peak_gpu_mb"] else ""
        note(f"  {rep['steps']} steps, {rep['steps_per_second']:.2f} steps/s, wall {wall:.1f} s "
            f"= {wall / seconds:.2f}x the song{gpu}; in sync: {run['check']['in_sync']}")
        ctx.flush()


# --- the report ------------------------------------------------------------------------------

def _num(value, fmt: str = ".2f", suffix: str = "") -> str:
    """A number for the table, or a dash."""
    return "–" if value is None else f"{value:{fmt}}{suffix}"


def markdown(report: dict) -> str:
    """The short table: the bench rows, the step's parts, the syncs, the pipeline runs."""
    parts = report.get("parts", {})
    env = parts.get("environment", {}).get("result", {})
    lines = [f"# GPU report: {env.get('device_name', report.get('device'))}", "",
             f"{report.get('started')} to {report.get('updated')}; torch {env.get('torch')}, "
             f"CUDA {env.get('torch_cuda')}, driver {env.get('driver', '–')}; bf16 peak "
             f"{_num(env.get('peak_bf16_tflops'), '.0f')} TFLOP/s (datasheet), "
             f"{_num(env.get('matmul_bf16_tflops'), '.0f')} measured (8192³ matmul).", ""]
    b = parts.get("bench", {}).get("result", {})
    if b.get("rows"):
        lines += [f"## Bench: {b['size'][0]}×{b['size'][1]}, {b['cuts']} cuts, {b['clip_model']}, "
                  f"{b['steps']} timed steps per loop; {b['flops_per_step'] / 1e12:.3f} TFLOP "
                  "per step", "",
                  "| loop | steps/s | × seed | TFLOP/s | MFU | peak GPU MiB | first step s |",
                  "|---|---|---|---|---|---|---|"]
        for label, r in b["rows"].items():
            lines.append(f"| {label} | {r['steps_per_s']:.2f} | {r['ratio_to_seed']:.2f} | "
                         f"{r['tflops']:.2f} | {_num(r['mfu'], '.1%')} | "
                         f"{_num(r['peak_gpu_mb'], '.0f')} | {r['first_step_s']:.2f} |")
        lines.append("")
    p = parts.get("profile", {}).get("result", {})
    if p.get("parts_ms"):
        lines += [f"## One step of ours by part ({p['precision']}, median of "
                  f"{p['steps_timed']} steps)", "", "| part | GPU ms | host ms |", "|---|---|---|"]
        for name, r in p["parts_ms"].items():
            label = f"↳ {name}" if name in IN_BACKWARD else name  # inside the backward pass
            lines.append(f"| {label} | {_num(r.get('gpu_ms'))} | {_num(r.get('host_ms'))} |")
        lines.append("")
        if p.get("gpu_busy_ms") is not None:
            lines += [f"GPU busy {p['gpu_busy_ms']:.2f} ms of the step ({p['gpu_events_per_step']} "
                      f"kernels and copies).", ""]
    if p.get("syncs") is not None:
        lines += ["## Host syncs in one step", "", "| count | where | thread |", "|---|---|---|"]
        lines += [f"| {s['count']} | {s['site']} | {s['thread']} |" for s in p["syncs"]]
        lines.append("")
    runs = parts.get("pipeline", {}).get("result", {}).get("runs", {})
    if runs:
        lines += ["## generate.py on the demo song", "",
                  "| run | song s | steps | steps/s | wall s | realtime factor | peak GPU MiB "
                  "| frames = song | in sync |", "|---|---|---|---|---|---|---|---|---|"]
        for label, r in runs.items():
            if r.get("status") != "ok":
                lines.append(f"| {label} | {r.get('status', 'did not finish')} |||||||| ")
                continue
            lines.append(f"| {label} | {r['song_seconds']:.1f} | {r['steps']} | "
                         f"{_num(r['steps_per_second'])} | {r['wall_s']:.1f} | "
                         f"{r['realtime_factor_wall']:.2f} | {_num(r['peak_gpu_mb'], '.0f')} | "
                         f"{r['check']['frames_match']} | {r['check']['in_sync']} |")
        lines.append("")
    notes = [f"- {name}: {entry['status']}"
             + (f": {entry.get('error') or entry.get('reason')}"
                if entry["status"] != "ok" else "") + f" ({entry.get('seconds', 0):.0f} s)"
             for name, entry in parts.items()]
    return "\n".join(lines + ["## Parts", ""] + notes) + "\n"


def run_part(ctx: Context, name: str, fn) -> None:
    """Runs one part, recording its figures, or its error, or why it was skipped."""
    entry = ctx.report["parts"][name] = {"status": "running", "result": {}}
    note(f"{name} ...")
    start = time.monotonic()
    try:
        fn(ctx, entry["result"])
        entry["status"] = "ok"
    except Skipped as why:
        entry.update(status="skipped", reason=str(why))
    except Exception as err:  # one part failing must leave the others to run
        first = (str(err).strip().splitlines() or [""])[0][:300]
        entry.update(status="error", error=f"{type(err).__name__}: {first}",
                     traceback=traceback.format_exc()[-TAIL:])
    except BaseException:  # Ctrl-C, SIGTERM from `timeout`: record it, then stop
        entry["status"] = "interrupted"
        raise
    finally:
        entry["seconds"] = time.monotonic() - start
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
        ctx.flush()
        note(f"{name}: {entry['status']} ({entry['seconds']:.1f} s)"
            + (f": {entry.get('error') or entry.get('reason')}" if entry["status"] in
               ("error", "skipped") else ""))


def get_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m tools.gpureport",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("out", type=Path, help="folder for report.json, report.md and the trace")
    p.add_argument("--tiny", action="store_true",
                   help="tiny models, 64x64, few steps, half a second of song: a CPU run (tests)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device")
    p.add_argument("--budget-seconds", type=float, default=300,
                   help="the pipeline's song is shortened to fit what is left of this")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                   help="the parts to run, in this order")
    p.add_argument("--size", nargs=2, type=int, metavar=("W", "H"),
                   help="picture size (512 512; --tiny 64 64)")
    p.add_argument("--cuts", type=int, help="cut-outs per step (32; --tiny 4)")
    p.add_argument("--clip_model", choices=[k for k in bench.CLIP_ARCHS if k != "tiny"],
                   default="ViT-B/32", help="CLIP architecture")
    p.add_argument("--steps", type=int, help="timed bench steps per loop (20; --tiny 2)")
    p.add_argument("--profile-steps", type=int, help="steps timed by part (5; --tiny 2)")
    p.add_argument("--song-seconds", type=float, help="seconds of the demo song (30; --tiny 0.5)")
    p.add_argument("--ips", nargs="+", type=float,
                   help="one generate run per value; 0 is the loudness rule (100 0; --tiny 10 0)")
    p.add_argument("--work", type=Path,
                   help="scratch folder for models, songs and videos (default: a temporary one, "
                        "deleted at the end)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """The options, with the mode's defaults filled in."""
    parser = get_parser()
    args = parser.parse_args(argv)
    for key, value in MODES["tiny" if args.tiny else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA GPU is visible here; use --device cpu")
    if min(args.size) < 1 or args.cuts < 1 or args.steps < 1 or args.profile_steps < 1:
        parser.error("--size, --cuts, --steps and --profile-steps must be positive")
    return args


def main(argv=None) -> dict:
    """Runs the parts in order and returns the report (also in OUT_DIR)."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # `timeout` stops this command with SIGTERM: unwind, so the parts' figures are written.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)) if main_thread else None
    work = args.work or Path(tempfile.mkdtemp(prefix="m2v-gpureport-"))
    work.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    report = {"started": now(), "device": str(device), "tiny": args.tiny,
              "argv": list(sys.argv[1:] if argv is None else argv),
              "budget_seconds": args.budget_seconds, "settings": {
                  k: v for k, v in vars(args).items() if k not in ("out", "work")},
              "parts": {}}
    ctx = Context(args, device, args.out, work, time.monotonic() + args.budget_seconds, report)
    steps = {"environment": environment, "bench": bench_rows, "profile": profile,
             "pipeline": pipeline}
    note(f"{device}, {'tiny models' if args.tiny else 'full-size models'}, budget "
        f"{args.budget_seconds:g} s; results in {args.out}")
    try:
        for name in args.parts:
            run_part(ctx, name, steps[name])
    finally:
        report["finished"] = now()
        ctx.flush()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    failed = [n for n, e in report["parts"].items() if e["status"] == "error"]
    note(f"done: {args.out / REPORT_JSON}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return report


if __name__ == "__main__":
    main()
