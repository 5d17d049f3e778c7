"""Benchmark: the seed's per-step work against our loop, on full-size random-weight networks.

    python -m tools.bench --device cpu --size 256 256 --cuts 8 --steps 3
    python -m tools.bench --device cuda --size 512 512 --cuts 32 --steps 30 --precision bf16
    python -m tools.bench --levers     # one row per lever, each against the same baseline
    python -m tools.bench --memory     # peak RSS of generating a 1- and a 10-minute song
    python -m tools.bench --scaling --size 128 128   # 1 against 2 workers (in unshare -n)
    python -m tools.bench --sync       # the sync figure at -ips 0, 4, 30, 100, with and without --react

The networks have the real architectures (VQGAN ImageNet f16-16384, CLIP ViT-B/32) and random
weights, so nothing is downloaded: the timings are real, the pictures are noise. Both loops run
in one process on the same inputs, their steps alternating, so load from other programs hits
both alike. The last line printed is one JSON object."""

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, before torch loads OpenMP: on a CPU shared with other programs, threads
# spinning at barriers while descheduled make step times swing tenfold; sleeping threads keep the
# timings comparable. (Importing this module changes nothing.)
if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from music2video.engine import precision  # noqa: E402
from music2video.engine.guidance import (
    CLIP_MEAN,
    CLIP_STD,
    NOISE_FAC,
    MakeCutouts,
    Perceptor,
    Target,
    augment,
)
from music2video.engine.optimise import Optimiser, random_latent, to_frame  # noqa: E402
from music2video.models import networks  # noqa: E402
from music2video.models.autograd import clamp_with_grad, replace_grad  # noqa: E402
from music2video.options import DEFAULT_AUGMENTS, PRECISIONS  # noqa: E402

# taming's configs/vqgan_imagenet_f16_16384.yaml, model.params without the training loss
VQGAN_F16_16384 = {"embed_dim": 256, "n_embed": 16384, "ddconfig": {
    "double_z": False, "z_channels": 256, "resolution": 256, "in_channels": 3, "out_ch": 3,
    "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16],
    "dropout": 0.0}}
# clip.model.CLIP arguments as clip.model.build_model reads them from each released checkpoint:
# embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size, context_length,
# vocab_size, transformer_width, transformer_heads, transformer_layers
CLIP_ARCHS = {
    "ViT-B/32": (512, 224, 12, 768, 32, 77, 49408, 512, 8, 12),
    "ViT-B/16": (512, 224, 12, 768, 16, 77, 49408, 512, 8, 12),
    "ViT-L/14": (768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12),
    "tiny": (512, 32, 1, 64, 16, 77, 49408, 64, 1, 1),  # music2video.tiny's CLIP
}
IPS = 100  # the seed's -ips: steps per second of song
FPS = 30
SHOW_EVERY = 50  # the seed's -se: the loss is read (a host sync) only this often
TEXT = "a lighthouse on a cliff at sunset"


def build_models(clip_model: str, device, tiny: bool = False, seed: int = 0):
    """VQGAN and CLIP of the real (or tiny) architectures with random weights, frozen."""
    from clip.model import CLIP

    from music2video.testing.tiny import vqgan_config

    torch.manual_seed(seed)
    params = vqgan_config()["model"]["params"] if tiny else VQGAN_F16_16384
    vqgan = networks.VQGAN(networks.VQMODEL, params)
    clip_model = CLIP(*CLIP_ARCHS["tiny" if tiny else clip_model]).float()
    return (vqgan.eval().requires_grad_(False).to(device),
            clip_model.eval().requires_grad_(False).to(device))


def goal_embeds(clip_model: nn.Module, device) -> list[torch.Tensor]:
    """A lyric line's CLIP text embedding and a stand-in for the Wav2CLIP audio one, (1, D) each."""
    import clip

    with torch.no_grad():
        text = clip_model.encode_text(clip.tokenize([TEXT]).to(device)).float()
    audio = torch.randn(1, text.shape[1], generator=torch.Generator().manual_seed(1))
    return [text, audio.to(device)]


