"""The weights the tool uses: one registry of names, files and sources, and their download."""

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "MUSIC2VIDEO_CHECKPOINTS"
DEFAULT_DIR = Path("checkpoints")
HEIBOX = "https://heibox.uni-heidelberg.de/d/{share}/files/?p=%2F{path}&dl=1"
WAV2CLIP_URL = ("https://github.com/descriptinc/lyrebird-wav2clip/releases/download/"
                "v0.1.0-alpha/Wav2CLIP.pt")
DEFAULT_VQGAN = "vqgan_imagenet_f16_16384"
DEFAULT_CLIP = "ViT-B/32"
# The seed's download_models.sh fetched one VQGAN; CLIP and Wav2CLIP came from their own hubs.
DEFAULT_FETCH = (DEFAULT_VQGAN, DEFAULT_CLIP, "wav2clip")


@dataclass(frozen=True)
class WeightFile:
    """One file of a model."""

    filename: str  # name inside the checkpoints folder
    url: str  # where it comes from
    sha256: str | None = None  # known digest; None means a structural check after download


@dataclass(frozen=True)
class Model:
    """A model the tool offers."""

    name: str  # what users type
    kind: str  # 'vqgan', 'clip' or 'wav2clip'
    files: tuple[WeightFile, ...]  # vqgan: (yaml, ckpt); others: one file
    size_mb: int  # approximate download size, as published
    licence: str  # the licence of the weights


def _vqgan(name: str, share: str, size_mb: int, yaml_path="configs%2Fmodel.yaml",
           ckpt_path="ckpts%2Flast.ckpt", licence="MIT (taming-transformers)") -> Model:
    """A VQGAN from the taming-transformers authors' share."""
    if share.startswith("http"):
        yaml_url, ckpt_url = share + ".yaml", share + ".ckpt"
    else:
        yaml_url = HEIBOX.format(share=share, path=yaml_path)
        ckpt_url = HEIBOX.format(share=share, path=ckpt_path)
    return Model(name, "vqgan", (WeightFile(f"{name}.yaml", yaml_url),
                                 WeightFile(f"{name}.ckpt", ckpt_url)), size_mb, licence)


def _clip_models() -> list[Model]:
    """OpenAI's CLIP models, by the names clip.available_models() gives; the URL holds the digest."""
    from clip.clip import _MODELS

    return [Model(name, "clip", (WeightFile(Path(url).name, url, url.split("/")[-2]),),
                  _CLIP_SIZES_MB.get(name, 0), "MIT (OpenAI CLIP)")
            for name, url in _MODELS.items()]


_CLIP_SIZES_MB = {"RN50": 244, "RN101": 278, "RN50x4": 402, "RN50x16": 630, "RN50x64": 1260,
                  "ViT-B/32": 338, "ViT-B/16": 335, "ViT-L/14": 890, "ViT-L/14@336px": 891}


def registry() -> dict[str, Model]:
    """Every model the tool offers, by name."""
    models = [
        _vqgan("vqgan_imagenet_f16_16384", "a7530b09fed84f80a887", 980),
        _vqgan("vqgan_imagenet_f16_1024", "8088892a516d4e3baf92", 960),
        _vqgan("vqgan_gumbel_f8_8192", "2e5662443a6b4307b470", 380),
        _vqgan("wikiart_16384", "http://eaidata.bmk.sh/data/Wikiart_16384/wikiart_f16_16384_8145600",
               1000, licence="unstated (community model trained on WikiArt)"),
        *_clip_models(),
        Model("wav2clip", "wav2clip", (WeightFile("Wav2CLIP.pt", WAV2CLIP_URL),), 47, "MIT (Wav2CLIP)"),
    ]
    return {m.name: m for m in models}


def checkpoint_dir(flag: Path | None = None) -> Path:
    """Where weights live: the flag, else $MUSIC2VIDEO_CHECKPOINTS, else ./checkpoints."""
    if flag is not None:
        return Path(flag)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def lookup(name: str) -> Model:
    """The registry entry for name; unknown names list the choices."""
    models = registry()
    if name not in models:
        raise KeyError(f"Model {name} not found; available models = {sorted(models)}")
    return models[name]


def ensure(file: WeightFile, root: Path, verify=None, quiet: bool = False) -> Path:
    """The file's path under root, downloading it first when missing (or failing its digest)."""
    from .download import download, sha256sum

    path = Path(root) / file.filename
    if path.is_file() and (file.sha256 is None or sha256sum(path) == file.sha256):
        return path
    return download(file.url, path, sha256=file.sha256, verify=verify, quiet=quiet)


def fetch(name: str, root: Path, quiet: bool = False, errors: list | None = None) -> list[Path]:
    """Makes sure every file of a model is present and sound; returns their paths.

    With an `errors` list, a file that cannot be fetched is recorded there and the next one is
    tried; without it the first failure raises."""
    from . import models
    from .download import DownloadError

    model = lookup(name)
    paths = []
    for file in model.files:
        verify = models.verifier(model, file, root)
        try:
            paths.append(ensure(file, root, verify=verify, quiet=quiet))
        except DownloadError as err:
            if errors is None:
                raise
            errors.append(err)
    return paths


def _parser() -> argparse.ArgumentParser:
    """Command line of `python -m music2video.weights` (download_models.sh)."""
    p = argparse.ArgumentParser(prog="download_models.sh", description="Fetch model weights.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("names", nargs="*", help=f"models to fetch (default: {' '.join(DEFAULT_FETCH)})")
    p.add_argument("--all", action="store_true", help="fetch every VQGAN, the default CLIP and Wav2CLIP")
    p.add_argument("--list", action="store_true", help="list the models and exit")
    p.add_argument("--checkpoints", type=Path, default=None,
                   help=f"weights folder (default: ${ENV_VAR} or ./checkpoints)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def _print_list(root: Path) -> None:
    """Prints each model, its size and whether it is present."""
    for model in registry().values():
        here = all((root / f.filename).is_file() for f in model.files)
        print(f"{model.name:28s} {model.kind:9s} ~{model.size_mb:5d} MB  "
              f"{'present' if here else 'missing'}  {model.licence}")


def main(argv=None) -> int:
    """Fetches the named models; one stderr line per file that could not be fetched."""
    from .download import DownloadError

    args = _parser().parse_args(argv)
    root = checkpoint_dir(args.checkpoints)
    if args.list:
        _print_list(root)
        return 0
    names = args.names or list(DEFAULT_FETCH)
    if args.all:
        names = [m.name for m in registry().values() if m.kind == "vqgan"] + [DEFAULT_CLIP, "wav2clip"]
    errors: list = []
    for name in names:
        try:
            for path in fetch(name, root, quiet=args.quiet, errors=errors):
                print(f"ok  {path}")
        except KeyError as err:
            errors.append(err)
    for err in errors:
        print(f"error: {err.args[0]}", file=sys.stderr)
    return 1 if errors else 0

if __name__ == "__main__":
    sys.exit(main())
