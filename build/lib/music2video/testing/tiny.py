"""Tiny random-weight models in the real files' formats, for tests and CI: no downloads.

    python -m music2video.tiny DIR

writes DIR/vqgan.yaml, DIR/vqgan.ckpt (a PyTorch-Lightning 1.x style pickle), DIR/clip.pt (a
TorchScript archive, like OpenAI's files) and DIR/wav2clip.pt (Wav2CLIP's state dict; its
ResNet18 encoder is full size because its class cannot be shrunk). write_full_size writes the same
four files at full size (the GPU report's pipeline: python -m tools.gpureport)."""

import argparse
import pickle
import types
import warnings
from collections import OrderedDict
from pathlib import Path

import torch

from ..models.networks import GUMBELVQ, VQGAN, VQMODEL

EMBED_DIM = 512  # CLIP's and Wav2CLIP's shared embedding width
LIGHTNING_CALLBACK = b"pytorch_lightning.callbacks.model_checkpoint\nModelCheckpoint\n"


def taming_config(params: dict, gumbel: bool = False) -> dict:
    """A taming yaml's layout around a model's params: its target, the training loss the real
    files name (never built here), and GumbelVQ's temperature schedule."""
    loss = {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
            "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 0,
                       "disc_weight": 0.8, "codebook_weight": 1.0}}
    params = {**params, "lossconfig": loss}
    if gumbel:
        params |= {"kl_weight": 1e-8, "temperature_scheduler_config": {
            "target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler",
            "params": {"warm_up_steps": 0, "max_decay_steps": 1, "lr_start": 0.9,
                       "lr_max": 0.9, "lr_min": 1e-6}}}
    return {"model": {"base_learning_rate": 4.5e-6, "target": GUMBELVQ if gumbel else VQMODEL,
                      "params": params}}


def vqgan_config(gumbel: bool = False) -> dict:
    """A taming config of the real files' shape, with a small decoder (f=4, 16 codes wide)."""
    ddconfig = {"double_z": False, "z_channels": 16, "resolution": 64, "in_channels": 3,
                "out_ch": 3, "ch": 32, "ch_mult": [1, 1, 2], "num_res_blocks": 1,
                "attn_resolutions": [16], "dropout": 0.0}
    return taming_config({"embed_dim": 16, "n_embed": 64, "ddconfig": ddconfig}, gumbel)


class _ModelCheckpoint:
    """Pickles as pytorch_lightning's ModelCheckpoint class without importing it."""


class _LightningPickler(pickle._Pickler):
    """Writes _ModelCheckpoint under Lightning's class name, as real checkpoints key callbacks."""

    def save_global(self, obj, name=None):
        if obj is _ModelCheckpoint:
            self.write(pickle.GLOBAL + LIGHTNING_CALLBACK)
            self.memoize(obj)
            return
        super().save_global(obj, name)


def lightning_save(obj, path: Path) -> None:
    """torch.save with Lightning callback classes written by name."""
    module = types.ModuleType("lightning_pickle")
    module.Pickler = _LightningPickler
    torch.save(obj, path, pickle_module=module)


def lightning_checkpoint(state_dict: dict) -> dict:
    """The layout of a PyTorch-Lightning 1.x checkpoint around a state dict."""
    callback = {"monitor": "val/rec_loss", "best_model_score": torch.tensor(0.5),
                "best_model_path": "logs/checkpoints/last.ckpt"}
    return {"epoch": 1, "global_step": 10, "pytorch-lightning_version": "1.0.8",
            "state_dict": state_dict, "callbacks": {_ModelCheckpoint: callback},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6, "params": [0]}]}],
            "lr_schedulers": []}


