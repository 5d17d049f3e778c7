"""Loading checkpoints without running code hidden in their pickles, whatever the environment says.

Every file goes through PyTorch's weights-only unpickler with weights_only=True passed
explicitly, which TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot override. TorchScript archives (OpenAI's
CLIP files) are read the same way: only their tensors are taken, and none of their TorchScript
code is compiled or run."""

import _compat_pickle
import io
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError

DOWNLOAD_FIX = "delete it and run: bash download_models.sh"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a pre-zip torch.save file
LEGACY_HEADER_PICKLES = 3  # magic number, protocol version, system info; then the object
# Lightning checkpoints store callbacks keyed by their class, hyper-parameters (an OmegaConf
# DictConfig, an AttributeDict, a Namespace, defaultdicts, paths, numpy scalars) and the like.
# Globals of these packages, and these builtin types, are replaced by inert stand-ins: nothing
# they name is imported or run while loading. Any other name (os.system, builtins.exec, ...)
# is refused before the file is unpickled.
PLAIN_DATA_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.",
                       "taming.", "numpy.", "collections.", "pathlib.", "datetime.", "typing.",
                       "argparse.Namespace", "copyreg._reconstructor")
PLAIN_BUILTINS = frozenset(f"builtins.{name}" for name in (
    "object", "dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int",
    "float", "complex", "bool", "slice", "range"))
TORCHSCRIPT_PREFIX = "__torch__."  # the classes of a TorchScript archive's modules
# Names torch's unpickler resolves itself: it allows its own rebuild functions and types and
# refuses any other, so these are left to it.
TORCH_OWNED = ("torch.", "_codecs.encode")

# Bounds on what a zip checkpoint's records may inflate to, checked before anything is read: a
# pickle holds the object's structure (a real VQGAN's data.pkl is a few hundred KB; the tensors
# are records of their own), and torch writes every record uncompressed, so all records together
# hold about the file's own size (VQGAN's 980 MB). The slack leaves room for a re-zipped file.
PICKLE_LIMIT = 64 * 2**20
INFLATE_RATIO, INFLATE_SLACK = 4, 64 * 2**20
CHUNK = 2**20

_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_READ_ERRORS = (zipfile.BadZipFile, EOFError, OSError, RuntimeError, MemoryError)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be loaded safely; str() names the file and the fix."""


class _Unsupported(Exception):
    """A pickle opcode the weights-only unpickler cannot run, found while scanning."""


class _TooBig(Exception):
    """A zip record that inflates past what a checkpoint can hold (a zip bomb)."""


class _Inert:
    """Stand-in for a class a checkpoint names: it keeps what the pickle hands it, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.__dict__.setdefault("items", {})[key] = value


def _stand_in(qualified: str) -> type:
    """Builds an inert class that the weights-only unpickler accepts under this name."""
    module, _, name = qualified.rpartition(".")
    return type(name, (_Inert,), {"__module__": module, "__qualname__": name})


def _is_plain_data(name: str, torchscript: bool) -> bool:
    """Whether a global may be replaced by an inert stand-in."""
    if torchscript and name.startswith(TORCHSCRIPT_PREFIX):
        return True
    return name in PLAIN_BUILTINS or name.startswith(PLAIN_DATA_PREFIXES)


def _global_name(arg: str) -> str:
    """A GLOBAL opcode's 'module name' as a dotted name, Python 2 names mapped as pickle does."""
    module, _, name = arg.partition(" ")
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _scan(stream) -> tuple[set[str], list[int]]:
    """The globals one pickle names and the integers in it, read without unpickling anything."""
    names, ints = set(), []
    for opcode, arg, _ in pickletools.genops(stream):
        if opcode.name == "GLOBAL":
            names.add(_global_name(arg))
        elif opcode.name in ("STACK_GLOBAL", "INST", "OBJ"):  # class names the scan cannot see
            raise _Unsupported(f"{opcode.name} opcode, from pickle protocol {opcode.proto}")
        elif isinstance(arg, int) and opcode.name.startswith("LONG"):
            ints.append(arg)
    return names, ints


def _too_big(name: str, size: int, limit: int) -> _TooBig:
    """The error for a record that inflates past its bound (a zip bomb, or not a checkpoint)."""
    return _TooBig(f"record {name} inflates to {size / 2**20:.0f} MiB or more, beyond "
                           f"the {limit / 2**20:.0f} MiB a checkpoint of this size can hold")


def _check_sizes(path: Path, infos: list) -> None:
    """Refuses records whose declared inflated sizes exceed what a checkpoint can hold."""
    limit = INFLATE_RATIO * path.stat().st_size + INFLATE_SLACK
    total = 0
    for info in infos:
        total += info.file_size
        if total > limit:
            raise _too_big(info.filename, info.file_size, limit)


def _read_record(archive: zipfile.ZipFile, info, limit: int) -> bytes:
    """A record's bytes, inflated in chunks and refused as soon as they pass `limit` (whatever
    its header declares)."""
    if info.file_size > limit:
        raise _too_big(info.filename, info.file_size, limit)
    parts, size = [], 0
    with archive.open(info) as record:
        while chunk := record.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise _too_big(info.filename, size, limit)
            parts.append(chunk)
    return b"".join(parts)


def _zip_pickles(path: Path) -> tuple[bool, list[bytes]]:
    """Whether a zip checkpoint is a TorchScript archive, and the pickles that build its object.

    Every record's inflated size is bounded first (torch's reader would allocate what a record
    declares), and each pickle while it is read."""
    with zipfile.ZipFile(path) as archive:
        records = {}
        _check_sizes(path, archive.infolist())
        for info in archive.infolist():
            folder, _, record = info.filename.partition("/")
            records.setdefault(record, []).append(info)
        if "data.pkl" not in records:
            raise CheckpointError("no data.pkl record")
        pickles = [_read_record(archive, info, PICKLE_LIMIT) for info in records["data.pkl"]]
        return "constants.pkl" in records, pickles


