"""The set of networks a render needs: which weight files, checked and loaded onto a device."""

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..models import weights
from ..models.download import DownloadError
from ..models.networks import (
    VQGAN,
    ModelError,
    cell_size,
    check_clip_name,
    load_clip,
    load_vqgan,
    load_wav2clip,
    read_vqgan_config,
    whole_cells,
)
from ..models.weights import clip_path
from .guidance import MakeCutouts, Perceptor
from .optimise import noise_image, random_latent

if TYPE_CHECKING:
    from ..options import Options


@dataclass(frozen=True)
class WeightChoice:
    """Which weights a run uses, as the command line gave them (plain data, for workers too)."""

    vqgan_config: str | None  # taming yaml; None: the registry's default in the checkpoints folder
    vqgan_checkpoint: str | None  # taming ckpt
    clip_model: str  # CLIP name or checkpoint path
    wav2clip_checkpoint: str | None  # Wav2CLIP.pt; None: the registry's
    checkpoints: str | None  # weights folder; None: $MUSIC2VIDEO_CHECKPOINTS or ./checkpoints

    @classmethod
    def of(cls, opts: "Options") -> "WeightChoice":
        """The weight flags of parsed options, every path made absolute here (files, and the
        weights folder chosen with --checkpoints or $MUSIC2VIDEO_CHECKPOINTS): a worker started
        in another folder (another node's `ray start`) must find the same files. Without a
        chosen folder each worker looks in its own ./checkpoints, else its own per-user cache
        (downloading there), and the fingerprints check that it found the driver's files."""
        text = lambda p: None if p is None else os.path.abspath(p)  # noqa: E731
        clip = opts.clip_model
        if os.path.isfile(clip):  # a checkpoint file rather than one of CLIP's names
            clip = os.path.abspath(clip)
        return cls(text(opts.vqgan_config), text(opts.vqgan_checkpoint), clip,
                   text(opts.wav2clip_checkpoint), text(weights.chosen_dir(opts.checkpoints)))


@dataclass(frozen=True)
class Fingerprint:
    """A weight file as the driver has it: what a worker's copy must match."""

    key: str  # 'config', 'ckpt', 'clip' or 'wav2clip'
    path: str  # absolute
    size: int
    sha256: str


def fingerprints(paths: dict[str, Path]) -> tuple[Fingerprint, ...]:
    """The fingerprints of resolved weight files (hashed once per file, see weights.digest)."""
    return tuple(Fingerprint(key, os.path.abspath(path), Path(path).stat().st_size,
                             weights.digest(path)) for key, path in sorted(paths.items()))


def check_fingerprints(paths: dict[str, Path], expected: tuple) -> None:
    """Refuses weight files that differ from the driver's (one ModelError line naming the file
    and this machine); nothing to check when `expected` is empty."""
    import socket

    for want in expected:
        path = Path(paths[want.key])
        size = path.stat().st_size
        got = weights.digest(path) if size == want.size else None
        if got != want.sha256:
            what = (f"{size} bytes, not {want.size}" if got is None
                    else f"SHA-256 {got[:12]}, not {want.sha256[:12]}")
            raise ModelError(f"{path} on {socket.gethostname()} is not the driver's file ({what}); "
                             "give every node the same weights (shared storage, or the same "
                             "download), then run the same command to resume")


@dataclass
class Models:
    """The loaded networks and what the loop needs to know about them."""

    vqgan: VQGAN
    perceptor: Perceptor
    wav2clip: nn.Module
    device: torch.device
    embed_dim: int  # CLIP's embedding width


def _given_weights(choice: WeightChoice) -> dict[str, Path]:
    """The weight files named on the command line, checked to exist."""
    if bool(choice.vqgan_config) != bool(choice.vqgan_checkpoint):
        raise ModelError("give both -conf and -ckpt (a VQGAN is a yaml config plus a checkpoint)")
    given = {"config": choice.vqgan_config, "ckpt": choice.vqgan_checkpoint,
             "wav2clip": choice.wav2clip_checkpoint}
    given = {key: Path(path) for key, path in given.items() if path}
    for path in given.values():
        if not path.is_file():
            raise ModelError(f"{path} not found; check the path, or leave the flag out to use "
                             "the default model (bash download_models.sh fetches it)")
    return given


def resolve_weights(choice: WeightChoice, quiet: bool = False) -> dict[str, Path]:
    """Paths of the three models' files; the registry's defaults are fetched when missing.

    Everything the user named is checked before anything is downloaded. A worker on another
    machine calls this too, with its own checkpoints folder."""
    flag = Path(choice.checkpoints) if choice.checkpoints else None
    paths = _given_weights(choice)
    check_clip_name(choice.clip_model)
    if "config" not in paths:
        with _offline_fix("-conf and -ckpt"):
            root = weights.model_dir(weights.DEFAULT_VQGAN, flag)
            paths["config"], paths["ckpt"] = weights.fetch(weights.DEFAULT_VQGAN, root, quiet)
    with _offline_fix("-m FILE"):
        paths["clip"] = clip_path(choice.clip_model, flag, quiet)
    if "wav2clip" not in paths:
        with _offline_fix("--wav2clip_checkpoint FILE"):
            (paths["wav2clip"],) = weights.fetch("wav2clip", weights.model_dir("wav2clip", flag),
                                                 quiet)
    return paths


