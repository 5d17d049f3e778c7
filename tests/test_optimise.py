"""The optimisation step: optimisers, start pictures, motion, and state for resuming."""

import pytest
import torch

from music2video.engine import optimise
from music2video.engine.guidance import MakeCutouts, Perceptor, Target
from music2video.models import networks
from music2video.options import OPTIMISERS


@pytest.fixture(scope="module")
def nets(tiny_models):
    """Tiny VQGAN and CLIP with 4 cut-outs."""
    vqgan = networks.load_vqgan(tiny_models["vqgan_config"], tiny_models["vqgan_checkpoint"])
    clip_model = networks.load_clip(tiny_models["clip"])
    return vqgan, Perceptor(clip_model, MakeCutouts(32, 4))


def goal() -> list:
    """One fixed target."""
    return [(Target(torch.linspace(-1, 1, 512).view(1, 512)), 1.0)]


@pytest.mark.parametrize("name", OPTIMISERS)
def test_every_optimiser_moves_the_latent_within_the_codebook_range(nets, name):
    vqgan, perceptor = nets
    torch.manual_seed(0)
    z0 = optimise.random_latent(vqgan, 64, 64, torch.Generator().manual_seed(0))
    opt = optimise.Optimiser(vqgan, perceptor, z0, name, lr=0.1)
    for i in range(2):
        result = opt.step(goal(), i)
    assert result.image.shape == (1, 3, 64, 64)
    assert torch.isfinite(result.loss)
    assert not torch.equal(opt.z, z0)
    assert (opt.z >= opt.z_min - 1e-6).all() and (opt.z <= opt.z_max + 1e-6).all()


def test_state_round_trip_continues_identically(nets):
    vqgan, perceptor = nets
    z0 = optimise.random_latent(vqgan, 64, 64, torch.Generator().manual_seed(1))
    a = optimise.Optimiser(vqgan, perceptor, z0)
    torch.manual_seed(3)
    a.step(goal(), 0)
    saved = a.state_dict()
    torch.manual_seed(4)
    expected = a.step(goal(), 1).loss
    b = optimise.Optimiser(vqgan, perceptor, torch.zeros_like(z0))
    b.load_state_dict(saved)
    torch.manual_seed(4)
    assert torch.equal(b.step(goal(), 1).loss, expected)
    assert torch.equal(a.z, b.z)


def test_init_weight_adds_a_fading_pull(nets):
    vqgan, perceptor = nets
    z0 = optimise.random_latent(vqgan, 64, 64, torch.Generator().manual_seed(2))
    losses = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(5)
        opt = optimise.Optimiser(vqgan, perceptor, z0, init_weight=weight)
        losses[weight] = opt.step(goal(), 0).loss.item()
    assert losses[1.0] == pytest.approx(losses[0.0] + (z0 ** 2).mean().item() / 2, rel=1e-4)


def test_noise_images_are_seeded_and_in_range():
    for kind in ("pixels", "gradient"):
        a = optimise.noise_image(kind, 24, 16, torch.Generator().manual_seed(1))
        b = optimise.noise_image(kind, 24, 16, torch.Generator().manual_seed(1))
        assert a.shape == (1, 3, 16, 24) and torch.equal(a, b)
        assert a.min() >= 0 and a.max() <= 1
    gradient = optimise.noise_image("gradient", 24, 16, torch.Generator().manual_seed(1))
    assert (gradient[0, 0, :, 1:] >= gradient[0, 0, :, :-1]).all()  # red rises left to right


def test_zoom_shift_moves_the_picture():
    image = torch.zeros(1, 3, 8, 8)
    image[..., 0, 0] = 1
    shifted = optimise.zoom_shift(image, 1.0, 2, 1)
    assert shifted[0, 0, 1, 2] == 1 and shifted.sum() == image.sum()
    zoomed_out = optimise.zoom_shift(torch.ones(1, 3, 16, 16), 0.5, 0, 0)
    assert zoomed_out[0, 0, 0, 0] == 0 and zoomed_out[0, 0, 8, 8] > 0.9


def test_to_frame_is_uint8_hwc():
    frame = optimise.to_frame(torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 4))
    assert frame.dtype == torch.uint8 and frame.shape == (2, 4, 3)
    assert frame[0, 0].tolist() == [0, 128, 255]


def test_encode_and_init_image(nets, tmp_path):
    from PIL import Image

    vqgan, _ = nets
    Image.new("RGB", (30, 20), (10, 200, 30)).save(tmp_path / "p.png")
    image = optimise.load_image(tmp_path / "p.png", 64, 48)
    assert image.shape == (1, 3, 48, 64)
    assert vqgan.encode(image).shape == (1, 16, 12, 16)