class SeedLoop:
    """The seed's generate.py, re-created only to time its per-step work against ours.

    fp32 eager; the 'latest' cut-outs pooled cutn times over, then kornia augments (Af Pe Ji Er)
    and noise; the codebook look-up as a one-hot matmul; Adam; loss.item() every step; a PNG of
    every step; at the end the PNGs re-read and piped as PNG into ffmpeg -preset veryslow."""

    cudnn_benchmark = False  # the seed turned it off

    def __init__(self, vqgan, clip_model, z, embeds, cuts: int, folder: Path):
        self.vqgan, self.clip, self.embeds, self.cuts = vqgan, clip_model, embeds, cuts
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cut_size = clip_model.visual.input_resolution
        self.augs = nn.Sequential(*[augment(c, self.cut_size, "latest") for c in DEFAULT_AUGMENTS])
        self.mean = torch.tensor(CLIP_MEAN, device=z.device).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD, device=z.device).view(1, 3, 1, 1)
        codebook = vqgan.codebook
        self.z_min = codebook.min(dim=0).values[None, :, None, None]
        self.z_max = codebook.max(dim=0).values[None, :, None, None]
        self.z = z.detach().clone().requires_grad_(True)
        self.opt = torch.optim.Adam([self.z], lr=0.1)
        self.frames, self.frame_s = 0, 0.0

    def synth(self, z: torch.Tensor) -> torch.Tensor:
        """The seed's synth: one-hot codebook matmul, decode, clamp."""
        x, codebook = z.movedim(1, 3), self.vqgan.codebook
        d = x.pow(2).sum(dim=-1, keepdim=True) + codebook.pow(2).sum(dim=1) - 2 * x @ codebook.T
        x_q = F.one_hot(d.argmin(-1), codebook.shape[0]).to(d.dtype) @ codebook
        z_q = replace_grad(x_q, x).movedim(3, 1)
        image = self.vqgan.decoder(self.vqgan.post_quant_conv(z_q))
        return clamp_with_grad(image.add(1).div(2), 0, 1)

    def cutouts(self, image: torch.Tensor) -> torch.Tensor:
        """The seed's MakeCutouts: the same pooled view computed cutn times, augmented, noised."""
        size = (self.cut_size, self.cut_size)
        pooled = [(F.adaptive_avg_pool2d(image, size) + F.adaptive_max_pool2d(image, size)) / 2
                  for _ in range(self.cuts)]
        batch = self.augs(torch.cat(pooled, dim=0))
        facs = batch.new_empty([self.cuts, 1, 1, 1]).uniform_(0, NOISE_FAC)
        return batch + facs * torch.randn_like(batch)

    @staticmethod
    def prompt(embeds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The seed's Prompt module with weight 1 and no stop."""
        x = F.normalize(embeds.unsqueeze(1), dim=2)
        y = F.normalize(target.unsqueeze(0), dim=2)
        dists = x.sub(y).norm(dim=2).div(2).arcsin().pow(2).mul(2)
        return replace_grad(dists, torch.maximum(dists, dists.new_tensor(float("-inf")))).mean()

    def checkin(self, losses: list) -> None:
        """The seed's display step: every loss read, a fresh synth and a PNG of the preview."""
        from PIL import Image

        ", ".join(f"{loss.item():g}" for loss in losses)
        with torch.inference_mode():
            out = self.synth(self.z)
        Image.fromarray(to_frame(out).numpy()).save(self.folder / "preview.png")

    def step(self, i: int) -> float:
        """One seed iteration (ascend_txt + train), returning the loss as a float."""
        import imageio.v2 as imageio

        self.opt.zero_grad(set_to_none=True)
        out = self.synth(self.z)
        views = (self.cutouts(out) - self.mean) / self.std
        iii = self.clip.encode_image(views).float()
        losses = [self.prompt(iii, e) for e in self.embeds]
        t = time.perf_counter()
        img = np.transpose(out.mul(255).clamp(0, 255)[0].cpu().detach().numpy().astype(np.uint8),
                           (1, 2, 0))
        imageio.imwrite(self.folder / f"{self.frames}.png", img)
        self.frame_s += time.perf_counter() - t
        self.frames += 1
        if i % SHOW_EVERY == 0:
            self.checkin(losses)
        loss = sum(losses)
        loss.backward()
        self.opt.step()
        with torch.inference_mode():
            self.z.copy_(self.z.maximum(self.z_min).minimum(self.z_max))
        return loss.item()

    def finish(self, fps: float = FPS) -> Path:
        """The seed's video: every PNG re-read, then piped as PNG into libx264 -preset veryslow."""
        from PIL import Image

        from music2video.ffmpeg import ffmpeg_exe

        frames = []
        for n in range(self.frames):
            with Image.open(self.folder / f"{n}.png") as im:
                frames.append(im.copy())
        out = self.folder / "seed.mp4"
        proc = subprocess.Popen([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "image2pipe",
                                 "-vcodec", "png", "-r", str(fps), "-i", "-", "-vcodec", "libx264",
                                 "-r", str(fps), "-pix_fmt", "yuv420p", "-crf", "17",
                                 "-preset", "veryslow", str(out)], stdin=subprocess.PIPE)
        for im in frames:
            im.save(proc.stdin, "PNG")
        proc.stdin.close()
        if proc.wait() != 0:
            raise RuntimeError("ffmpeg failed to encode the seed's PNG frames")
        return out


@contextlib.contextmanager
def fused_silu():
    """taming's decoder with F.silu for its x * sigmoid(x): the same function, fused."""
    import taming.modules.diffusionmodules.model as taming_model

    saved, taming_model.nonlinearity = taming_model.nonlinearity, F.silu
    try:
        yield
    finally:
        taming_model.nonlinearity = saved


class OurLoop:
    """The project's loop as run.Engine drives it: Optimiser.step, to_frame, FrameWriter."""

    cudnn_benchmark = True  # ours lets cuDNN pick its fastest convolutions

    def __init__(self, vqgan, clip_model, z, embeds, cuts: int, path: Path, precision: str,
                 show_every: int = SHOW_EVERY, silu: bool = False, **levers):
        from music2video.output.video import FrameWriter

        cutouts = MakeCutouts(clip_model.visual.input_resolution, cuts)
        self.opt = Optimiser(vqgan, Perceptor(clip_model, cutouts), z, precision=precision,
                             **levers)
        self.targets = [(Target(e), 1.0) for e in embeds]
        height, width = z.shape[2] * vqgan.factor, z.shape[3] * vqgan.factor
        self.writer = FrameWriter(path, width, height, FPS)
        self.show_every, self.frames, self.frame_s = show_every, 0, 0.0
        self.silu = silu

    def step(self, i: int):
        """One step and its frame; the loss is read only when the seed would show it."""
        with fused_silu() if self.silu else contextlib.nullcontext():
            result = self.opt.step(self.targets, i)
        t = time.perf_counter()
        self.writer.write(to_frame(result.image, cpu=False))  # the writer thread copies it
        self.frame_s += time.perf_counter() - t
        self.frames += 1
        if i % self.show_every == 0:
            result.loss.item()
        return result

    def finish(self) -> Path:
        """Finishes the video (waits for ffmpeg)."""
        return self.writer.close()


def _sync(device: torch.device) -> None:
    """Waits for the device's queued work, so wall time means device time."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(fn) -> int:
    """FLOPs torch.utils.flop_counter counts in one call of fn."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_loops(loops: dict, steps: int, device: torch.device, block: int = 1) -> dict:
    """Runs the loops' steps in turn, `block` steps at a time, after one untimed first step each.

    Returns per loop: the first step's seconds, the seconds per step of each block, the
    video's finishing seconds per frame, and (CUDA) the peak memory of its steps."""
    stats = {name: {"blocks": [], "peak_cuda_mb": 0.0} for name in loops}

    def timed(name, count, start):
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = loops[name].cudnn_benchmark
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t = time.perf_counter()
        for i in range(start, start + count):
            loops[name].step(i)
        _sync(device)
        seconds = time.perf_counter() - t
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**20
            stats[name]["peak_cuda_mb"] = max(stats[name]["peak_cuda_mb"], peak)
        return seconds

    for name in loops:
        stats[name]["first_s"] = timed(name, 1, 0)
    done = 0
    while done < steps:
        count = min(block, steps - done)
        for name in loops:
            stats[name]["blocks"].append(timed(name, count, 1 + done) / count)
        done += count
    for name, loop in loops.items():
        t = time.perf_counter()
        loop.finish()
        stats[name]["finish_s_per_frame"] = (time.perf_counter() - t) / loop.frames
        stats[name]["frame_s_per_step"] = loop.frame_s / loop.frames
        stats[name]["s_per_step"] = (statistics.median(stats[name]["blocks"])
                                     + stats[name]["finish_s_per_frame"])
    return stats


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    return "cpu"


def setup_nets(args, device):
    """Models, start latent and goals, shared by every loop of a run."""
    vqgan, clip_model = build_models(args.clip_model, device, args.tiny)
    width, height = networks.whole_cells(args.size, vqgan.factor)
    z = random_latent(vqgan, width, height, torch.Generator().manual_seed(0)).to(device)
    return vqgan, clip_model, z, goal_embeds(clip_model, device)


def step_flops(vqgan, clip_model, z, embeds, cuts) -> int:
    """FLOPs of one eager fp32 step of our loop on throwaway state."""
    perceptor = Perceptor(clip_model, MakeCutouts(clip_model.visual.input_resolution, cuts))
    opt = Optimiser(vqgan, perceptor, z)
    return count_flops(lambda: opt.step([(Target(e), 1.0) for e in embeds], 0))


def _levers(args) -> dict:
    """Our loop's settings from the flags."""
    return {"precision": args.precision, "channels_last": args.channels_last,
            "compile_mode": args.compile}


def benchmark(args) -> dict:
    """Times the seed's loop and ours; returns the figures the JSON line reports."""
    device = torch.device(args.device)
    vqgan, clip_model, z, embeds = setup_nets(args, device)
    flops = step_flops(vqgan, clip_model, z, embeds, args.cuts)
    block = 1 if device.type == "cpu" else max(1, args.steps // 3)
    with tempfile.TemporaryDirectory(prefix="m2v-bench-") as tmp:
        loops = {"baseline": SeedLoop(vqgan, clip_model, z, embeds, args.cuts, Path(tmp) / "steps"),
                 "ours": OurLoop(vqgan, clip_model, z, embeds, args.cuts, Path(tmp) / "ours.mp4",
                                 **_levers(args))}
        stats = run_loops(loops, args.steps, device, block)
    base, ours = stats["baseline"], stats["ours"]
    base_rate, ours_rate = 1 / base["s_per_step"], 1 / ours["s_per_step"]
    size = [z.shape[3] * vqgan.factor, z.shape[2] * vqgan.factor]
    return {"device": device.type, "device_name": device_name(device), "size": size,
            "cuts": args.cuts, "steps": args.steps,
            "clip_model": "tiny" if args.tiny else args.clip_model,
            "precision": args.precision, "channels_last": args.channels_last,
            "compile": args.compile, "baseline_steps_per_s": base_rate,
            "ours_steps_per_s": ours_rate, "ratio": ours_rate / base_rate,
            "baseline_s_per_song_s": IPS / base_rate, "ours_s_per_song_s": IPS / ours_rate,
            "baseline_step_s": base["blocks"], "ours_step_s": ours["blocks"],
            "baseline_first_step_s": base["first_s"], "ours_first_step_s": ours["first_s"],
            "baseline_video_s_per_frame": base["finish_s_per_frame"],
            "ours_video_s_per_frame": ours["finish_s_per_frame"],
            "flops_per_step": flops, "baseline_tflops": flops * base_rate / 1e12,
            "ours_tflops": flops * ours_rate / 1e12, "peak_rss_mb": peak_rss_mb(),
            "baseline_peak_cuda_mb": base["peak_cuda_mb"],
            "ours_peak_cuda_mb": ours["peak_cuda_mb"]}


def report(r: dict) -> None:
    """Human-readable lines for a benchmark result."""
    print(f"{r['device_name']}: {r['size'][0]}x{r['size'][1]}, {r['cuts']} cuts, "
          f"{r['clip_model']}, ours in {r['precision']}, {r['steps']} timed steps each")
    for name in ("baseline", "ours"):
        steps = ", ".join(f"{s:.3f}" for s in r[f"{name}_step_s"])
        print(f"  {name:8s} {r[f'{name}_steps_per_s']:8.3f} steps/s  "
              f"{r[f'{name}_s_per_song_s']:9.1f} s per s of song at -ips {IPS}  "
              f"{r[f'{name}_tflops']:.3f} TFLOP/s  (steps {steps} s; first "
              f"{r[f'{name}_first_step_s']:.2f} s; video "
              f"{r[f'{name}_video_s_per_frame'] * 1e3:.1f} ms/frame; peak CUDA "
              f"{r[f'{name}_peak_cuda_mb']:.0f} MB)")
    print(f"  ours/baseline {r['ratio']:.2f}x; {r['flops_per_step'] / 1e12:.3f} TFLOP per step; "
          f"peak RSS {r['peak_rss_mb']:.0f} MB")


def _variants(args, device) -> list[tuple[str, dict]]:
    """The lever settings the --levers table times, fp32 eager first."""
    rows = [("fp32 eager", {"precision": "fp32"}),
            ("fp32 + channels_last", {"precision": "fp32", "channels_last": True}),
            ("bf16 autocast", {"precision": "bf16"}),
            ("bf16 + channels_last", {"precision": "bf16", "channels_last": True}),
            ("fp32 + fused SiLU", {"precision": "fp32", "silu": True}),
            ("bf16 + fused SiLU", {"precision": "bf16", "silu": True}),
            (f"{args.precision} + loss.item() every step",
             {"precision": args.precision, "show_every": 1})]
    if device.type == "cuda":
        rows.insert(4, ("fp16 autocast (no grad scaler)", {"precision": "fp16"}))
    if args.compile:
        rows.append((f"{args.precision} + compile {args.compile}",
                     {"precision": args.precision, "compile_mode": args.compile}))
    return rows


def levers(args) -> dict:
    """One row per lever: our loop with it, against the same baseline, steps alternating."""
    import copy

    device = torch.device(args.device)
    vqgan, clip_model, z, embeds = setup_nets(args, device)
    rows = _variants(args, device)
    block = 1 if device.type == "cpu" else max(1, args.steps // 3)
    with tempfile.TemporaryDirectory(prefix="m2v-levers-") as tmp:
        loops = {"baseline": SeedLoop(vqgan, clip_model, z, embeds, args.cuts, Path(tmp) / "steps")}
        for n, (label, lever) in enumerate(rows):
            # NHWC and compiled networks change the modules in place: those rows get copies.
            own = lever.get("channels_last") or lever.get("compile_mode")
            nets = (copy.deepcopy(vqgan), copy.deepcopy(clip_model)) if own else (vqgan, clip_model)
            loops[label] = OurLoop(*nets, z, embeds, args.cuts, Path(tmp) / f"{n}.mp4", **lever)
        stats = run_loops(loops, args.steps, device, block)
        video = video_levers(Path(tmp) / "steps", loops["baseline"].frames)
    base = stats["baseline"]["s_per_step"]
    print(f"{device_name(device)}: {args.size[0]}x{args.size[1]}, {args.cuts} cuts, "
          f"{args.steps} timed steps each; s/step = median step + video finishing per frame")
    print("| lever | s/step (median) | steps/s | x baseline | first step s "
          "| frame ms (main thread) |")
    print("|---|---|---|---|---|---|")
    table = {}
    for name, st in stats.items():
        table[name] = {"s_per_step": st["s_per_step"], "ratio": base / st["s_per_step"],
                       "steps_s": st["blocks"], "first_s": st["first_s"],
                       "frame_ms": st["frame_s_per_step"] * 1e3,
                       "video_ms_per_frame": st["finish_s_per_frame"] * 1e3}
        print(f"| {name} | {st['s_per_step']:.3f} | {1 / st['s_per_step']:.3f} | "
              f"{base / st['s_per_step']:.2f} | {st['first_s']:.2f} | "
              f"{st['frame_s_per_step'] * 1e3:.1f} |")
    print("| video encoding | s per frame |\n|---|---|")
    for name, seconds in video.items():
        print(f"| {name} | {seconds * 1e3:.1f} ms |")
    return {"device": device.type, "device_name": device_name(device), "size": args.size,
            "cuts": args.cuts, "steps": args.steps, "levers": table, "video": video,
            "peak_rss_mb": peak_rss_mb()}


def video_levers(folder: Path, count: int, frames: int = 90) -> dict:
    """Seconds per frame of the seed's video encoding (PNG pipe, veryslow) and ours (raw)."""
    from PIL import Image

    from music2video.ffmpeg import ffmpeg_exe
    from music2video.output.video import CRF, PRESET

    stills = []
    for n in range(count):
        with Image.open(folder / f"{n}.png") as im:
            stills.append(np.asarray(im.convert("RGB")))
    # Distinct frames: the step pictures, drifting a pixel a frame.
    clip = [np.roll(stills[n % count], n, axis=1) for n in range(frames)]
    height, width = clip[0].shape[:2]
    results = {}
    for label, fmt, preset in (("seed: PNG pipe, -preset veryslow", "png", "veryslow"),
                               ("raw pipe, -preset veryslow", "raw", "veryslow"),
                               (f"ours: raw pipe, -preset {PRESET}", "raw", PRESET)):
        source = (["-f", "image2pipe", "-vcodec", "png"] if fmt == "png" else
                  ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"])
        cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", *source, "-r", str(FPS), "-i", "-",
               "-c:v", "libx264", "-preset", preset, "-crf", str(CRF), "-pix_fmt", "yuv420p",
               str(folder / "encode.mp4")]
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        for frame in clip:
            if fmt == "png":
                Image.fromarray(frame).save(proc.stdin, "PNG")
            else:
                proc.stdin.write(frame.tobytes())
        proc.stdin.close()
        if proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed to encode the frames ({label})")
        results[label] = (time.perf_counter() - t) / frames
    return results


def _generate(args: list, log: Path, seam: float | None = None) -> tuple[float, float]:
    """Runs generate.py's main in its own process; returns its wall seconds and peak RSS MB.
    `seam` replaces the seconds a section's end cross-fades (pipeline.SEAM_SECONDS)."""
    code = "import sys; from music2video import cli; sys.exit(cli.main('beats', sys.argv[1:]))"
    if seam is not None:
        code = f"from music2video.driver import pipeline; pipeline.SEAM_SECONDS = {seam!r}; {code}"
    t = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)],
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"generate failed: {log.read_text()[-2000:]}")
    return time.perf_counter() - t, usage.ru_maxrss / 1024