def write_vqgan(directory: Path, gumbel: bool = False, name: str = "vqgan",
                config: dict | None = None) -> tuple[Path, Path]:
    """Writes NAME.yaml and NAME.ckpt (random weights, plus training-loss keys as in real files).

    config: a taming config (taming_config); the tiny one when None."""
    from omegaconf import OmegaConf

    config = vqgan_config(gumbel) if config is None else config
    model = VQGAN(config["model"]["target"], config["model"]["params"])
    state = OrderedDict(model.state_dict())
    state["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    state["loss.logvar"] = torch.zeros(())
    yaml, ckpt = directory / f"{name}.yaml", directory / f"{name}.ckpt"
    OmegaConf.save(OmegaConf.create(config), yaml)
    lightning_save(lightning_checkpoint(state), ckpt)
    return yaml, ckpt


def write_clip(path: Path, arch: tuple | None = None, half: bool = False) -> Path:
    """A CLIP saved as a TorchScript archive: the tiny one-layer CLIP (32 px, 512-d embeddings),
    or clip.model.CLIP(*arch) (bench.CLIP_ARCHS' tuples); half: fp16 weights, as OpenAI's files."""
    import clip
    from clip.model import CLIP, convert_weights

    if arch is None:
        model = CLIP(embed_dim=EMBED_DIM, image_resolution=32, vision_layers=1, vision_width=64,
                     vision_patch_size=16, context_length=77, vocab_size=49408,
                     transformer_width=64, transformer_heads=1, transformer_layers=1)
    else:
        model = CLIP(*arch)
    if half:
        convert_weights(model)  # what OpenAI's released archives hold
    side = model.visual.input_resolution
    image = torch.zeros(1, 3, side, side, dtype=torch.float16 if half else torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model.eval(), (image, clip.tokenize(["a"])), check_trace=False)
    traced.save(str(path))
    return path


def write_wav2clip(path: Path) -> Path:
    """Wav2CLIP's state dict (audio_encoder.*, audio_transform.*) with random weights."""
    from wav2clip.model.encoder import MLPLayers
    from wav2clip.model.resnet import BasicBlock, ResNet

    encoder = ResNet(BasicBlock, [2, 2, 2, 2])
    transform = MLPLayers(units=[EMBED_DIM] * 3)
    state = OrderedDict([(f"audio_encoder.{k}", v) for k, v in encoder.state_dict().items()]
                        + [(f"audio_transform.{k}", v) for k, v in transform.state_dict().items()])
    torch.save(state, path)
    return path


def write_all(directory: Path, seed: int = 0) -> dict[str, Path]:
    """Writes the four tiny model files into directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    yaml, ckpt = write_vqgan(directory)
    return {"vqgan_config": yaml, "vqgan_checkpoint": ckpt,
            "clip": write_clip(directory / "clip.pt"),
            "wav2clip": write_wav2clip(directory / "wav2clip.pt")}


def write_full_size(directory: Path, vqgan_params: dict, clip_arch: tuple,
                    seed: int = 0) -> dict[str, Path]:
    """Writes full-size random-weight models in the real files' formats, as write_all names them.

    vqgan_params: a taming model's params (bench.VQGAN_F16_16384); clip_arch: clip.model.CLIP's
    arguments (bench.CLIP_ARCHS['ViT-B/32']), saved with fp16 weights as OpenAI's files are.
    Wav2CLIP is full size anyway. VQGAN f16-16384 takes 290 MB, ViT-B/32 337 MB."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    yaml, ckpt = write_vqgan(directory, config=taming_config(vqgan_params))
    return {"vqgan_config": yaml, "vqgan_checkpoint": ckpt,
            "clip": write_clip(directory / "clip.pt", clip_arch, half=True),
            "wav2clip": write_wav2clip(directory / "wav2clip.pt")}


def main(argv=None) -> None:
    """Command line: python -m music2video.tiny DIR."""
    parser = argparse.ArgumentParser(description="Write tiny random-weight models for tests.")
    parser.add_argument("directory", type=Path, help="folder to write the four files into")
    for path in write_all(parser.parse_args(argv).directory).values():
        print(path)


if __name__ == "__main__":
    main()
