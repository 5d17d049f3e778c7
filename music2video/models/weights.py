"""The weights the tool uses: one registry of names, files and sources, and their download."""

import argparse
import contextlib
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..files import RunError, user_cache, write_json

ENV_VAR = "MUSIC2VIDEO_CHECKPOINTS"  # one weights folder for everything (as --checkpoints)
SEED_DIR = Path("checkpoints")  # the seed's layout: read first when it holds a model's files
MIRROR_VAR = "MUSIC2VIDEO_WEIGHTS_URL"  # a server with the files by name, used instead of sources
CLIP_CACHE = Path("~/.cache/clip")  # where OpenAI's clip.load keeps what it downloaded
HEIBOX = "https://heibox.uni-heidelberg.de/d/{share}/files/?p=%2F{path}&dl=1"
# Mirrors seen in public projects, tried in order after the authors' share; none publishes a
# checksum, so their files pass the same structural check as the share's.
IO_COMMUNITY = "http://mirror.io.community/blob/vqgan/{name}"
FEED_FORWARD = "https://github.com/mehdidc/feed_forward_vqgan_clip/releases/download/0.1/{name}"
PIXRAY = "https://github.com/pixray/pixray/releases/download/v1.7.1/{name}"
STAMPS = ".verified.json"  # in the weights folder: files that passed their check, by size and time
DIGESTS = "digests.json"  # in this machine's cache folder: weight files' SHA-256 by path, size, time
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
    mirrors: tuple[str, ...] = ()  # further URLs with the same file, tried in order after url

    @property
    def urls(self) -> tuple[str, ...]:
        """Every URL of the file, in the order they are tried."""
        return (self.url, *self.mirrors)


@dataclass(frozen=True)
class Model:
    """A model the tool offers."""

    name: str  # what users type
    kind: str  # 'vqgan', 'clip' or 'wav2clip'
    files: tuple[WeightFile, ...]  # vqgan: (yaml, ckpt); others: one file
    size_mb: int  # approximate download size, as published
    licence: str  # the licence of the weights


def _vqgan(name: str, sources: tuple[str, ...], size_mb: int,
           licence="MIT (taming-transformers)") -> Model:
    """A VQGAN whose yaml and ckpt come from these sources, in order.

    A source is a heibox share of the taming-transformers authors (its id), or a URL that
    gives the two files when '.yaml' and '.ckpt' are appended."""
    urls = {"yaml": [], "ckpt": []}
    for source in sources:
        for ext, share_path in (("yaml", "configs%2Fmodel.yaml"), ("ckpt", "ckpts%2Flast.ckpt")):
            urls[ext].append(f"{source}.{ext}" if source.startswith("http")
                             else HEIBOX.format(share=source, path=share_path))
    files = tuple(WeightFile(f"{name}.{ext}", urls[ext][0], mirrors=tuple(urls[ext][1:]))
                  for ext in ("yaml", "ckpt"))
    return Model(name, "vqgan", files, size_mb, licence)


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
        _vqgan("vqgan_imagenet_f16_16384", (
            "a7530b09fed84f80a887", IO_COMMUNITY.format(name="vqgan_imagenet_f16_16384"),
            FEED_FORWARD.format(name="vqgan_imagenet_f16_16384")), 980),
        _vqgan("vqgan_imagenet_f16_1024", (
            "8088892a516d4e3baf92", IO_COMMUNITY.format(name="vqgan_imagenet_f16_1024")), 960),
        _vqgan("vqgan_gumbel_f8_8192", ("2e5662443a6b4307b470",), 380),
        # The original host (eaidata.bmk.sh) is gone; pixray's release carries the same files.
        _vqgan("wikiart_16384", (PIXRAY.format(name="vqgan_wikiart_16384"),), 1000,
               licence="unstated (community model trained on WikiArt)"),
        *_clip_models(),
        Model("wav2clip", "wav2clip", (WeightFile("Wav2CLIP.pt", WAV2CLIP_URL),), 47, "MIT (Wav2CLIP)"),
    ]
    return {m.name: m for m in models}


def chosen_dir(flag: Path | None = None) -> Path | None:
    """The weights folder the user chose (--checkpoints, else $MUSIC2VIDEO_CHECKPOINTS), or None."""
    if flag is not None:
        return Path(flag)
    return Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else None


def checkpoint_dir(flag: Path | None = None) -> Path:
    """Where weights are downloaded: the chosen folder, else the per-user cache."""
    return chosen_dir(flag) or user_cache()


def model_dir(name: str, flag: Path | None = None) -> Path:
    """The folder a registry model is read from (and downloaded into when missing): the chosen
    folder; else ./checkpoints when it holds every file of the model (the seed's layout); else
    the per-user cache."""
    chosen = chosen_dir(flag)
    if chosen is not None:
        return chosen
    if all((SEED_DIR / f.filename).is_file() for f in lookup(name).files):
        return SEED_DIR
    return user_cache()