def _tiny_flags(folder: Path) -> list:
    """The flags that select freshly written tiny models."""
    from music2video.testing import tiny

    files = tiny.write_all(folder)
    return ["-conf", files["vqgan_config"], "-ckpt", files["vqgan_checkpoint"],
            "-m", files["clip"], "--wav2clip_checkpoint", files["wav2clip"]]


def memory(minutes: list[float], ips: float = 1.0, bpm: float = 60.0) -> dict:
    """Peak RSS of generate.py on songs of each length (tiny models, own process each)."""
    from music2video.testing import demo

    sr = 22050
    runs = {}
    with tempfile.TemporaryDirectory(prefix="m2v-memory-") as tmp:
        tmp = Path(tmp)
        flags = _tiny_flags(tmp / "models")
        for m in minutes:
            song = demo.encode_audio(demo.tonal_song(60 * m, bpm, sr), sr, tmp / f"song{m:g}.mp3")
            args = ["-ap", song, "-o", tmp / f"out{m:g}" / "output.png", "-ips", f"{ips:g}",
                    "-s", "64", "64", "-cuts", "4", "-se", "0", "-sd", "0", "-q", *flags]
            wall, peak = _generate(args, tmp / f"stderr{m:g}.txt")
            runs[f"{m:g}"] = {"song_s": 60 * m, "wall_s": wall, "peak_rss_mb": peak}
            print(f"{m:g}-minute song: peak RSS {peak:.0f} MB ({wall:.0f} s)", flush=True)
    peaks = [r["peak_rss_mb"] for r in runs.values()]
    growth = peaks[-1] - peaks[0]
    print(f"growth from the shortest to the longest song: {growth:+.1f} MB "
          f"({100 * growth / peaks[0]:+.1f}%)")
    return {"memory": runs, "ips": ips, "size": [64, 64], "cuts": 4, "growth_mb": growth,
            "growth_pct": 100 * growth / peaks[0]}