@contextlib.contextmanager
def _offline_fix(flags: str):
    """A failed download as one line: what is missing and why, then how to get it or go
    around it with the flags that name a file."""
    try:
        yield
    except DownloadError as err:
        raise ModelError(f"{err.problem}; connect to the internet, or give {flags}") from None


# CLIP's input side for the named models that are not 224 pixels.
CLIP_INPUT = {"RN50x4": 288, "RN50x16": 384, "RN50x64": 448, "ViT-L/14@336px": 336}


def picture_size(size: tuple[int, int], config: Path) -> tuple[int, int]:
    """-s rounded down to whole cells of the configured VQGAN; too small a size is an error."""
    factor = cell_size(read_vqgan_config(config)[1])
    width, height = whole_cells(size, factor)
    if not width or not height:
        raise ModelError(f"-s {size[0]} {size[1]} is smaller than one {factor}-pixel "
                         f"VQGAN cell; use at least -s {factor} {factor}")
    return width, height


def decoder_bytes(params: dict, size: tuple[int, int]) -> int:
    """A low estimate of the memory one step's decoder needs at a picture size (bytes).

    Its activations, kept for the backward pass, dominate: every level of the decoder keeps a
    few tensors per residual block, of its channels at its resolution (counted at 2 bytes a
    value, as in bf16, so that only sizes that cannot fit at all are refused)."""
    dd = params["ddconfig"]
    width, height = size
    levels = len(dd["ch_mult"])
    per_pixel = sum(dd["ch"] * mult / 4 ** (levels - 1 - i) for i, mult in enumerate(dd["ch_mult"]))
    return int(2 * per_pixel * width * height * (dd["num_res_blocks"] + 1) * 4)


def attention_bytes(params: dict, size: tuple[int, int]) -> int:
    """A low estimate of the decoder's attention maps at a picture size (bytes): each attention
    block keeps a (hw, hw) softmax for the backward pass (2 bytes a value, as in bf16)."""
    dd = params["ddconfig"]
    width, height = size
    levels = len(dd["ch_mult"])
    blocks = {levels - 1: 1}  # the middle block's, at the latent's resolution
    for level in range(levels):  # level 0: full resolution
        if dd["resolution"] // 2 ** level in dd["attn_resolutions"]:
            blocks[level] = blocks.get(level, 0) + dd["num_res_blocks"] + 1
    return sum(2 * ((width >> level) * (height >> level)) ** 2 * count
               for level, count in blocks.items())


def cutout_bytes(num_cuts: int, clip_model: str) -> int:
    """A low estimate of one step's cut-outs (bytes): -cuts views at CLIP's input size, fp32,
    and their normalised copies. A CLIP file counts at 224 pixels, the smallest named model's."""
    side = CLIP_INPUT.get(clip_model, 224)
    return 2 * 4 * 3 * side * side * num_cuts


def step_bytes(params: dict, size: tuple[int, int], num_cuts: int, clip_model: str) -> int:
    """A low estimate of what one step allocates: decoder activations and attention, cut-outs."""
    return (decoder_bytes(params, size) + attention_bytes(params, size)
            + cutout_bytes(num_cuts, clip_model))


def load_models(paths: dict, device, num_cuts: int, cut_method: str,
                cut_power: float, augments) -> Models:
    """Loads VQGAN, CLIP (with the cut-outs) and Wav2CLIP onto the device."""
    vqgan = load_vqgan(paths["config"], paths["ckpt"], device)
    clip_model = load_clip(paths["clip"], device)
    cutouts = MakeCutouts(clip_model.visual.input_resolution, num_cuts, cut_method, cut_power,
                          augments)
    return Models(vqgan, Perceptor(clip_model, cutouts), load_wav2clip(paths["wav2clip"], device),
                  torch.device(device), clip_model.visual.output_dim)


def first_latent(vqgan, size: tuple[int, int], seed: int, device,
                 init_image: torch.Tensor | None = None, init_noise: str | None = None):
    """The start latent: a -ii picture (1, 3, H, W), -in noise, or random codebook entries."""
    gen = torch.Generator().manual_seed(seed)
    width, height = size
    if init_image is not None:
        image = init_image
    elif init_noise:
        image = noise_image(init_noise, width, height, gen)
    else:
        return random_latent(vqgan, width, height, gen).to(device)
    with torch.no_grad():
        return vqgan.encode(image.to(device))
