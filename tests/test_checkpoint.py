"""Tests for music2video.models.checkpoint: Lightning pickles load as data; code in a pickle never runs."""

import argparse
import builtins
import collections
import os
import pathlib
import pickle
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest
import torch

from music2video.models.checkpoint import (
    CheckpointError,
    _Inert,
    load_checkpoint,
    safe_load,
    state_dict_of,
)

FIX = "bash download_models.sh"
LIGHTNING = ("pytorch_lightning", "pytorch_lightning.callbacks",
             "pytorch_lightning.callbacks.model_checkpoint")


class Payload:
    """Pickles as a call to `func(*args)`: what a booby-trapped checkpoint carries."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker):
    """Three ways to run code from a pickle, each creating `marker`, with the name it goes by.

    torch.save pickles with protocol 2, so Python-2 names can appear: subprocess.Popen is
    written as commands.Popen. builtins.exec keeps its module in zip and legacy files alike."""
    return {
        "os.system": (Payload(os.system, f"touch '{marker}'"), r"refers to posix\.system"),
        "builtins.exec": (Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
                          r"refers to builtins\.exec\b"),
        "subprocess.Popen": (Payload(subprocess.Popen, ["touch", str(marker)]),
                             r"refers to (subprocess|commands)\.Popen"),
    }


def save(obj, path, zipped=True):
    """torch.save in the zip format (torch >= 1.6) or the legacy one."""
    torch.save(obj, path, _use_new_zipfile_serialization=zipped)
    return path


def test_tiny_lightning_checkpoint_loads_as_data(tiny_models, monkeypatch):
    for name in LIGHTNING:  # nothing from Lightning may be imported, let alone run
        monkeypatch.setitem(sys.modules, name, None)
    data = load_checkpoint(tiny_models["vqgan_checkpoint"])

    state = data["state_dict"]
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert {"loss.logvar", "loss.discriminator.main.0.weight"} <= set(state)
    assert "decoder.conv_out.weight" in state
    assert data["global_step"] == 10

    (callback_class, callback), = data["callbacks"].items()
    assert issubclass(callback_class, _Inert)
    assert (callback_class.__module__, callback_class.__qualname__) == (
        "pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint")
    assert callback["monitor"] == "val/rec_loss"
    assert callback["best_model_score"].item() == pytest.approx(0.5)


def test_state_dict_of_keeps_only_tensors(tiny_models):
    state = state_dict_of(tiny_models["vqgan_checkpoint"])
    assert state["loss.logvar"].shape == ()
    assert state["quant_conv.weight"].shape == (16, 16, 1, 1)
    assert set(state) == set(load_checkpoint(tiny_models["vqgan_checkpoint"])["state_dict"])


def test_legacy_checkpoint_with_numpy_globals_loads(tmp_path):
    path = save({"state_dict": {"w": torch.ones(2)}, "score": np.float64(0.5),
                 "arr": np.arange(3)}, tmp_path / "legacy.ckpt", zipped=False)
    data = load_checkpoint(path)  # numpy globals are revealed one by one and stood in for
    assert torch.equal(data["state_dict"]["w"], torch.ones(2))
    assert isinstance(data["score"], _Inert) and isinstance(data["arr"], _Inert)


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "subprocess.Popen"])
def test_code_in_pickle_is_refused_and_never_runs(tmp_path, kind, zipped):
    marker = tmp_path / "pwned"
    payload, names_global = payloads(marker)[kind]
    path = save({"state_dict": {"w": torch.zeros(1)}, "x": payload}, tmp_path / "evil.ckpt", zipped)

    with pytest.raises(CheckpointError, match=names_global) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path} refers to ")
    assert FIX in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "subprocess.Popen"])
def test_payload_is_live_when_loaded_unsafely(tmp_path, kind, zipped):
    """The control: the same pickle does run code under weights_only=False."""
    marker = tmp_path / "pwned"
    path = save({"x": payloads(marker)[kind][0]}, tmp_path / "evil.ckpt", zipped)
    result = torch.load(path, weights_only=False)["x"]
    if isinstance(result, subprocess.Popen):
        assert result.wait(timeout=10) == 0
    assert marker.exists()


def test_code_behind_an_inert_global_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload, names_global = payloads(marker)["builtins.exec"]
    path = save({"score": np.float64(1.0), "x": payload}, tmp_path / "evil.ckpt", zipped=False)
    with pytest.raises(CheckpointError, match=names_global):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_truncated_checkpoint(tmp_path, tiny_models, zipped):
    if zipped:
        whole = tiny_models["vqgan_checkpoint"].read_bytes()
    else:
        whole = save(state_dict_of(tiny_models["vqgan_checkpoint"]), tmp_path / "whole.ckpt",
                     zipped=False).read_bytes()
    path = tmp_path / "half.ckpt"
    path.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "corrupt or truncated" in str(err.value)
    assert str(path) in str(err.value) and FIX in str(err.value)


@pytest.mark.parametrize("content", [b"", b"<html>404 Not Found</html>", bytes(range(256)) * 8],
                         ids=["empty", "html", "binary"])
def test_garbage_is_corrupt_without_torch_weights_only_advice(tmp_path, content):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "corrupt or truncated" in message and str(path) in message
    assert "weights_only" not in message  # torch's "re-run with weights_only=False" is no fix
    assert "\n" not in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value) == f"{path} not found; run: {FIX}"


def test_file_without_tensors(tmp_path):
    path = save({"state_dict": {"epoch": 3, "name": "x"}, "epoch": 3}, tmp_path / "empty.ckpt")
    assert load_checkpoint(path)["epoch"] == 3
    with pytest.raises(CheckpointError, match="holds no weights") as err:
        state_dict_of(path)
    assert str(path) in str(err.value)


def test_file_that_is_not_a_dictionary(tmp_path):
    path = save([torch.zeros(1)], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match="holds a list") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_flat_state_dict_file(tmp_path):
    path = save({"a.weight": torch.ones(3), "note": "x"}, tmp_path / "flat.pt")
    assert list(state_dict_of(path)) == ["a.weight"]


@pytest.mark.parametrize("zipped", [True, False])
def test_hyper_parameters_of_plain_data_load(tmp_path, zipped):
    """Lightning may store hyper-parameters as a Namespace holding paths and ordered dicts."""
    hparams = argparse.Namespace(base=pathlib.PurePosixPath("configs/x.yaml"),
                                 extra=collections.OrderedDict(a=1))
    path = tmp_path / "hp.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": hparams}, path,
               _use_new_zipfile_serialization=zipped)
    data = load_checkpoint(path)
    assert torch.equal(data["state_dict"]["w"], torch.ones(2))
    assert isinstance(data["hyper_parameters"], _Inert)


# Hyper-parameters as Lightning 1.x and 2.x store them

ZIPPED = pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])


def with_hparams(tmp_path, hparams, zipped: bool):
    """A Lightning-style checkpoint whose hyper_parameters entry is hparams."""
    path = tmp_path / "hp.ckpt"
    return save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": hparams}, path, zipped)


@pytest.fixture
def lightning_attribute_dict(monkeypatch):
    """A stand-in for Lightning's AttributeDict (a dict subclass), pickled under its real name.

    The module is importable only while pickling; loading must not need it."""
    names = ["pytorch_lightning", "pytorch_lightning.utilities",
             "pytorch_lightning.utilities.parsing"]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    cls = type("AttributeDict", (dict,), {"__module__": names[-1]})
    sys.modules[names[-1]].AttributeDict = cls
    yield cls
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)  # an import would fail from here on


@ZIPPED
def test_omegaconf_dictconfig_hyper_parameters_load(tmp_path, zipped):
    # A DictConfig pickles typing.Any and builtins types (dict, int, list) besides omegaconf's own.
    from omegaconf import OmegaConf

    config = OmegaConf.create({"lr": 4.5e-6, "ddconfig": {"ch_mult": [1, 2]}, "none": None})
    data = load_checkpoint(with_hparams(tmp_path, config, zipped))
    assert torch.equal(data["state_dict"]["w"], torch.ones(2))
    hparams = data["hyper_parameters"]
    assert isinstance(hparams, _Inert)
    assert type(hparams).__module__ == "omegaconf.dictconfig"


@ZIPPED
def test_attribute_dict_hyper_parameters_load(tmp_path, lightning_attribute_dict, zipped):
    path = with_hparams(tmp_path, lightning_attribute_dict(lr=0.1, name="vqgan"), zipped)
    sys.modules["pytorch_lightning.utilities.parsing"] = None  # the real class is never needed
    hparams = load_checkpoint(path)["hyper_parameters"]
    assert isinstance(hparams, _Inert)
    assert hparams.items == {"lr": 0.1, "name": "vqgan"}  # kept as plain data, nothing run


@ZIPPED
@pytest.mark.parametrize("factory", [list, int], ids=["list", "int"])
def test_non_empty_defaultdict_loads(tmp_path, zipped, factory):
    hparams = collections.defaultdict(factory)
    hparams["a"] = factory()
    data = load_checkpoint(with_hparams(tmp_path, hparams, zipped))
    assert isinstance(data["hyper_parameters"], _Inert)
    assert data["hyper_parameters"].items == {"a": factory()}


@ZIPPED
def test_unsupported_pickle_features_are_named_as_such(tmp_path, zipped):
    path = tmp_path / "protocol4.ckpt"
    torch.save({"w": torch.ones(1), "o": collections.OrderedDict()}, path, pickle_protocol=4,
               _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path} uses a pickle feature that safe loading does not support (")
    assert "corrupt" not in message and "\n" not in message and FIX in message


@ZIPPED
def test_a_list_subclass_is_an_unsupported_feature(tmp_path, monkeypatch, zipped):
    # Lightning-style plain data that weights-only unpickling cannot rebuild (it extends real
    # lists only) is reported as such, not as a corrupt file.
    monkeypatch.setitem(sys.modules, "lightning", types.ModuleType("lightning"))
    cls = type("Tags", (list,), {"__module__": "lightning"})
    sys.modules["lightning"].Tags = cls
    path = with_hparams(tmp_path, cls(["a", "b"]), zipped)
    with pytest.raises(CheckpointError, match="uses a pickle feature that safe loading does not"
                                              r" support \(Can only (append to|extend) lists"):
        load_checkpoint(path)


@ZIPPED
@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "subprocess.Popen"])
def test_payload_never_runs_whatever_the_environment_says(tmp_path, monkeypatch, kind, zipped):
    # People set this to load old checkpoints; it turns weights-only mode off where a caller
    # did not ask for it explicitly.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    payload, names_global = payloads(marker)[kind]
    path = save({"state_dict": {"w": torch.zeros(1)}, "x": payload}, tmp_path / "evil.ckpt", zipped)
    with pytest.raises(CheckpointError, match=names_global):
        load_checkpoint(path)
    assert not marker.exists()


def test_both_torch_switches_set_is_one_line(tmp_path, monkeypatch, tiny_models):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tiny_models["vqgan_checkpoint"])
    message = str(err.value)
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" in message and "corrupt" not in message
    assert "\n" not in message


# TorchScript archives (OpenAI's CLIP files)

def test_torchscript_archive_gives_its_module_tensors(tiny_models):
    path = tiny_models["clip"]
    expected = torch.jit.load(str(path), map_location="cpu").state_dict()
    state = state_dict_of(path)
    assert list(state) == list(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert "visual.conv1.weight" in state and "transformer.resblocks.0.attn.in_proj_weight" in state


def test_torchscript_archive_with_code_in_its_pickle_is_refused(tiny_models, tmp_path):
    """A TorchScript archive whose data.pkl calls os.system is refused like any checkpoint."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil_clip.pt"
    with zipfile.ZipFile(tiny_models["clip"]) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                data = pickle_dumps(Payload(os.system, f"touch '{marker}'"))
            dst.writestr(info, data)
    with pytest.raises(CheckpointError, match=r"refers to posix\.system"):
        state_dict_of(evil)
    assert not marker.exists()