SCALING_RUNS = {  # name: the worker flags of one run
    "1 worker, in process": ["--workers", "1"],
    "1 worker, on Ray": ["--workers", "1", "--ray", "local"],
    "2 workers, on Ray": ["--workers", "2"],
}


def scaling(args) -> dict:
    """The demo song rendered by one worker and by two (tiny models, CPU): speed-up, and Ray's
    cost per segment. Each run's render time comes from its report.json (the time from the
    first section to the finished video, Ray's start-up excluded). Starts Ray: run it in a
    loopback-only network namespace (see README)."""
    from music2video.driver.folder import REPORT

    song = Path(__file__).resolve().parents[1] / "demo" / "demo_song.mp3"
    runs = {}
    with tempfile.TemporaryDirectory(prefix="m2v-scaling-") as tmp:
        tmp = Path(tmp)
        flags = _tiny_flags(tmp / "models")
        for name, workers in SCALING_RUNS.items():
            out = tmp / name.replace(" ", "_").replace(",", "") / "v.png"
            run = ["-ap", song, "-o", out, "-s", *map(str, args.size), "-cuts", str(args.cuts),
                   "-ips", f"{args.ips:g}", "--sections", str(args.sections), "--precision",
                   "fp32", "-se", "0", "-sd", "0", "-q", *workers, *flags]
            wall, _ = _generate(run, tmp / "stderr.txt")
            rep = json.loads((out.with_suffix("") / REPORT).read_text())
            runs[name] = {"wall_s": wall, "render_s": rep["render_seconds"],
                          "segments": rep["segments"], "steps": rep["steps"]}
            print(f"{name}: render {rep['render_seconds']:.1f} s, wall {wall:.1f} s "
                  f"({rep['segments']} segments, {rep['steps']} steps)", flush=True)
    one, _, two = (runs[name]["render_s"] for name in SCALING_RUNS)
    result = {"scaling": runs, "speedup_2_workers": one / two, "traffic": traffic(),
              "sections": args.sections, "size": args.size, "cuts": args.cuts, "ips": args.ips}
    print(f"2 workers: {result['speedup_2_workers']:.2f}x the speed of 1")
    return result


