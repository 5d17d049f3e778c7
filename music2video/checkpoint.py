"""Loading downloaded checkpoints without running code hidden in their pickles."""

import pickle
import re
import zipfile
from pathlib import Path

import torch

# Non-tensor entries of PyTorch-Lightning checkpoints (callbacks keyed by their class,
# hyper-parameters, numpy scalars) name globals from these packages, or these plain-data
# helpers. They are replaced by inert stand-ins: nothing they name is imported or run while
# loading. Any other name (os.system, builtins.exec, ...) is refused.
INERT_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.",
                  "taming.", "numpy.", "collections.", "pathlib.", "datetime.", "argparse.Namespace",
                  "copyreg._reconstructor", "builtins.object")

_UNSUPPORTED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded safely; str() names the file and the fix."""


class _Inert:
    """Stand-in for a class named in a checkpoint: accepts anything, does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _stand_in(qualified: str) -> type:
    """Builds an inert class that the weights-only unpickler accepts under this name."""
    module, _, name = qualified.rpartition(".")
    return type(name, (_Inert,), {"__module__": module, "__qualname__": name})


def _refuse_unsafe(path: Path, names: list[str]) -> None:
    """Raises when a checkpoint names a global that could run code."""
    unsafe = [n for n in names if not n.startswith(INERT_PREFIXES)]
    if unsafe:
        raise CheckpointError(
            f"{path} refers to {', '.join(unsafe)}, which no model checkpoint needs; refusing to "
            "load it (it could run code). Delete it and fetch a trusted copy: bash download_models.sh")


def _globals_of(path: Path) -> list[str]:
    """Names of the non-tensor globals in a zip checkpoint, read without unpickling."""
    if not zipfile.is_zipfile(path):
        return []
    return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))


def _load_with(path: Path, names: list[str]) -> dict:
    """torch.load in weights-only mode, with the given globals replaced by stand-ins."""
    with torch.serialization.safe_globals([_stand_in(n) for n in names]):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: Path) -> dict:
    """Loads a .ckpt/.pt file as plain data: tensors, containers and inert stand-ins only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found; run: bash download_models.sh")
    try:
        names = _globals_of(path)
        _refuse_unsafe(path, names)
        for _ in range(32):  # legacy (non-zip) files reveal their globals one at a time
            try:
                data = _load_with(path, names)
                break
            except pickle.UnpicklingError as err:
                found = _UNSUPPORTED_GLOBAL.search(str(err))
                if not found or found.group(1) in names:
                    raise
                names.append(found.group(1))
                _refuse_unsafe(path, names)
        else:
            raise CheckpointError(f"{path} names too many unknown globals; fetch a trusted copy")
    except CheckpointError:
        raise
    except Exception as err:  # truncated zip, bad magic number, short read, ...
        text = str(err).partition("WeightsUnpickler error:")[2] or str(err)  # not torch's advice
        reason = (text.strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path} is corrupt or truncated ({reason[:160]}); delete it and "
                              "run: bash download_models.sh") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a checkpoint dictionary")
    return data


def state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: its 'state_dict' entry, or the file itself when flat."""
    data = load_checkpoint(path)
    state = data.get("state_dict", data)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no weights; delete it and run: bash download_models.sh")
    return tensors