def clip_cached(model: Model) -> Path | None:
    """A CLIP file that OpenAI's clip package already downloaded (~/.cache/clip), when its
    checksum is the registry's; None otherwise."""
    from .download import sha256sum

    (file,) = model.files
    path = CLIP_CACHE.expanduser() / file.filename
    if file.sha256 and path.is_file() and sha256sum(path) == file.sha256.lower():
        return path
    return None


def sources(file: WeightFile) -> tuple[str, ...]:
    """The URLs a file is fetched from: $MUSIC2VIDEO_WEIGHTS_URL/<file> when set, else the
    registry's, in order."""
    mirror = os.environ.get(MIRROR_VAR)
    return (f"{mirror.rstrip('/')}/{file.filename}",) if mirror else file.urls


def lookup(name: str) -> Model:
    """The registry entry for name; unknown names list the choices."""
    models = registry()
    if name not in models:
        raise KeyError(f"Model {name} not found; available models = {sorted(models)}")
    return models[name]


def _stamp(path: Path, file: WeightFile) -> list:
    """What a verified file is remembered by: its size, its modification time and its check."""
    info = path.stat()
    return [info.st_size, info.st_mtime_ns, file.sha256 or "structure"]


def _stamps(root: Path) -> dict:
    """The verified stamps of a weights folder; none when the file is missing or unreadable."""
    try:
        stamps = json.loads((Path(root) / STAMPS).read_text())
    except (OSError, ValueError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def _remember(path: Path, file: WeightFile) -> None:
    """Records that path passed its check; a folder that cannot be written is checked every time."""
    root = path.parent
    stamps = _stamps(root) | {file.filename: _stamp(path, file)}
    with contextlib.suppress(OSError, RunError):
        write_json(root / STAMPS, stamps)


def _problem(path: Path, file: WeightFile, verify) -> str | None:
    """What is wrong with an existing file, as a phrase after its path; None when it passes.

    A file that passed before and has not changed since (its stamp) is not checked again."""
    from .download import sha256sum

    if _stamps(path.parent).get(file.filename) == _stamp(path, file):
        return None
    if file.sha256 is not None:
        got = sha256sum(path)
        if got != file.sha256.lower():
            return f"has checksum {got[:12]}, not {file.sha256[:12]}"
    elif verify is not None:
        try:
            verify(path)
        except Exception as err:
            return _phrase(path, err)
    else:
        return None  # nothing to check it against: used as it is, and not remembered as checked
    _remember(path, file)
    return None


def _phrase(path: Path, err: Exception) -> str:
    """A check's one-line error as a phrase after the file's path, without its advice."""
    text = " ".join(str(err).split()) or type(err).__name__
    for lead in (f"{path} ", f"{path}: "):
        if text.startswith(lead):
            return text[len(lead):].split("; ")[0]
    return f"failed its check ({text})"


def ensure(file: WeightFile, root: Path, verify=None, quiet: bool = False) -> Path:
    """The file's path under root, downloading it when missing or when it fails its check.

    An existing file is checked (its digest, else `verify`) the first time it is seen; a stamp
    of its size and modification time in root/.verified.json spares the check afterwards. A file
    that fails is downloaded again and replaced only once the new copy passes."""
    path = Path(root) / file.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    with _held(path.parent):  # workers starting together on one machine take turns
        return _ensure(file, path, verify, quiet)


@contextlib.contextmanager
def _held(folder: Path):
    """Holds an exclusive lock (flock) on a folder for the block: other processes wait."""
    import fcntl

    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _ensure(file: WeightFile, path: Path, verify, quiet: bool) -> Path:
    """ensure() for one file, its lock held."""
    from .download import DownloadError, download

    problem = _problem(path, file, verify) if path.is_file() else None
    if path.is_file() and problem is None:
        return path
    if problem:
        warnings.warn(f"{path} {problem}; downloading it again")
    try:
        download(sources(file), path, sha256=file.sha256, verify=verify, quiet=quiet)
    except DownloadError as err:
        if problem:
            raise DownloadError(f"{path} {problem}, and {err.problem}",
                                "connect to the internet and run again, or replace the file "
                                "by hand", err.failures) from None
        raise
    if file.sha256 or verify is not None:
        _remember(path, file)
    return path


def digest(path: Path) -> str:
    """SHA-256 of a weights file, read once: kept in this machine's cache folder by its absolute
    path, size and modification time, so a multi-GB checkpoint is hashed again only when it
    changes."""
    from ..files import RunError, cache_folder, write_json
    from .download import sha256sum

    path = Path(os.path.abspath(path))
    info = path.stat()
    stamp = [info.st_size, info.st_mtime_ns]
    cache = cache_folder() / DIGESTS
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    entry = known.get(str(path))
    if isinstance(entry, list) and entry[:2] == stamp and len(entry) == 3:
        return entry[2]
    value = sha256sum(path)
    with contextlib.suppress(OSError, RunError):  # not kept: hashed again next time
        write_json(cache, {**known, str(path): [*stamp, value]})
    return value


def fetch(name: str, root: Path, quiet: bool = False, errors: list | None = None) -> list[Path]:
    """Makes sure every file of a model is present and sound; returns their paths.

    With an `errors` list, a file that cannot be fetched is recorded there and the next one is
    tried; without it the first failure raises."""
    from .download import DownloadError

    model = lookup(name)
    paths = []
    for file in model.files:
        verify = verifier(model, file, root)
        try:
            paths.append(ensure(file, root, verify=verify, quiet=quiet))
        except DownloadError as err:
            if errors is None:
                raise
            errors.append(err)
    return paths


def _parser() -> argparse.ArgumentParser:
    """Command line of `python -m music2video.models.weights` (download_models.sh)."""
    p = argparse.ArgumentParser(prog="music2video-download", description="Fetch model weights.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("names", nargs="*", help=f"models to fetch (default: {' '.join(DEFAULT_FETCH)})")
    p.add_argument("--all", action="store_true", help="fetch every VQGAN, the default CLIP and Wav2CLIP")
    p.add_argument("--list", action="store_true", help="list the models and exit")
    p.add_argument("--checkpoints", type=Path, default=None,
                   help=f"weights folder (default: ${ENV_VAR}, else ./checkpoints for a model it "
                        "holds, else $MUSIC2VIDEO_HOME or ~/.cache/music2video)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def where(model: Model, flag: Path | None = None) -> Path | None:
    """The folder that holds every file of a model (CLIP's own cache too), or None."""
    root = model_dir(model.name, flag)
    if all((root / f.filename).is_file() for f in model.files):
        return root
    cached = clip_cached(model) if model.kind == "clip" else None
    return cached.parent if cached else None


def _print_list(flag: Path | None) -> None:
    """Prints where downloads go, then each model, its size and where it is (or 'missing')."""
    print(f"weights folder: {checkpoint_dir(flag)} (downloads go here; "
          f"{'' if chosen_dir(flag) else './checkpoints is read first when it holds a model, '}"
          "-conf/-ckpt/-m/--wav2clip_checkpoint name files anywhere)")
    for model in registry().values():
        found = where(model, flag)
        print(f"{model.name:28s} {model.kind:9s} ~{model.size_mb:5d} MB  "
              f"{str(found) if found else 'missing':30}  {model.licence}")


def _show_warning(message, *args, **kwargs) -> None:
    """A warning as one 'warning: ...' line on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    """Fetches the named models; one stderr line per file that could not be fetched."""

    args = _parser().parse_args(argv)
    if args.list:
        _print_list(args.checkpoints)
        return 0
    names = args.names or list(DEFAULT_FETCH)
    if args.all:
        names = [m.name for m in registry().values() if m.kind == "vqgan"] + [DEFAULT_CLIP, "wav2clip"]
    errors: list = []
    with warnings.catch_warnings():  # ours as 'warning: ...' lines, as the generate scripts do
        warnings.simplefilter("ignore")
        warnings.filterwarnings("always", module=r"music2video\.")
        warnings.showwarning = _show_warning
        for name in names:
            try:
                root = model_dir(name, args.checkpoints)
                found = where(lookup(name), args.checkpoints)
                if found is not None and found != root:  # CLIP's own cache has it
                    print(f"ok  {found / lookup(name).files[0].filename}")
                    continue
                for path in fetch(name, root, quiet=args.quiet, errors=errors):
                    print(f"ok  {path}")
            except KeyError as err:
                errors.append(err)
    for err in errors:
        print(f"error: {err.args[0]}", file=sys.stderr)
    return 1 if errors else 0



def clip_path(name: str, flag: Path | None = None, quiet: bool = False) -> Path:
    """A CLIP checkpoint file: the path itself; else the named model's file in the weights
    folder, or in CLIP's own cache with the right checksum; else downloaded."""
    from .networks import check_clip_name

    check_clip_name(name)
    if os.path.isfile(name):
        return Path(name)
    root = model_dir(name, flag)
    if not (root / lookup(name).files[0].filename).is_file():
        cached = clip_cached(lookup(name))
        if cached is not None:
            return cached
    return fetch(name, root, quiet=quiet)[0]


def verifier(model: Model, file: WeightFile, root: Path):
    """The structural check a freshly downloaded file must pass, or None when a digest does."""
    from .networks import load_vqgan, load_wav2clip, read_state_dict, read_vqgan_config

    if file.sha256:
        return None
    if model.kind == "wav2clip":
        return load_wav2clip
    if file.filename.endswith(".yaml"):
        return read_vqgan_config
    config = Path(root) / model.files[0].filename
    return lambda ckpt: load_vqgan(config, ckpt) if config.is_file() else read_state_dict(ckpt)


if __name__ == "__main__":
    sys.exit(main())