SYNC_RATES = (0.0, 4.0, 30.0, 100.0)  # -ips of the sync table: the seed's default, few, one a frame, many


def sync_table(args) -> dict:
    """The sync figure of the groove song (testing/demo.py: drums, bass and chords with dense
    onsets) through generate.py at each -ips, without and with --react (tiny models, 64x64)."""
    from music2video.driver.folder import REPORT
    from music2video.testing import demo

    runs = []
    with tempfile.TemporaryDirectory(prefix="m2v-sync-") as tmp:
        tmp = Path(tmp)
        flags = _tiny_flags(tmp / "models")
        song = demo.encode_audio(demo.groove_song(args.seconds), demo.DEMO_SR, tmp / "groove.wav")
        for ips in args.rates:
            for react in (None, args.react):
                out = tmp / f"ips{ips:g}{'' if react is None else 'react'}" / "v.png"
                extra = [] if react is None else ["--react", *([react] if react else [])]
                run = ["-ap", song, "-o", out, "-s", "64", "64", "-cuts", "4", "-ips", f"{ips:g}",
                       "--precision", "fp32", "-se", "0", "-sd", str(args.seed), "-q", *extra,
                       *flags]
                wall, _ = _generate(run, tmp / "stderr.txt")
                figure = json.loads((out.with_suffix("") / REPORT).read_text())["sync"]
                runs.append({"ips": ips, "react": react, "wall_s": wall, **figure})
                print(f"-ips {ips:g} {'--react ' + (react or '') if react is not None else ''}: "
                      f"{sync_cells(figure)} ({wall:.0f} s)", flush=True)
    return {"sync": runs, "seconds": args.seconds, "seed": args.seed, "size": [64, 64],
            "cuts": 4}