def pickle_dumps(obj) -> bytes:
    """obj pickled with protocol 2, as torch writes its pickles."""
    return pickle.dumps(obj, protocol=2)


# safe_load for other callers (the run folder's state files)

def test_safe_load_of_a_run_state_with_its_own_fix(tmp_path):
    z = torch.randn(1, 4, 2, 2, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.1)
    z.sum().backward()
    opt.step()
    state = {"optimiser": opt.state_dict(), "image": torch.rand(1, 3, 8, 8), "iteration": 7}
    path = save(state, tmp_path / "state_000001.pt")
    loaded = safe_load(path, fix="rerun with --overwrite")
    assert loaded["iteration"] == 7 and torch.equal(loaded["image"], state["image"])
    assert loaded["optimiser"]["param_groups"][0]["lr"] == 0.1

    fix = "rerun with --overwrite to start the video again"
    for content in (b"", b"<html>502</html>", path.read_bytes()[:100]):
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as err:
            safe_load(path, fix=fix)
        assert str(err.value).endswith(f"; {fix}") and "\n" not in str(err.value)
    with pytest.raises(CheckpointError) as err:
        safe_load(tmp_path / "gone.pt", fix=fix)
    assert str(err.value) == f"{tmp_path / 'gone.pt'} not found; {fix}"


