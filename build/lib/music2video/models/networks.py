"""The three networks: VQGAN (image decoder), CLIP (image and text) and Wav2CLIP (audio)."""

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .autograd import clamp_with_grad, vector_quantize
from .checkpoint import CheckpointError, first_line, state_dict_of

VQMODEL = "taming.models.vqgan.VQModel"
GUMBELVQ = "taming.models.vqgan.GumbelVQ"
DEVICE_TYPES = ("cpu", "cuda", "mps")  # what -cd accepts


class ModelError(UserError, RuntimeError):
    """A model that cannot be loaded; str() names the file and the fix."""


class VQGAN(nn.Module):
    """The taming-transformers first stage for inference: encoder, codebook, decoder.

    Built from taming's own modules, so the training loss (which downloads VGG) and
    pytorch-lightning are never needed."""

    def __init__(self, target: str, params: dict):
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import GumbelQuantize, VectorQuantizer2

        super().__init__()
        dd, n_embed, embed_dim = dict(params["ddconfig"]), params["n_embed"], params["embed_dim"]
        self.gumbel = target == GUMBELVQ
        self.encoder = Encoder(**dd)
        with contextlib.redirect_stdout(io.StringIO()):  # taming prints the latent's shape
            self.decoder = Decoder(**dd)
        if self.gumbel:
            self.quantize = GumbelQuantize(dd["z_channels"], embed_dim, n_embed=n_embed,
                                           kl_weight=params.get("kl_weight", 1e-8), temp_init=1.0)
        else:
            self.quantize = VectorQuantizer2(n_embed, embed_dim, beta=0.25)
        self.quant_conv = nn.Conv2d(dd["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, dd["z_channels"], 1)

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors, (n_embed, embed_dim)."""
        return self.quantize.embed.weight if self.gumbel else self.quantize.embedding.weight

    @property
    def factor(self) -> int:
        """Pixels per latent cell along each side."""
        return 2 ** (self.decoder.num_resolutions - 1)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Quantised latent (B, e, H/f, W/f) of an image batch (B, 3, H, W) in [0, 1]."""
        h = self.quant_conv(self.encoder(image * 2 - 1))  # (B, e, h, w)
        if self.gumbel:
            return self.codebook[self.quantize.proj(h).argmax(1)].movedim(3, 1)
        return vector_quantize(h.movedim(1, 3), self.codebook).movedim(3, 1)

    def synth(self, z: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W) in [0, 1] of a free latent z, snapped to the codebook on the way."""
        z_q = vector_quantize(z.movedim(1, 3), self.codebook).movedim(3, 1)
        return clamp_with_grad(self.decoder(self.post_quant_conv(z_q)).add(1).div(2), 0, 1)


def cell_size(params: dict) -> int:
    """Pixels per latent cell of a VQGAN config's params, read without building the model."""
    return 2 ** (len(params["ddconfig"]["ch_mult"]) - 1)


def whole_cells(size, factor: int) -> tuple[int, int]:
    """A (width, height) rounded down to whole latent cells."""
    width, height = size
    return width // factor * factor, height // factor * factor


def _config_error(path: Path, reason: str) -> ModelError:
    """The one-line error for a yaml that is not a usable VQGAN config."""
    return ModelError(f"{path} is not a taming VQGAN config ({reason}); give the .yaml that came "
                      "with the .ckpt, or delete it and run: bash download_models.sh")


def _yaml_reason(err: Exception) -> str:
    """What a YAML parser disliked, and where, on one line."""
    mark = getattr(err, "problem_mark", None)
    if getattr(err, "problem", None) and mark is not None:
        return f"not YAML: {err.problem} at line {mark.line + 1}, column {mark.column + 1}"
    text = " ".join(str(err).split()) or type(err).__name__
    return f"not YAML: {text[:120]}"


def read_vqgan_config(path: Path) -> tuple[str, dict]:
    """The model target and params of a taming yaml config; every problem is one line."""
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} not found; run: bash download_models.sh")
    try:
        config = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as err:  # yaml's scanner, parser, reader and constructor errors; bad bytes
        raise _config_error(path, _yaml_reason(err)) from None
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("params"), dict):
        raise _config_error(path, "no model.params mapping")
    target, params = model.get("target"), model["params"]
    missing = [k for k in ("ddconfig", "n_embed", "embed_dim") if k not in params]
    if missing:
        raise _config_error(path, f"model.params has no {', '.join(missing)}")
    if not isinstance(params["ddconfig"], dict) or not isinstance(
            params["ddconfig"].get("ch_mult"), list):
        raise _config_error(path, "model.params.ddconfig has no ch_mult list")
    if target not in (VQMODEL, GUMBELVQ):
        raise ModelError(f"{path}: model type {target} is not supported; use a VQModel or "
                         "GumbelVQ config (e.g. vqgan_imagenet_f16_16384.yaml)")
    return target, params


