"""Tests for music2video.tiny: the tiny models are real-format files the real loaders accept."""

import subprocess
import sys
import zipfile
from pathlib import Path

import clip
import numpy as np
import pytest
import torch

from music2video.engine import guidance
from music2video.models import networks
from music2video.models.checkpoint import state_dict_of
from music2video.testing import tiny

NAMES = ["vqgan.yaml", "vqgan.ckpt", "clip.pt", "wav2clip.pt"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The folder `python -m music2video.tiny DIR` wrote, and what the command printed."""
    directory = tmp_path_factory.mktemp("cli") / "models"
    done = subprocess.run([sys.executable, "-m", "music2video.tiny", str(directory)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return directory, done.stdout


@pytest.fixture(scope="module")
def tiny_clip(tiny_models):
    """The session's tiny CLIP, loaded once."""
    return networks.load_clip(tiny_models["clip"])


def test_command_writes_the_four_files(written):
    directory, stdout = written
    assert sorted(p.name for p in directory.iterdir()) == sorted(NAMES)
    assert stdout.splitlines() == [str(directory / name) for name in NAMES]


def test_each_file_loads_through_the_cli_loaders(written):
    directory, _ = written
    vqgan = networks.load_vqgan(directory / "vqgan.yaml", directory / "vqgan.ckpt")
    assert vqgan.synth(torch.zeros(1, 16, 8, 8)).shape == (1, 3, 32, 32)
    perceptor = networks.load_clip(directory / "clip.pt")
    assert perceptor.encode_text(clip.tokenize(["x"])).shape == (1, 512)
    wav2clip = networks.load_wav2clip(directory / "wav2clip.pt")
    assert networks.embed_audio(wav2clip, np.zeros(16000, np.float32)).shape == (1, 512)


def test_ckpt_is_a_lightning_style_zip(written):
    ckpt = written[0] / "vqgan.ckpt"
    assert zipfile.is_zipfile(ckpt)
    with zipfile.ZipFile(ckpt) as archive:
        data_pkl, = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        assert b"c" + tiny.LIGHTNING_CALLBACK in archive.read(data_pkl)  # a GLOBAL opcode
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)) == [
        "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"]
    with pytest.raises(Exception, match="Weights only load failed"):  # like the real files
        torch.load(ckpt, weights_only=True)


def test_clip_is_torchscript(written):
    assert isinstance(torch.jit.load(str(written[0] / "clip.pt")), torch.jit.ScriptModule)


def test_same_seed_same_weights(written, tiny_models):
    """The command and the test fixture both use seed 0, so they write the same tensors."""
    for name, key in (("vqgan.ckpt", "vqgan_checkpoint"), ("wav2clip.pt", "wav2clip")):
        ours, theirs = state_dict_of(written[0] / name), state_dict_of(tiny_models[key])
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_one_optimisation_step(tiny_models, tiny_clip):
    """vqgan.synth -> cut-outs -> CLIP -> loss -> backward, at 64x64 on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        vqgan = networks.load_vqgan(tiny_models["vqgan_config"], tiny_models["vqgan_checkpoint"])
        perceptor = guidance.Perceptor(tiny_clip, guidance.MakeCutouts(32, 8))
        target = perceptor.text_target("a lighthouse in a storm")
        z = torch.randn(1, 16, 16, 16, requires_grad=True)  # (1, e, 64/f, 64/f)
        image = vqgan.synth(z)  # (1, 3, 64, 64)
        embeds = perceptor.encode_views(image)  # (8, 512)
        loss = guidance.spherical_loss(embeds, target)
        loss.backward()
    finally:
        torch.set_num_threads(threads)
    assert image.shape == (1, 3, 64, 64) and embeds.shape == (8, 512)
    assert torch.isfinite(loss) and loss.item() > 0
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_clip_and_wav2clip_share_the_embedding_width(tiny_models, tiny_clip):
    width = tiny_clip.text_projection.shape[1]
    wav2clip = networks.load_wav2clip(tiny_models["wav2clip"])
    assert width == tiny.EMBED_DIM == 512
    assert networks.embed_audio(wav2clip, np.zeros(16000, np.float32)).shape[1] == width


def test_full_size_config_is_the_benchs_architecture(tmp_path):
    """The yaml write_full_size writes for VQGAN f16-16384 reads back as that architecture (the
    1 GB checkpoint itself is written only by the GPU report)."""
    from omegaconf import OmegaConf

    from tools import bench

    path = tmp_path / "vqgan.yaml"
    OmegaConf.save(OmegaConf.create(tiny.taming_config(bench.VQGAN_F16_16384)), path)
    target, params = networks.read_vqgan_config(path)
    assert target == networks.VQMODEL and networks.cell_size(params) == 16
    assert {k: params[k] for k in bench.VQGAN_F16_16384} == bench.VQGAN_F16_16384
    assert params["lossconfig"]["target"].endswith("VQLPIPSWithDiscriminator")  # as real files


def test_write_full_size_takes_any_architecture(tmp_path):
    """The full-size writer, given small architectures: the loaders accept every file, CLIP is
    built as asked and its archive holds fp16 weights, as OpenAI's do."""
    from tools import bench

    files = tiny.write_full_size(tmp_path, tiny.vqgan_config()["model"]["params"],
                                 bench.CLIP_ARCHS["tiny"])
    assert sorted(files) == ["clip", "vqgan_checkpoint", "vqgan_config", "wav2clip"]
    vqgan = networks.load_vqgan(files["vqgan_config"], files["vqgan_checkpoint"])
    assert vqgan.factor == 4
    clip_model = networks.load_clip(files["clip"])
    assert clip_model.visual.input_resolution == bench.CLIP_ARCHS["tiny"][1]
    assert next(clip_model.parameters()).dtype == torch.float32  # load_clip's .float()
    assert state_dict_of(files["clip"])["visual.conv1.weight"].dtype == torch.float16
    networks.load_wav2clip(files["wav2clip"])
