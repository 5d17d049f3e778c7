"""Which arithmetic `--precision auto` runs in: fp32 or bf16, whichever is faster on this machine.

CUDA: bf16 where the chosen GPU computes it natively (compute capability 8.0 or later; ROCm).
CPU: fp32 without bf16 instructions; with them, a short timing of a decoder block and a CLIP
block in both precisions decides, because bf16 instructions alone do not make bf16 faster (issue
8: an Intel Xeon with avx512_bf16 and no AMX ran the bench's step about 1.7x slower in bf16).
The timing is kept per machine in a small JSON file, so the same machine always chooses the same."""

import json
import os
import statistics
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..files import CACHE_ENV, cache_folder

# /proc/cpuinfo names of bf16 arithmetic: x86 (AVX-512 BF16, AMX) and Arm (BF16, SVE BF16).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16", "svebf16")
KEY_FLAGS = (*BF16_FLAGS, "amx_tile", "avx512_fp16")  # the flags that can change the answer
MARGIN = 0.9  # bf16 only when its step is predicted at least 10% faster: noise must not flip it
ROUNDS = 4  # timed rounds per probe and precision, after one untimed round
# FLOPs of one step, forward and backward to the latent (torch.utils.flop_counter, the bench):
DECODER_FLOP_PER_PIXEL = 7.8e6  # VQGAN f16-16384 decoder: 0.51 TFLOP at 256x256
CLIP_FLOP_PER_CUT = 1.75e10  # CLIP ViT-B/32: 0.56 TFLOP for 32 cut-outs of 224x224
CLIP_LAYERS = 12  # ViT-B/32's layers; the CLIP probe is one of them
DECODER_CHANNELS = 128  # the decoder's two full-resolution levels, most of its work
# the decoder probe, a ResnetBlock: two 3x3 convs, each run forward and backward to its input
DECODER_PROBE_FLOP_PER_PIXEL = 2 * 2 * 2 * 9 * DECODER_CHANNELS ** 2
PROBE_SIDE = 64  # the decoder probe's side at most, so timing stays near a second
CLIP_WIDTH, CLIP_HEADS, CLIP_TOKENS = 768, 12, 50  # one ViT-B/32 layer on 7x7 patches + class
PROBE_CUTS = 4  # the CLIP probe's batch at most


@dataclass(frozen=True)
class Choice:
    """The precision `auto` resolves to, and why (one line for the log)."""

    precision: str  # 'fp32' or 'bf16'
    reason: str


def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU's model name and its feature flags, from /proc/cpuinfo where there is one."""
    name, flags = "", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware") and not name:
            name = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if not text:  # no /proc (macOS, Windows): ask torch's own checks
        import platform

        name = platform.processor() or platform.machine()
        flags = {flag for flag, check in (("avx512_bf16", "_is_avx512_bf16_supported"),
                                          ("amx_tile", "_is_amx_tile_supported"))
                 if getattr(torch.cpu, check, lambda: False)()}
    return name or "unknown cpu", frozenset(flags)


def cache_path() -> Path:
    """precision.json in this machine's cache folder ($MUSIC2VIDEO_CACHE, else the tool's
    per-user folder)."""
    return cache_folder() / "precision.json"


def machine_cores() -> int:
    """The CPU threads torch starts with on this machine, whatever this process's
    OMP_NUM_THREADS says (Ray sets it to 1 in its workers): the physical cores, counted from
    sysfs as torch's cpuinfo counts them, else the logical CPUs."""
    cores = set()
    for cpu in Path("/sys/devices/system/cpu").glob("cpu[0-9]*"):
        try:
            cores.add(((cpu / "topology/physical_package_id").read_text().strip(),
                       (cpu / "topology/core_id").read_text().strip()))
        except OSError:
            continue
    return len(cores) or os.cpu_count() or 1


