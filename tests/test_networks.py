"""Tests for music2video.models.networks: the three loaders on tiny models, their errors, device choice."""

import os
import urllib.request
import warnings
import zipfile
from collections import OrderedDict

import clip
import numpy as np
import pytest
import torch
import torchvision  # noqa: F401  (registers torch.ops.image.write_file, used by a hostile archive)

from music2video.models import networks, weights
from music2video.models.checkpoint import state_dict_of
from music2video.models.networks import ModelError
from music2video.testing import tiny

FIX = "bash download_models.sh"


@pytest.fixture(scope="module")
def gumbel_files(tmp_path_factory):
    """A tiny GumbelVQ yaml + ckpt."""
    return tiny.write_vqgan(tmp_path_factory.mktemp("gumbel"), gumbel=True, name="g")


@pytest.fixture(scope="module")
def tiny_clip(tiny_models):
    """The tiny CLIP, loaded once."""
    return networks.load_clip(tiny_models["clip"])


def vqgan_files(tiny_models, gumbel_files, gumbel):
    """(yaml, ckpt) of the tiny VQModel or GumbelVQ."""
    if gumbel:
        return gumbel_files
    return tiny_models["vqgan_config"], tiny_models["vqgan_checkpoint"]


# VQGAN

@pytest.mark.parametrize("gumbel", [False, True], ids=["vqmodel", "gumbel"])
def test_load_vqgan_frozen_and_differentiable(tiny_models, gumbel_files, gumbel):
    model = networks.load_vqgan(*vqgan_files(tiny_models, gumbel_files, gumbel))
    assert model.gumbel is gumbel
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    assert model.factor == 4 and model.codebook.shape == (64, 16)

    z = torch.randn(1, 16, 16, 16, requires_grad=True)  # (B, e, H/f, W/f)
    image = model.synth(z)
    assert image.shape == (1, 3, 64, 64)
    assert image.min() >= 0 and image.max() <= 1 and image.std() > 0
    image.mean().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0

    latent = model.encode(torch.rand(1, 3, 64, 64))
    assert latent.shape == (1, 16, 16, 16)
    codes = latent.movedim(1, 3).reshape(-1, 16)  # every cell is a codebook row
    assert (codes[:, None] == model.codebook[None]).all(dim=2).any(dim=1).all()
    assert model.synth(latent).shape == (1, 3, 64, 64)


def test_load_vqgan_weights_come_from_the_ckpt(tiny_models):
    model = networks.load_vqgan(tiny_models["vqgan_config"], tiny_models["vqgan_checkpoint"])
    state = state_dict_of(tiny_models["vqgan_checkpoint"])
    assert torch.equal(model.decoder.conv_out.weight, state["decoder.conv_out.weight"])
    assert torch.equal(model.codebook, state["quantize.embedding.weight"])


