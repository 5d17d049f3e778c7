"""Tests for music2video.checkpoint: Lightning pickles load as data; code in a pickle never runs."""

import builtins
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from music2video.checkpoint import CheckpointError, _Inert, load_checkpoint, state_dict_of

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
    written as commands.Popen, and torch reports builtins.exec of a legacy file as plain exec."""
    return {
        "os.system": (Payload(os.system, f"touch '{marker}'"), r"refers to posix\.system"),
        "builtins.exec": (Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
                          r"refers to (builtins\.)?exec\b"),
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
    import argparse
    import collections
    import pathlib

    hparams = argparse.Namespace(base=pathlib.PurePosixPath("configs/x.yaml"),
                                 extra=collections.OrderedDict(a=1))
    path = tmp_path / "hp.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": hparams}, path,
               _use_new_zipfile_serialization=zipped)
    data = load_checkpoint(path)
    assert torch.equal(data["state_dict"]["w"], torch.ones(2))
    assert isinstance(data["hyper_parameters"], _Inert)