def _globals_of(path: Path) -> tuple[str, set[str]]:
    """The file's format ('zip', 'torchscript' or 'legacy') and every global its pickles name."""
    if zipfile.is_zipfile(path):
        torchscript, pickles = _zip_pickles(path)
        names = set().union(*(_scan(io.BytesIO(data))[0] for data in pickles))
        return ("torchscript" if torchscript else "zip"), names
    with open(path, "rb") as file:
        if LEGACY_MAGIC.to_bytes(10, "little") not in file.read(32):  # an HTML page, a cut zip...
            raise CheckpointError("neither a PyTorch zip archive nor a PyTorch pickle")
        file.seek(0)
        if LEGACY_MAGIC not in _scan(file)[1]:
            raise CheckpointError("neither a PyTorch zip archive nor a PyTorch pickle")
        for _ in range(LEGACY_HEADER_PICKLES - 1):
            _scan(file)
        return "legacy", _scan(file)[0]


def _torchscript_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive, as module.state_dict() names them.

    Reads data.pkl with the weights-only unpickler (torch's own zip reader and tensor rebuilding;
    torch.load refuses TorchScript archives in weights-only mode). The modules come back as
    stand-ins holding their attributes; their code is never looked at."""
    from torch import _weights_only_unpickler
    from torch.serialization import _load, _open_zipfile_reader

    with _open_zipfile_reader(str(path)) as reader:
        root = _load(reader, "cpu", _weights_only_unpickler, pickle_file="data.pkl")
    tensors, seen = {}, set()

    def walk(module: Any, prefix: str) -> None:
        state = getattr(module, "state", None)
        if id(module) in seen or not isinstance(state, dict):
            return
        seen.add(id(module))
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[prefix + key] = value
            elif isinstance(value, _Inert):
                walk(value, f"{prefix}{key}.")

    walk(root, "")
    return tensors


def _refusal(path: Path, names, fix: str) -> CheckpointError:
    """The error for a file whose pickle names code."""
    return CheckpointError(
        f"{path} refers to {', '.join(sorted(names))}, which no checkpoint needs and which could "
        f"run code; refusing to load it. {fix[0].upper()}{fix[1:]}")


def _corrupt(path: Path, err: BaseException, fix: str) -> CheckpointError:
    """The error for a file that is not what it should be: cut short, damaged, not torch's."""
    return CheckpointError(f"{path} is corrupt or truncated ({first_line(err)}); {fix}")


def _unsupported(path: Path, err: BaseException, fix: str) -> CheckpointError:
    """The error for a file whose pickle needs more than weights-only unpickling offers."""
    return CheckpointError(f"{path} uses a pickle feature that safe loading does not support "
                           f"({first_line(err)}); {fix}")


def first_line(err: BaseException) -> str:
    """An error's first line (at most 160 characters), without torch's advice to load unsafely."""
    text = str(err).partition("WeightsUnpickler error:")[2] or str(err)
    return ((text.strip().splitlines() or [type(err).__name__])[0])[:160]


def safe_load(path: Path, fix: str = DOWNLOAD_FIX) -> Any:
    """Loads a torch.save file or TorchScript archive as plain data: tensors, containers, stand-ins.

    Globals outside the plain-data list are refused before anything is unpickled; `fix` (what
    the user should do about a bad file) ends every error's one line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found; {fix}")
    try:
        kind, names = _globals_of(path)
    except _Unsupported as err:
        raise _unsupported(path, err, fix) from None
    except _TooBig as err:
        raise CheckpointError(f"{path} is refused unread: {err}; {fix}") from None
    except (CheckpointError, ValueError, *_READ_ERRORS) as err:
        raise _corrupt(path, err, fix) from None
    torchscript = kind == "torchscript"
    code = {n for n in names
            if not n.startswith(TORCH_OWNED) and not _is_plain_data(n, torchscript)}
    if code:
        raise _refusal(path, code, fix)
    stand_ins = [_stand_in(n) for n in sorted(names) if not n.startswith(TORCH_OWNED)]
    try:
        with torch.serialization.safe_globals(stand_ins), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's remarks on odd files; our errors say more
            if torchscript:
                return _torchscript_tensors(path)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _REFUSED_GLOBAL.search(str(err))
        if refused:  # a name torch keeps for itself and refuses; torch drops 'builtins.'
            name = refused.group(1)
            raise _refusal(path, [name if "." in name else f"builtins.{name}"], fix) from None
        raise _unsupported(path, err, fix) from None
    except Exception as err:  # truncated zip, short read, bad storage record, ...
        if "TORCH_FORCE_" in str(err):  # torch loads nothing while both its switches are set
            raise CheckpointError(f"cannot load {path}: {first_line(err)}") from None
        raise _corrupt(path, err, fix) from None


def load_checkpoint(path: Path) -> dict:
    """Loads a .ckpt/.pt model file as plain data (a TorchScript archive: its module tensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found; run: bash download_models.sh")
    data = safe_load(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a checkpoint dictionary; "
                              f"{DOWNLOAD_FIX}")
    return data


def state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: its 'state_dict' entry, or the file itself when flat."""
    data = load_checkpoint(path)
    state = data.get("state_dict", data)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(
        state, dict) else {}
    if not tensors:
        raise CheckpointError(f"{path} holds no weights; {DOWNLOAD_FIX}")
    return tensors