def rezip(source, path, bomb_record: str, bomb_bytes: int):
    """`source`'s records, with `bomb_record` holding `bomb_bytes` zero bytes, deflated (a zip
    bomb: a few KB on disk), written a MiB at a time."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
        prefix = old.namelist()[0].partition("/")[0]
        for info in old.infolist():
            if info.filename != f"{prefix}/{bomb_record}":
                new.writestr(info, old.read(info))
        bomb = zipfile.ZipInfo(f"{prefix}/{bomb_record}")
        bomb.compress_type = zipfile.ZIP_DEFLATED
        with new.open(bomb, "w", force_zip64=True) as f:
            for _ in range(bomb_bytes // 2**20):
                f.write(bytes(2**20))
    return path


@pytest.mark.parametrize("record, bounds", [
    ("data.pkl", {"PICKLE_LIMIT": 2**20}),  # the pickle itself
    ("data/999", {"INFLATE_RATIO": 1, "INFLATE_SLACK": 2**20}),  # a record torch would allocate
])
def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path, tiny_models, monkeypatch,
                                                     record, bounds):
    """A record that inflates far past what a checkpoint of its size holds (the bounds made
    small here, so the bomb stays small) is refused before it is read or unpickled."""
    from music2video.models import checkpoint

    for name, value in bounds.items():
        monkeypatch.setattr(checkpoint, name, value, raising=False)
    source = tiny_models["vqgan_checkpoint"]
    path = rezip(source, tmp_path / "bomb.ckpt", record, 8 * 2**20)
    assert path.stat().st_size < source.stat().st_size + 2**16
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled a zip bomb"))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and FIX in message
    assert f"is refused unread: record vqgan/{record} inflates to 8 MiB or more" in message