def sync_cells(figure: dict) -> str:
    """A sync figure as table cells: median, onsets within 1 (chance), peaks on an onset (chance)."""
    if figure["median_offset_frames"] is None:
        return f"nothing to measure ({figure['peaks']} change peaks) | |"
    return (f"{figure['median_offset_frames']:g} | {100 * figure['share_within_1']:.0f} % "
            f"({100 * figure['chance_within_1']:.0f} %) | {100 * figure['peak_share_within_1']:.0f}"
            f" % ({100 * figure['peak_chance_within_1']:.0f} %)")


def traffic(runs: tuple = ((1, False), (30, False), (30, True))) -> dict:
    """ray_overhead at 256x256 and 512x512 for each (state every, chunks in place): a state on
    every segment (as until issue 19) or every 30th (what STATE_SECONDS gives at a segment a
    second), chunks sent as bytes or encoded into the run folder; prints a line each."""
    figures = {}
    for side in (256, 512):
        for every, in_place in runs:
            figure = ray_overhead(side, state_every=every, in_place=in_place)
            how = "in place" if in_place else "sent"
            figures[f"{side}x{side}, state every {every}, chunks {how}"] = figure
            print(f"{side}x{side}, a state every {every} segment(s), chunks {how}: "
                  f"{figure['kb_per_segment']:.0f} kB and {figure['ms_per_segment']:.1f} ms of "
                  f"the driver per segment ({figure['record_ms_per_segment']:.1f} ms writing "
                  "it down)", flush=True)
    return figures


def frame_changes(video: Path) -> np.ndarray:
    """The mean absolute difference (of 255) between each frame of a video and the one before."""
    from music2video import ffmpeg
    from music2video.output.sync import visual_change

    return visual_change(ffmpeg.read_frames(video))[1:]  # (frames - 1,)


def seam_figures(video: Path, manifest: dict) -> dict:
    """How far the picture moves from one frame to the next at the section seams, against the
    ordinary beat cuts inside sections and every frame; the sections' shares of the steps."""
    changes = frame_changes(video)
    segments, sections = manifest["segments"], manifest["sections"]
    seams = {segments[first]["frame_start"] for first, _ in sections[1:]}
    cuts = {s["frame_start"] for s in segments[1:] if s["frame_end"] > s["frame_start"]} - seams
    at = lambda frames: changes[[f - 1 for f in sorted(frames) if 0 < f <= len(changes)]]  # noqa: E731
    steps = [sum(segments[k]["iterations"] for k in range(a, b + 1)) for a, b in sections]
    return {"sections": len(sections), "largest_share": max(steps) / sum(steps),
            "seam": float(at(seams).mean()) if seams else None,
            "seam_max": float(at(seams).max()) if seams else None,
            "beat_cut": float(at(cuts).mean()), "beat_cut_median": float(np.median(at(cuts))),
            "every_frame": float(changes.mean())}


def structured_song(seconds: float, sr: int, part: float = 30.0) -> np.ndarray:
    """A song of parts that change tempo, key and texture every `part` seconds (demo sounds)."""
    from music2video.testing import demo

    parts, t = [], 0.0
    for k in range(int(np.ceil(seconds / part))):
        length = min(part, seconds - t)
        bpm = (120, 96, 140, 108)[k % 4]
        parts.append(demo.tonal_song(length, bpm, sr, start=0.0, seed=k) if k % 3 != 2
                     else demo.pulse_tones(length, bpm, sr, start=0.0) + 0.3 * demo.click_track(
                         length, bpm, sr, start=0.0, seed=k))
        t += length
    return np.concatenate(parts).astype(np.float32)