def _check_keys(path: Path, expected: dict, found: dict) -> None:
    """Raises when a state dict does not fit the model built from the config."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(expected) & set(found) if expected[k].shape != found[k].shape)
    problems = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("wrong shape", shapes)) if keys]
    if problems:
        raise ModelError(f"{path} does not match its config ({'; '.join(problems)}); use the "
                         ".ckpt that belongs with the .yaml, or delete both and run: "
                         "bash download_models.sh")


def load_vqgan(config: Path, ckpt: Path, device="cpu") -> VQGAN:
    """VQGAN from a taming yaml + Lightning ckpt, in eval mode with frozen weights."""
    target, params = read_vqgan_config(config)
    try:
        model = VQGAN(target, params)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
        reason = f"{type(err).__name__}: {first_line(err)}"
        raise _config_error(Path(config), f"its ddconfig builds no VQGAN: {reason}") from None
    state = {k: v for k, v in read_state_dict(ckpt).items() if not k.startswith("loss.")}
    _check_keys(Path(ckpt), model.state_dict(), state)
    model.load_state_dict(state)
    return model.eval().requires_grad_(False).to(device)


def read_state_dict(path: Path) -> dict:
    """Tensors of a checkpoint, with load failures as ModelError."""
    try:
        return state_dict_of(path)
    except CheckpointError as err:
        raise ModelError(str(err)) from None


def check_clip_name(name: str) -> None:
    """Raises unless name is a CLIP model name or an existing checkpoint file."""
    import clip

    if not os.path.isfile(name) and name not in clip.available_models():
        raise ModelError(f"Model {name} not found; available models = {clip.available_models()} "
                         "or a path to a CLIP checkpoint file")


def load_clip(path: Path, device="cpu") -> nn.Module:
    """CLIP from an OpenAI checkpoint (TorchScript archive or state dict), float32, frozen.

    The file goes through the project's safe loader (checkpoint.state_dict_of): nothing in it
    runs, whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says, and TorchScript code is never loaded."""
    from clip.model import build_model

    path = Path(path)
    state = read_state_dict(path)
    try:
        model = build_model(state)
    except Exception as err:  # a state dict of some other network: missing keys, shapes
        reason = f"{type(err).__name__}: {first_line(err)}"
        raise ModelError(f"{path} is not a CLIP checkpoint ({reason}); delete it and run: "
                         "bash download_models.sh") from None
    return model.float().eval().requires_grad_(False).to(device)


def load_wav2clip(path: Path, device="cpu") -> nn.Module:
    """Wav2CLIP in its pretrained structure (ResNet18 encoder + MLP, 512-d), frozen; no network."""
    from wav2clip.model.encoder import ResNetExtractor

    path = Path(path)
    state = read_state_dict(path)
    if not any(k.startswith("audio_encoder.") for k in state):
        raise ModelError(f"{path} is not a Wav2CLIP checkpoint (no audio_encoder weights); "
                         "run: bash download_models.sh")
    try:
        model = ResNetExtractor(checkpoint=state, scenario="frozen", transform=True)
    except RuntimeError as err:
        reason = first_line(err)
        raise ModelError(f"{path} does not fit Wav2CLIP ({reason}); "
                         "run: bash download_models.sh") from None
    return model.eval().requires_grad_(False).to(device)


def embed_audio(model: nn.Module, samples: np.ndarray) -> torch.Tensor:
    """Wav2CLIP embedding (1, 512) of mono float32 audio at 16 kHz."""
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None].to(device)
    with torch.no_grad():
        return model(x).float()


def _device(text: str) -> torch.device:
    """The torch device a -cd value names: cpu, cuda, cuda:N or mps; anything else is an error."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES or (
            device.type != "cuda" and device.index not in (None, 0)):
        raise ModelError(f"-cd {text} is not a device; use cpu, cuda, cuda:N or mps")
    return device


def pick_device(cuda_device: str | None = None, gpu_id: int = 0) -> torch.device:
    """CUDA (the -cd device, else GPU -gid), then Apple MPS, then the CPU with a warning."""
    if cuda_device:
        device = _device(cuda_device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ModelError(f"-cd {cuda_device}: no CUDA GPU is visible; use -cd cpu")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ModelError(f"-cd {cuda_device}: Apple MPS is not available here; use -cd cpu")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise ModelError(f"-cd {cuda_device}: this machine has {torch.cuda.device_count()} "
                             "GPU(s); pick one of them, e.g. -cd cuda:0")
        return device
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if gpu_id >= count:
            warnings.warn(f"GPU {gpu_id} not found ({count} visible); using GPU 0")
            gpu_id = 0
        return torch.device("cuda", gpu_id)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    warnings.warn("no GPU found; running on the CPU, which is slow (minutes per second of song)")
    return torch.device("cpu")
