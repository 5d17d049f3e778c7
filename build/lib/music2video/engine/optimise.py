"""The optimisation loop: one VQGAN-CLIP step moves the latent towards the segment's goals."""

import contextlib
import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models.networks import VQGAN
from .guidance import Perceptor, Target, spherical_loss


def make_optimiser(name: str, params, lr: float) -> torch.optim.Optimizer:
    """One of the seed's eight optimisers over the latent."""
    import torch_optimizer

    factories = {
        "Adam": lambda: torch.optim.Adam(params, lr=lr),
        "AdamW": lambda: torch.optim.AdamW(params, lr=lr),
        "Adagrad": lambda: torch.optim.Adagrad(params, lr=lr),
        "Adamax": lambda: torch.optim.Adamax(params, lr=lr),
        "DiffGrad": lambda: torch_optimizer.DiffGrad(params, lr=lr, eps=1e-9, weight_decay=1e-9),
        "AdamP": lambda: torch_optimizer.AdamP(params, lr=lr),
        "RAdam": lambda: torch_optimizer.RAdam(params, lr=lr),
        "RMSprop": lambda: torch.optim.RMSprop(params, lr=lr),
    }
    return factories[name]()


def autocast(device: torch.device, precision: str):
    """Mixed-precision context for the forward pass ('fp32': none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def noise_image(kind: str, width: int, height: int, gen: torch.Generator) -> torch.Tensor:
    """The seed's init noise (1, 3, H, W) in [0, 1]: random 'pixels' or a random 'gradient'."""
    if kind == "pixels":
        return torch.randint(0, 256, (1, 3, height, width), generator=gen).float() / 255
    start = torch.tensor([0, 0, torch.randint(0, 255, (), generator=gen).item()]).float()
    stop = torch.tensor([torch.randint(lo, hi, (), generator=gen).item()
                         for lo, hi in ((1, 255), (2, 255), (3, 128))]).float()
    ramp_x = torch.linspace(0, 1, width).view(1, 1, width).expand(1, height, width)
    ramp_y = torch.linspace(0, 1, height).view(1, height, 1).expand(1, height, width)
    ramps = torch.cat([ramp_x, ramp_y, ramp_y])  # red runs across, green and blue down
    image = start.view(3, 1, 1) + (stop - start).view(3, 1, 1) * ramps
    return (image / 255).unsqueeze(0)


def load_image(path: Path, width: int, height: int) -> torch.Tensor:
    """An image file as (1, 3, H, W) in [0, 1], resized to the video's size."""
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB").resize((width, height), Image.LANCZOS)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).unsqueeze(0).float() / 255


def random_latent(vqgan: VQGAN, width: int, height: int, gen: torch.Generator) -> torch.Tensor:
    """A latent (1, e, h, w) of random codebook entries, the seed's default start."""
    f = vqgan.factor
    codes = torch.randint(vqgan.codebook.shape[0], (height // f, width // f), generator=gen)
    return vqgan.codebook[codes.to(vqgan.codebook.device)].permute(2, 0, 1).unsqueeze(0).contiguous()


def to_frame(image: torch.Tensor, cpu: bool = True) -> torch.Tensor:
    """A picture (1, 3, H, W) in [0, 1] as uint8 (H, W, 3) on the CPU, or left on its device."""
    frame = image[0].detach().float().mul(255).round().clamp(0, 255).to(torch.uint8)
    frame = frame.permute(1, 2, 0).contiguous()  # (H, W, 3)
    return frame.cpu() if cpu else frame


def prepare_models(vqgan: VQGAN, perceptor: Perceptor, channels_last: bool = False,
                   compile_mode: str | None = None) -> None:
    """Optional speed-ups of the decoder and CLIP's image tower, in place; the same losses.

    channels_last stores conv weights NHWC; compile_mode ('default', 'max-autotune-no-cudagraphs',
    ...) torch.compiles both (minutes of compiling first, and again when the size or cut count
    changes)."""
    if channels_last:
        vqgan.to(memory_format=torch.channels_last)
        perceptor.clip.visual.to(memory_format=torch.channels_last)
    if compile_mode:
        vqgan.decoder.compile(mode=compile_mode)
        perceptor.clip.visual.compile(mode=compile_mode)


@dataclass
class StepResult:
    """What one step leaves behind."""

    image: torch.Tensor  # (1, 3, H, W) in [0, 1]: the picture the step was computed on
    loss: torch.Tensor  # scalar, still on the device (read it only when shown)


class Optimiser:
    """Owns the latent and its optimiser; step() is one iteration of VQGAN-CLIP."""

    def __init__(self, vqgan: VQGAN, perceptor: Perceptor, z: torch.Tensor, name: str = "Adam",
                 lr: float = 0.1, init_weight: float = 0.0, precision: str = "fp32",
                 channels_last: bool = False, compile_mode: str | None = None):
        self.vqgan, self.perceptor = vqgan, perceptor
        self.name, self.lr, self.init_weight, self.precision = name, lr, init_weight, precision
        self.device = z.device
        prepare_models(vqgan, perceptor, channels_last, compile_mode)
        self.z_min = vqgan.codebook.min(dim=0).values.view(1, -1, 1, 1)
        self.z_max = vqgan.codebook.max(dim=0).values.view(1, -1, 1, 1)
        # A contiguous copy: AdamP views the parameter as (batch, -1).
        self.z = z.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
        self.opt = make_optimiser(name, [self.z], lr)

    def restart(self, z: torch.Tensor) -> None:
        """Starts again from a new latent with a fresh optimiser (the seed's zoom motion)."""
        self.z = z.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
        self.opt = make_optimiser(self.name, [self.z], self.lr)

    def step(self, targets: list[tuple[Target, float]], iteration: int) -> StepResult:
        """One step towards the weighted targets; `iteration` counts from 0 within the segment."""
        self.opt.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            image = self.vqgan.synth(self.z)
            embeds = self.perceptor.encode_views(image).float()  # (cutn, D)
        losses = [spherical_loss(embeds, target, weight) for target, weight in targets]
        if self.init_weight:
            decay = self.init_weight / (2 * (2 * iteration + 1))
            losses.append(F.mse_loss(self.z, torch.zeros_like(self.z)) * decay)
        loss = torch.stack(losses).sum()
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            self.z.copy_(self.z.maximum(self.z_min).minimum(self.z_max))
        return StepResult(image.detach().float(), loss.detach())

    def state_dict(self) -> dict:
        """A copy of the latent and optimiser state, for resuming."""
        return {"z": self.z.detach().cpu().clone(),
                "optimiser": copy.deepcopy(self.opt.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        """Restores the latent and optimiser state saved by state_dict()."""
        self.restart(state["z"].to(self.device))
        self.opt.load_state_dict(state["optimiser"])


def zoom_shift(image: torch.Tensor, scale: float, shift_x: int, shift_y: int) -> torch.Tensor:
    """The seed's zoom motion: scale about the centre (<1 zooms out), then shift with wrap-around."""
    from kornia.geometry.transform import scale as kornia_scale

    if scale != 1:
        factor = torch.tensor([[scale, scale]], device=image.device, dtype=image.dtype)
        image = kornia_scale(image, factor, padding_mode="zeros")
    if shift_x or shift_y:
        image = torch.roll(image, shifts=(shift_y, shift_x), dims=(2, 3))
    return image