def balance(seconds: tuple = (180, 240, 270, 290, 300, 441),
            requests: tuple = (2, 4, 8, 16, 64, "auto")) -> dict:
    """Plans generated songs (structured_song) as generate.py does at -ips 0, without rendering:
    each request's sections, the largest one's share of the steps, and each section's steps
    with its warm-ups (50 after the first; 50 more before the last, for the next one's
    opening, where this tree cross-fades). Run with PYTHONPATH at another tree's music2video/
    to plan as it did."""
    import inspect

    from music2video.engine import renderer
    from music2video.song import audio, sections
    from music2video.song import segments as schedule

    fades = "_opening" in dict(inspect.getmembers(renderer.Renderer))
    sr, plans = 16000, {}
    for length in seconds:
        y = structured_song(float(length), sr)
        bounds = schedule.beat_bounds(audio.beat_times(y, sr), float(length))
        segs = schedule.beat_schedule(bounds, [], 30.0, 0.0, audio.loudness(y, sr))
        total = sum(s.iterations for s in segs)
        for request in requests:
            plan = sections.sections_for(y, sr, segs, request)
            steps = [sum(segs[k].iterations for k in s.segments) for s in plan]
            costs = [n + 50 * (i > 0) + 50 * (fades and i < len(plan) - 1)
                     for i, n in enumerate(steps)]
            plans[f"{length}/{request}"] = {"sections": len(plan), "largest": max(steps) / total,
                                            "steps": total, "segments": len(segs),
                                            "costs": costs}
            print(f"{length} s, --sections {request}: {len(plan)} sections, the largest "
                  f"{100 * max(steps) / total:.1f} % of {total} steps", flush=True)
    return {"balance": plans}


def seams(args) -> dict:
    """A generated song of args.song_seconds rendered with --sections args.sections twice (tiny
    models, in one process): sections cut as now with their ends cross-faded, and as cuts (the
    fade off); the seam and beat-cut figures of each."""
    from music2video.driver.folder import MANIFEST
    from music2video.testing import demo

    sr, runs = 22050, {}
    with tempfile.TemporaryDirectory(prefix="m2v-seams-") as tmp:
        tmp = Path(tmp)
        flags = _tiny_flags(tmp / "models")
        song = demo.encode_audio(structured_song(args.song_seconds, sr), sr, tmp / "song.mp3")
        for name, seam in (("cross-faded", None), ("cut", 0.0)):
            out = tmp / name / "v.png"
            run = ["-ap", song, "-o", out, "-s", *map(str, args.size), "-cuts", str(args.cuts),
                   "-ips", f"{args.ips:g}", "--sections", str(args.sections), "--precision",
                   "fp32", "-se", "0", "-sd", "0", "-q", *flags]
            wall, _ = _generate(run, tmp / "stderr.txt", seam)
            manifest = json.loads((out.with_suffix("") / MANIFEST).read_text())
            runs[name] = {**seam_figures(out.with_suffix(".mp4"), manifest), "wall_s": wall}
            print(f"{name}: {json.dumps(runs[name])}", flush=True)
    return {"seams": runs, "song_seconds": args.song_seconds, "sections": args.sections,
            "size": args.size, "cuts": args.cuts, "ips": args.ips}