def hardware(device) -> str:
    """What a device is, for the report: the GPU's name, else the CPU's model."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_info()[0] if device.type == "cpu" else device.type


def probe_shapes(size: tuple[int, int], cuts: int) -> tuple[tuple[int, int], int]:
    """The decoder probe's (h, w), half the picture's sides up to PROBE_SIDE, and CLIP's batch."""
    width, height = size
    side = (max(1, min(PROBE_SIDE, height // 2)), max(1, min(PROBE_SIDE, width // 2)))
    return side, max(1, min(PROBE_CUTS, cuts))


def machine_key(size: tuple[int, int], cuts: int) -> str:
    """What the timing depends on: CPU model and flags, torch, threads, probe shapes."""
    name, flags = cpu_info()
    (h, w), batch = probe_shapes(size, cuts)
    relevant = ",".join(sorted(flags.intersection(KEY_FLAGS))) or "-"
    return (f"{name}|{relevant}|torch {torch.__version__}|{torch.get_num_threads()} threads"
            f"|decoder {h}x{w}|clip {batch}")


def _probes(size: tuple[int, int], cuts: int) -> dict:
    """A decoder ResnetBlock and a CLIP ViT-B/32 layer (random, frozen) with inputs to match."""
    from clip.model import ResidualAttentionBlock
    from taming.modules.diffusionmodules.model import ResnetBlock

    (h, w), batch = probe_shapes(size, cuts)
    with torch.random.fork_rng(devices=[]):  # the run's random stream stays untouched
        torch.manual_seed(0)
        block = ResnetBlock(in_channels=DECODER_CHANNELS, out_channels=DECODER_CHANNELS,
                            temb_channels=0, dropout=0.0)
        layer = ResidualAttentionBlock(CLIP_WIDTH, CLIP_HEADS)
        pixels = torch.randn(1, DECODER_CHANNELS, h, w)  # (1, C, h, w)
        tokens = torch.randn(CLIP_TOKENS, batch, CLIP_WIDTH)  # (L, N, D), CLIP's layout
    block.eval().requires_grad_(False)
    layer.eval().requires_grad_(False)
    return {"decoder": (lambda x: block(x, None), pixels), "clip": (layer, tokens)}


def _step_seconds(fn, x: torch.Tensor, precision: str) -> float:
    """Seconds of one forward and backward to the input, as a step does them."""
    x = x.detach().requires_grad_(True)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        y = fn(x)
    y.float().square().mean().backward()
    return time.perf_counter() - start


def measure(size: tuple[int, int], cuts: int, rounds: int = ROUNDS) -> dict:
    """Median seconds of each probe in fp32 and bf16, the precisions alternating round by round."""
    times = {p: {name: [] for name in ("decoder", "clip")} for p in ("fp32", "bf16")}
    with torch.enable_grad():  # the caller may be in no_grad
        for name, (fn, x) in _probes(size, cuts).items():
            for r in range(rounds + 1):
                for precision in ("fp32", "bf16") if r % 2 else ("bf16", "fp32"):
                    seconds = _step_seconds(fn, x, precision)
                    if r:  # round 0 warms oneDNN's kernels up
                        times[precision][name].append(seconds)
    return {p: {name: statistics.median(s) for name, s in probes.items()}
            for p, probes in times.items()}


def bf16_ratio(times: dict, size: tuple[int, int], cuts: int) -> float:
    """A step's predicted bf16 time over its fp32 time: each probe scaled up to its part's FLOPs."""
    width, height = size
    (h, w), batch = probe_shapes(size, cuts)
    scale = {"decoder": width * height * DECODER_FLOP_PER_PIXEL
             / (h * w * DECODER_PROBE_FLOP_PER_PIXEL),
             "clip": cuts * CLIP_LAYERS / batch}  # probes per step
    fp32, bf16 = (sum(scale[n] * times[p][n] for n in scale) for p in ("fp32", "bf16"))
    return bf16 / fp32


def _read_cache(path: Path) -> dict:
    """The cached timings, or nothing when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, entry: dict) -> None:
    """Adds one machine's timings to the cache file, atomically; warns if it cannot."""
    from ..files import RunError, write_bytes

    data = json.dumps({**_read_cache(path), key: entry}, indent=1, sort_keys=True)
    try:
        write_bytes(path, data.encode("utf-8"))
    except (OSError, RunError) as err:
        reason = getattr(err, "strerror", None) or err
        warnings.warn(f"cannot keep the precision timing in {path} ({reason}); "
                      f"the next run times it again (set {CACHE_ENV} to a writable folder)",
                      stacklevel=2)


def _cuda_choice(device: torch.device) -> Choice:
    """bf16 where the chosen GPU computes it natively, else fp32."""
    if torch.version.hip:
        return Choice("bf16", "ROCm GPUs compute bf16 natively")
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    if (major, minor) >= (8, 0):
        return Choice("bf16", f"cuda:{index} computes bf16 natively (compute capability "
                              f"{major}.{minor})")
    return Choice("fp32", f"cuda:{index} has compute capability {major}.{minor}; bf16 needs 8.0")


def _cpu_choice(size: tuple[int, int], cuts: int, path: Path) -> Choice:
    """fp32 without bf16 instructions; with them, the faster by a timing kept per machine."""
    name, flags = cpu_info()
    if not flags.intersection(BF16_FLAGS):
        return Choice("fp32", f"{name} has no bf16 instructions")
    key = machine_key(size, cuts)
    entry = _read_cache(path).get(key)
    try:
        ratio = bf16_ratio(entry["times"], size, cuts)
        when = f"timed {entry['measured']}, kept in {path}"
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        entry = {"times": measure(size, cuts),
                 "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
        ratio = bf16_ratio(entry["times"], size, cuts)
        when = "timed now"
        _write_cache(path, key, entry)
    precision = "bf16" if ratio <= MARGIN else "fp32"
    return Choice(precision, f"{name}: a bf16 step takes {ratio:.2f}x an fp32 step here "
                             f"({when}); bf16 needs {MARGIN:g}x or less")


def decide(device, size: tuple[int, int] = (512, 512), cuts: int = 32) -> Choice:
    """The precision `auto` means for this device and picture size (W, H), with the reason."""
    device = torch.device(device)
    if device.type == "cuda":
        return _cuda_choice(device)
    if device.type == "cpu":
        return _cpu_choice(tuple(size), cuts, cache_path())
    return Choice("fp32", f"{device.type}: bf16 autocast is not known to be faster there")


def choose(device, size: tuple[int, int] = (512, 512), cuts: int = 32) -> str:
    """'bf16' or 'fp32': whichever runs a step faster on this device at this picture size (W, H)."""
    return decide(device, size, cuts).precision