def test_load_vqgan_never_builds_the_loss(tiny_models, gumbel_files, monkeypatch):
    from taming.modules.losses import vqperceptual

    def refuse(*args, **kwargs):
        raise AssertionError("the training loss (and its VGG download) was built")

    monkeypatch.setattr(vqperceptual.VQLPIPSWithDiscriminator, "__init__", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    for yaml, ckpt in (vqgan_files(tiny_models, gumbel_files, False), gumbel_files):
        assert networks.load_vqgan(yaml, ckpt).synth(torch.zeros(1, 16, 4, 4)).shape == (1, 3, 16, 16)


def edited_ckpt(tiny_models, path, edit):
    """A Lightning checkpoint of the tiny VQGAN with its state dict changed by edit(state)."""
    state = OrderedDict(state_dict_of(tiny_models["vqgan_checkpoint"]))
    edit(state)
    tiny.lightning_save(tiny.lightning_checkpoint(state), path)
    return path


@pytest.mark.parametrize("edit, problem", [
    (lambda s: s.pop("decoder.conv_out.bias"), "missing decoder.conv_out.bias"),
    (lambda s: s.update({"decoder.extra.weight": torch.zeros(3)}),
     "unexpected decoder.extra.weight"),
    (lambda s: s.update({"quant_conv.weight": torch.zeros(8, 16, 1, 1)}),
     "wrong shape quant_conv.weight"),
], ids=["missing", "unexpected", "shape"])
def test_ckpt_that_does_not_fit_its_config(tiny_models, tmp_path, edit, problem):
    ckpt = edited_ckpt(tiny_models, tmp_path / "bad.ckpt", edit)
    with pytest.raises(ModelError) as err:
        networks.load_vqgan(tiny_models["vqgan_config"], ckpt)
    message = str(err.value)
    assert message.startswith(f"{ckpt} does not match its config")
    assert problem in message and FIX in message


def test_extra_loss_keys_are_fine(tiny_models, tmp_path):
    ckpt = edited_ckpt(tiny_models, tmp_path / "more_loss.ckpt",
                       lambda s: s.update({"loss.perceptual_loss.lin0.weight": torch.zeros(2)}))
    assert networks.load_vqgan(tiny_models["vqgan_config"], ckpt).factor == 4


def test_gumbel_ckpt_with_vqmodel_config(tiny_models, gumbel_files):
    with pytest.raises(ModelError, match="missing quantize.embedding.weight") as err:
        networks.load_vqgan(tiny_models["vqgan_config"], gumbel_files[1])
    assert str(gumbel_files[1]) in str(err.value)
    assert "unexpected" in str(err.value)


def test_unsupported_target(tiny_models, tmp_path):
    yaml = tmp_path / "transformer.yaml"
    text = tiny_models["vqgan_config"].read_text()
    transformer = "taming.models.cond_transformer.Net2NetTransformer"
    yaml.write_text(text.replace(networks.VQMODEL, transformer))
    with pytest.raises(ModelError) as err:
        networks.load_vqgan(yaml, tiny_models["vqgan_checkpoint"])
    message = str(err.value)
    assert str(yaml) in message and "Net2NetTransformer is not supported" in message


@pytest.mark.parametrize("text", ["model:\n  target: x\n", "[unclosed", "foo: 1\n"],
                         ids=["no-params", "bad-yaml", "no-model"])
def test_not_a_vqgan_config(tmp_path, text):
    yaml = tmp_path / "bad.yaml"
    yaml.write_text(text)
    with pytest.raises(ModelError, match="is not a taming VQGAN config") as err:
        networks.read_vqgan_config(yaml)
    assert str(yaml) in str(err.value) and FIX in str(err.value)


HTML_404 = ("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
            "<body><h1>Not Found</h1>\n<p>The file: model.yaml</p></body></html>\n")


@pytest.mark.parametrize("text, reason", [
    (HTML_404, "not YAML: mapping values are not allowed in this context at line 4, column 12"),
    ("[unclosed", "not YAML: did not find expected ',' or ']' at line 2, column 1"),
    ("model:\n\ttarget: x\n", "not YAML: found character that cannot start any token at line 2"),
    ("a: 1\na: 2\n", "not YAML: found duplicate key a at line 2, column 1"),
    ("\x00\x01 garbage", "not YAML: unacceptable character #x0000"),
    ("- a\n- b\n", "no model.params mapping"),
    ("model: 3\n", "no model.params mapping"),
    ("model:\n  target: x\n  params: [1]\n", "no model.params mapping"),
    ("model:\n  params: {ddconfig: {ch_mult: [1]}, n_embed: 4}\n", "model.params has no embed_dim"),
    ("model:\n  params: {ddconfig: 7, n_embed: 4, embed_dim: 4}\n",
     "model.params.ddconfig has no ch_mult list"),
], ids=["html", "unclosed", "tab", "duplicate", "binary", "list", "scalar", "params-list",
        "no-embed-dim", "ddconfig-scalar"])
def test_bad_vqgan_config_is_one_line(tmp_path, text, reason):
    yaml = tmp_path / "bad.yaml"
    yaml.write_text(text)
    with pytest.raises(ModelError) as err:
        networks.read_vqgan_config(yaml)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{yaml} is not a taming VQGAN config ({reason}")
    assert message.endswith(f"or delete it and run: {FIX}")


def test_config_that_builds_no_vqgan_is_one_line(tiny_models, tmp_path):
    yaml = tmp_path / "odd.yaml"
    yaml.write_text(tiny_models["vqgan_config"].read_text().replace("num_res_blocks: 1",
                                                                     "num_res_blocks: many"))
    with pytest.raises(ModelError) as err:
        networks.load_vqgan(yaml, tiny_models["vqgan_checkpoint"])
    message = str(err.value)
    assert message.startswith(
        f"{yaml} is not a taming VQGAN config (its ddconfig builds no VQGAN: ")
    assert "\n" not in message


def test_missing_vqgan_files(tiny_models, tmp_path):
    with pytest.raises(ModelError) as err:
        networks.load_vqgan(tmp_path / "none.yaml", tiny_models["vqgan_checkpoint"])
    assert str(err.value) == f"{tmp_path / 'none.yaml'} not found; run: {FIX}"
    with pytest.raises(ModelError) as err:
        networks.load_vqgan(tiny_models["vqgan_config"], tmp_path / "none.ckpt")
    assert str(err.value) == f"{tmp_path / 'none.ckpt'} not found; run: {FIX}"


# CLIP

def test_load_clip_torchscript(tiny_clip):
    assert isinstance(tiny_clip, clip.model.CLIP)  # the hackable model, not the TorchScript one
    assert {p.dtype for p in tiny_clip.parameters()} == {torch.float32}
    assert not tiny_clip.training and not any(p.requires_grad for p in tiny_clip.parameters())
    assert tiny_clip.visual.input_resolution == 32
    text = tiny_clip.encode_text(clip.tokenize(["a red apple", "the sea at night"]))
    assert text.shape == (2, 512) and text.dtype == torch.float32
    assert not torch.allclose(text[0], text[1])
    assert tiny_clip.encode_image(torch.rand(3, 3, 32, 32)).shape == (3, 512)


def test_load_clip_state_dict_file(tiny_clip, tmp_path):
    path = tmp_path / "clip_state.pt"
    torch.save(tiny_clip.state_dict(), path)
    model = networks.load_clip(path)
    assert model.visual.input_resolution == 32
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    tokens = clip.tokenize(["a cat"])
    same = torch.cosine_similarity(model.encode_text(tokens), tiny_clip.encode_text(tokens))
    assert same.item() > 0.999  # equal up to CLIP's float16 round trip in build_model


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty"])
def test_load_clip_bad_file(tiny_models, tmp_path, kind):
    whole = tiny_models["clip"].read_bytes()
    content = {"truncated": whole[:len(whole) // 2], "garbage": b"not a model " * 100,
               "empty": b""}[kind]
    path = tmp_path / "clip.pt"
    path.write_bytes(content)
    with pytest.raises(ModelError) as err:
        networks.load_clip(path)
    message = str(err.value)
    assert message.startswith(f"{path} is corrupt or truncated (")
    assert FIX in message and "\n" not in message


def test_load_clip_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found; run: bash download_models.sh"):
        networks.load_clip(tmp_path / "ViT-B-32.pt")


def test_clip_path_unknown_name(tmp_path):
    with pytest.raises(ModelError) as err:
        weights.clip_path("ViT-Z/99", tmp_path)
    message = str(err.value)
    assert message.startswith("Model ViT-Z/99 not found; available models = ")
    assert all(name in message for name in clip.available_models())
    assert list(tmp_path.iterdir()) == []


def test_clip_path_of_an_existing_file(tiny_models, tmp_path):
    assert weights.clip_path(str(tiny_models["clip"]), tmp_path) == tiny_models["clip"]
    assert list(tmp_path.iterdir()) == []


class Payload:
    """Pickles as a call to os.system(command): a booby-trapped weights file."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_clip_payload_never_runs_with_force_no_weights_only(tmp_path, monkeypatch, zipped):
    # People set this variable to load old checkpoints. clip.load's torch.load fallback honours
    # it; the project's loader passes weights_only=True explicitly, which the variable cannot undo.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    path = tmp_path / "clip.pt"
    torch.save({"visual.proj": torch.zeros(2), "x": Payload(f"touch '{marker}'")}, path,
               _use_new_zipfile_serialization=zipped)
    with pytest.raises(ModelError) as err:
        networks.load_clip(path)
    message = str(err.value)
    assert message.startswith(f"{path} refers to posix.system") and "\n" not in message
    assert not marker.exists()


class SetstateWritesAFile(torch.nn.Module):
    """A module whose TorchScript __setstate__ writes a file: it runs inside torch.jit.load."""

    def __init__(self):
        super().__init__()
        self.flag = 1

    def forward(self, x):
        return x

    @torch.jit.export
    def __getstate__(self):
        return (self.flag, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[int, bool]):
        self.flag = state[0]
        self.training = state[1]
        torch.ops.image.write_file("MARKER", torch.tensor([111, 107], dtype=torch.uint8))


@pytest.fixture(scope="module")
def setstate_archive(tmp_path_factory):
    """A TorchScript archive that writes a marker file when torch.jit.load loads it."""
    folder = tmp_path_factory.mktemp("setstate")
    marker = folder / "pwned"
    path = folder / "clip.pt"
    torch.jit.script(SetstateWritesAFile()).save(str(path))
    # the marker's path goes into the archive's TorchScript source, a stored zip record
    with zipfile.ZipFile(path) as src:
        records = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w") as dst:
        for info, data in records:
            dst.writestr(info, data.replace(b"MARKER", str(marker).encode()))
    return path, marker


def test_torchscript_code_runs_under_jit_load(setstate_archive):
    """The control: torch.jit.load runs the archive's __setstate__, which writes a file."""
    path, marker = setstate_archive
    torch.jit.load(str(path), map_location="cpu")
    assert marker.read_bytes() == b"ok"
    marker.unlink()


def test_load_clip_never_runs_torchscript_code(setstate_archive):
    path, marker = setstate_archive
    marker.unlink(missing_ok=True)
    with pytest.raises(ModelError) as err:
        networks.load_clip(path)
    assert str(err.value) == f"{path} holds no weights; delete it and run: {FIX}"
    assert not marker.exists()


def test_load_clip_takes_the_archive_weights(tiny_models, tiny_clip):
    scripted = torch.jit.load(str(tiny_models["clip"]), map_location="cpu").state_dict()
    ours = tiny_clip.state_dict()
    assert set(ours) <= set(scripted)
    for key in ours:  # build_model rounds some layers through float16, as clip.load does
        assert (torch.equal(ours[key], scripted[key])
                or torch.equal(ours[key], scripted[key].half().float())), key


def test_load_clip_of_another_network(tiny_models):
    with pytest.raises(ModelError) as err:
        networks.load_clip(tiny_models["wav2clip"])
    message = str(err.value)
    assert message.startswith(f"{tiny_models['wav2clip']} is not a CLIP checkpoint (KeyError: ")
    assert FIX in message and "\n" not in message


# Wav2CLIP

def test_load_wav2clip_offline(tiny_models, monkeypatch):
    def offline(*args, **kwargs):
        raise AssertionError("load_wav2clip went to the network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    model = networks.load_wav2clip(tiny_models["wav2clip"])
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())

    noise = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1  # 1 s, 16 kHz
    embed = networks.embed_audio(model, noise)
    assert embed.shape == (1, 512) and embed.dtype == torch.float32
    assert torch.isfinite(embed).all() and embed.abs().sum() > 0
    again = networks.embed_audio(model, noise.astype(np.float64))  # float64 input is converted
    assert torch.allclose(embed, again)


def test_load_wav2clip_weights_come_from_the_file(tiny_models):
    model = networks.load_wav2clip(tiny_models["wav2clip"])
    state = torch.load(tiny_models["wav2clip"])
    assert torch.equal(model.encoder.conv1.weight, state["audio_encoder.conv1.weight"])


def test_wav2clip_file_without_audio_encoder(tiny_models, tmp_path):
    state = torch.load(tiny_models["wav2clip"])
    path = tmp_path / "Wav2CLIP.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("audio_encoder.")}, path)
    with pytest.raises(ModelError) as err:
        networks.load_wav2clip(path)
    assert str(err.value).startswith(f"{path} is not a Wav2CLIP checkpoint")
    assert FIX in str(err.value)


def test_wav2clip_file_without_transform(tiny_models, tmp_path):
    state = torch.load(tiny_models["wav2clip"])
    path = tmp_path / "Wav2CLIP.pt"
    torch.save({k: v for k, v in state.items() if k.startswith("audio_encoder.")}, path)
    with pytest.raises(ModelError) as err:
        networks.load_wav2clip(path)
    assert str(err.value).startswith(f"{path} does not fit Wav2CLIP")


def test_wav2clip_given_a_vqgan_ckpt(tiny_models):
    with pytest.raises(ModelError, match="is not a Wav2CLIP checkpoint"):
        networks.load_wav2clip(tiny_models["vqgan_checkpoint"])


# Device selection

@pytest.fixture
def machine(monkeypatch):
    """Pretends the machine has `gpus` CUDA devices and, optionally, Apple MPS."""

    def make(gpus=0, mps=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return make


def no_warnings(func, *args, **kwargs):
    """Calls func, failing on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return func(*args, **kwargs)


def test_cpu_fallback_warns(machine):
    machine(gpus=0)
    with pytest.warns(UserWarning, match="no GPU found; running on the CPU"):
        assert networks.pick_device() == torch.device("cpu")


def test_first_gpu_by_default(machine):
    machine(gpus=2)
    assert no_warnings(networks.pick_device) == torch.device("cuda", 0)


def test_gpu_id(machine):
    machine(gpus=2)
    assert no_warnings(networks.pick_device, gpu_id=1) == torch.device("cuda", 1)


def test_gpu_id_out_of_range_warns(machine):
    machine(gpus=1)
    with pytest.warns(UserWarning, match="GPU 2 not found"):
        assert networks.pick_device(gpu_id=2) == torch.device("cuda", 0)


def test_cuda_device_cpu(machine):
    machine(gpus=1)
    assert no_warnings(networks.pick_device, cuda_device="cpu") == torch.device("cpu")


def test_cuda_device_named(machine):
    machine(gpus=2)
    device = no_warnings(networks.pick_device, cuda_device="cuda:1", gpu_id=0)
    assert device == torch.device("cuda", 1)


def test_cuda_device_out_of_range(machine):
    machine(gpus=1)
    with pytest.raises(ModelError, match="has 1 GPU") as err:
        networks.pick_device(cuda_device="cuda:3")
    assert "-cd cuda:3" in str(err.value)


def test_cuda_device_without_cuda(machine):
    machine(gpus=0)
    with pytest.raises(ModelError, match="no CUDA GPU is visible; use -cd cpu"):
        networks.pick_device(cuda_device="cuda:0")


def test_mps_when_no_cuda(machine):
    machine(gpus=0, mps=True)
    assert no_warnings(networks.pick_device) == torch.device("mps")


def test_cuda_before_mps(machine):
    machine(gpus=1, mps=True)
    assert no_warnings(networks.pick_device) == torch.device("cuda", 0)


@pytest.mark.parametrize("name", ["bogus", "meta", "cuda:x", "cuda:-1", "mps:1", "cpu:3", "xla",
                                  "CUDA", " "])
def test_cuda_device_that_is_not_a_device(machine, name):
    machine(gpus=2, mps=True)
    with pytest.raises(ModelError) as err:
        networks.pick_device(cuda_device=name)
    assert str(err.value) == f"-cd {name} is not a device; use cpu, cuda, cuda:N or mps"


@pytest.mark.parametrize("name, device", [("cuda", torch.device("cuda")),
                                          ("cpu:0", torch.device("cpu", 0)),
                                          ("mps", torch.device("mps"))])
def test_cuda_device_plain_names(machine, name, device):
    machine(gpus=1, mps=True)
    assert no_warnings(networks.pick_device, cuda_device=name) == device