def stand_in_worker(state_every: int):
    """The class of a worker that renders nothing: it yields the segments of a work at once,
    each with a chunk of the size a real one has at the spec's picture size (its bytes, or,
    when the spec has a reachable Drop, a file written and fsynced in the run folder as the
    renderer's encoder leaves it), and the state (of its real size) with every
    `state_every`-th segment and the work's last."""
    from music2video.driver.workers import Worker
    from music2video.engine.renderer import Finished
    from music2video.files import part_path

    class StandInWorker(Worker):
        def render(self, spec, samples, work):
            width, height = spec.size
            latent = torch.zeros(1, 256, height // 16, width // 16)  # f16-16384's latent
            state = {"optimiser": {"z": latent, "state": {0: {"exp_avg": latent.clone(),
                                                              "exp_avg_sq": latent.clone()}}},
                     "image": torch.zeros(1, 3, height, width), "iteration": 0}
            chunk = bytes(width * height // 2)  # about an H.264 chunk of half a second, crf 17
            drop = spec.drop if spec.drop and spec.drop.reachable() else None
            for index in range(work.first, work.last + 1):
                keep = (index - work.first + 1) % state_every == 0 or index == work.last
                handed = None
                if drop:
                    handed = part_path(drop.claim(index))
                    with open(handed, "wb") as f:
                        f.write(chunk)
                        f.flush()
                        os.fsync(f.fileno())
                yield Finished(work.job, work.section, index, None if drop else chunk,
                               bytes(20_000), {**state, "segment": index} if keep else None,
                               True, chunk_file=str(handed) if handed else None)

    return StandInWorker


def ray_overhead(side: int, segments: int = 100, state_every: int = 1,
                 in_place: bool = False) -> dict:
    """What one finished segment costs between a worker and the run folder: the bytes that
    cross from the worker (pickled events), and the driver's time per segment to receive it
    and write it down (chunk, thumbnail, state when it has one, journal: RunFolder.record),
    after the task has started. A stand-in worker yields real payload sizes at side x side
    through a local Ray instance; state_every 1 is how every segment came back until issue 19;
    in_place: the worker sees the run folder and encodes its chunks there (the driver renames
    them), else they cross as bytes."""
    import pickle

    from music2video.driver.folder import MARKER, RunFolder
    from music2video.driver.workers import RayScheduler
    from music2video.engine.renderer import Drop, Finished, RenderSpec, Work
    from music2video.song.segments import Segment

    plan = tuple(Segment(k, k / 2, (k + 1) / 2, 1, 15 * k, 15 * (k + 1)) for k in range(segments))
    scheduler = RayScheduler("local", 1, worker=stand_in_worker(state_every))
    with tempfile.TemporaryDirectory(prefix="m2v-traffic-") as tmp:
        folder = RunFolder(Path(tmp) / "run")
        manifest = folder.open({}, list(plan), [(0, segments - 1)], False, 0, {}, {"fps": 30})
        drop = (Drop(str(folder.path.resolve()), MARKER, folder.handoff_token()) if in_place
                else None)
        spec = RenderSpec(weights=None, device="cpu", size=(side, side), segments=plan, seed=0,
                          sr=16000, fps=30, precision="fp32", threads=1, drop=drop)
        sent, count, state, writing = 0, 0, 0, 0.0
        try:
            events = scheduler.render({0: (spec, np.zeros(1, np.float32))},
                                   [Work(0, 0, 0, segments - 1, write=frozenset(range(segments)))])
            first = next(events)
            t = time.perf_counter()
            for event in [first, *events]:
                if not isinstance(event, Finished):
                    continue
                if event is not first:
                    count += 1
                sent += len(pickle.dumps(event))
                state = max(state, len(pickle.dumps(event.state)) if event.state else 0)
                chunk = Path(event.chunk_file) if event.chunk_file else event.chunk
                started = time.perf_counter()
                folder.record(manifest, event.index, chunk, event.thumb, 0, event.state)
                writing += time.perf_counter() - started
            seconds = time.perf_counter() - t
            chunk_kb = (folder.path / manifest["segments"][0]["chunk"]).stat().st_size / 1000
            handed = first.chunk_file is not None
        finally:
            scheduler.close()
            folder.unlock()
    return {"ms_per_segment": 1000 * seconds / count,
            "record_ms_per_segment": 1000 * writing / (count + 1), "segments": segments,
            "state_every": state_every, "in_place": handed,
            "kb_per_segment": sent / segments / 1000, "state_mb": state / 2**20,
            "chunk_kb": chunk_kb}


def get_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(prog="python -m tools.bench",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device")
    p.add_argument("--size", nargs=2, type=int, default=[256, 256], metavar=("W", "H"),
                   help="picture size")
    p.add_argument("--cuts", type=int, default=8, help="cut-outs per step")
    p.add_argument("--steps", type=int, default=3, help="timed steps of each loop (after one more)")
    p.add_argument("--clip_model", choices=[k for k in CLIP_ARCHS if k != "tiny"],
                   default="ViT-B/32", help="CLIP architecture")
    p.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                   help="our loop's arithmetic; auto: bf16 where it times faster here")
    p.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=False,
                   help="our decoder and CLIP with NHWC conv weights")
    p.add_argument("--compile", default=None, metavar="MODE",
                   help="torch.compile our decoder and CLIP (default, max-autotune-no-cudagraphs)")
    p.add_argument("--tiny", action="store_true", help="tiny networks (tests, CI)")
    p.add_argument("--levers", action="store_true",
                   help="time each lever against the baseline instead (one table row each)")
    p.add_argument("--memory", action="store_true",
                   help="peak RSS of generating a 1- and a 10-minute song with tiny models instead")
    p.add_argument("--minutes", nargs="+", type=float, default=[1, 10],
                   help="song lengths for --memory")
    p.add_argument("--scaling", action="store_true",
                   help="the demo song on 1 and 2 workers (tiny models, Ray) instead; use --size, "
                        "--cuts, --ips, --sections")
    p.add_argument("--traffic", action="store_true",
                   help="bytes and driver time per segment, a state every segment against every "
                        "30th (Ray, stand-in worker) instead")
    p.add_argument("--seams", action="store_true",
                   help="a generated song with --sections N, cross-faded against cut: the picture's "
                        "change at seams and at beat cuts (tiny models) instead; use --size, "
                        "--cuts, --ips, --sections, --song_seconds")
    p.add_argument("--song_seconds", type=float, default=270, help="song length for --seams")
    p.add_argument("--balance", action="store_true",
                   help="plan generated songs of several lengths into sections (no rendering): "
                        "the largest section's share of the steps, instead")
    p.add_argument("--ips", type=float, default=10, help="steps per second of song for --scaling")
    p.add_argument("--sections", type=int, default=4, help="sections for --scaling")
    p.add_argument("--sync", action="store_true",
                   help="the sync figure of the groove song at --rates, without and with --react "
                        "(tiny models) instead")
    p.add_argument("--rates", nargs="+", type=float, default=list(SYNC_RATES),
                   help="-ips values for --sync")
    p.add_argument("--react", default="", metavar="KINDS",
                   help="--sync's --react settings ('': --react alone)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of --sync's song")
    p.add_argument("--seed", type=int, default=4, help="-sd of --sync's runs")
    return p


def main(argv=None) -> dict:
    """Command line: runs the benchmark and prints its figures, JSON last."""
    args = get_parser().parse_args(argv)
    device = torch.device(args.device)
    reason = f"--precision {args.precision}"
    if args.precision == "auto" and not (args.memory or args.scaling or args.sync or args.traffic
                                         or args.seams or args.balance):
        choice = precision.decide(device, args.size, args.cuts)
        args.precision, reason = choice.precision, f"auto: {choice.reason}"
        print(f"precision {args.precision} ({reason})", flush=True)
    if args.memory:
        result = memory(args.minutes)
    elif args.scaling:
        result = scaling(args)
    elif args.sync:
        result = sync_table(args)
    elif args.traffic:
        result = traffic()
    elif args.seams:
        result = seams(args)
    elif args.balance:
        result = balance()
    elif args.levers:
        result = levers(args)
    else:
        result = benchmark(args)
        report(result)
    result["precision_reason"] = reason
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
