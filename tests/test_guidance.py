"""Tests for music2video.engine.guidance: prompts, the spherical loss, cut-outs and the CLIP perceptor."""

import math

import pytest
import torch
import torch.nn.functional as F

from music2video.engine.guidance import (
    MakeCutouts,
    Perceptor,
    Target,
    _fixed_augments,
    augment,
    lanczos_taps,
    noise_target,
    resample,
    spherical_loss,
)
from music2video.models import networks
from music2video.models.autograd import clamp_with_grad
from music2video.options import AUGMENTS, CUT_METHODS, DEFAULT_AUGMENTS, parse_prompt, split_prompts

CUT = 32  # the tiny CLIP's input resolution
CUTN = 4
INF = float("inf")


def picture(height: int = 48, width: int = 64, requires_grad: bool = False) -> torch.Tensor:
    """A (1, 3, H, W) picture in [0, 1]: a gradient with a hard-edged checkerboard on top."""
    y = torch.linspace(0, 1, height).view(1, 1, height, 1)
    x = torch.linspace(0, 1, width).view(1, 1, 1, width)
    checks = ((torch.arange(height).view(-1, 1) // 4 + torch.arange(width) // 4) % 2).float()
    image = torch.cat([y.expand(1, 1, height, width), x.expand(1, 1, height, width),
                       checks.view(1, 1, height, width)], dim=1)
    return image.clone().requires_grad_(requires_grad)


# --- parse_prompt and split_prompts -----------------------------------------------------------


@pytest.mark.parametrize("prompt, expected", [
    ("a photo", ("a photo", 1.0, -INF)),
    ("a photo:2", ("a photo", 2.0, -INF)),
    ("a photo:2:0.5", ("a photo", 2.0, 0.5)),
    (" a photo : 2 ", ("a photo", 2.0, -INF)),
    ("a photo:-1", ("a photo", -1.0, -INF)),  # negative weights push away
    ("a photo:-0.5:-2", ("a photo", -0.5, -2.0)),
    ("the sign says: open", ("the sign says: open", 1.0, -INF)),  # a ':' before words is text
    ("the sign says: open:3", ("the sign says: open", 3.0, -INF)),
    ("a:b:c:2", ("a:b:c", 2.0, -INF)),
    ("a photo:2:x", ("a photo:2:x", 1.0, -INF)),  # a non-number at the end keeps it all as text
    # A number after the last ':' is always a weight, as in the seed's parse_prompt: 'ratio 16:9'
    # is the text 'ratio 16' at weight 9, and 'ratio 16:9:1' is weight 9, stop 1. Spelling out
    # both fields keeps the colon: 'ratio 16:9:1:-inf' is 'ratio 16:9' at weight 1.
    ("ratio 16:9", ("ratio 16", 9.0, -INF)),
    ("ratio 16:9:1", ("ratio 16", 9.0, 1.0)),
    ("ratio 16:9:1:-inf", ("ratio 16:9", 1.0, -INF)),
])
def test_parse_prompt(prompt, expected):
    text, weight, stop = parse_prompt(prompt)
    assert (text, weight, stop) == expected
    assert isinstance(weight, float) and isinstance(stop, float)


@pytest.mark.parametrize("text, expected", [
    ("a|b", ["a", "b"]),
    (" a photo:2 | b ||  | c:1:0 ", ["a photo:2", "b", "c:1:0"]),
    ("one", ["one"]),
    ("", []),
    ("  |  ", []),
    (None, []),
])
def test_split_prompts(text, expected):
    assert split_prompts(text) == expected


# --- spherical_loss ---------------------------------------------------------------------------


def unit(*values) -> torch.Tensor:
    """A (1, D) row."""
    return torch.tensor([values], dtype=torch.float32)


def test_spherical_loss_zero_for_identical_embeddings():
    embeds = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    for row in embeds:
        loss = spherical_loss(row[None], Target(row[None]))
        assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # the length of an embedding does not matter, only its direction
    assert spherical_loss(5 * embeds[:1], Target(embeds[:1])).item() == pytest.approx(0.0, abs=1e-6)


def test_spherical_loss_value():
    # unit vectors at angle a: 2 * (a / 2) ** 2 = a ** 2 / 2
    assert spherical_loss(unit(1, 0), Target(unit(0, 1))).item() == pytest.approx(math.pi**2 / 8)
    a = math.pi / 3
    loss = spherical_loss(unit(1, 0), Target(unit(math.cos(a), math.sin(a))))
    assert loss.item() == pytest.approx(a**2 / 2, rel=1e-5)
    assert spherical_loss(unit(1, 0), Target(unit(-1, 0))).item() == pytest.approx(math.pi**2 / 2)


def test_spherical_loss_averages_cutouts_and_target_rows():
    views = torch.cat([unit(1, 0), unit(0, 1)])  # (2, 2)
    target = Target(torch.cat([unit(1, 0), unit(-1, 0)]))  # (2, 2)
    # distances: (0, pi), (pi/2, pi/2) -> squared-half-angles * 2
    expected = (0 + math.pi**2 / 2 + 2 * math.pi**2 / 8) / 4
    assert spherical_loss(views, target).item() == pytest.approx(expected)


def test_spherical_loss_scaled_by_weight():
    views, goal = unit(1, 0.3, 0), unit(0.2, 1, 0.5)
    base = spherical_loss(views, Target(goal)).item()
    assert base > 0
    assert spherical_loss(views, Target(goal, weight=2.5)).item() == pytest.approx(2.5 * base)
    assert spherical_loss(views, Target(goal, weight=0.0)).item() == 0.0
    # an explicit weight (a cross-fade) replaces the target's own
    assert spherical_loss(views, Target(goal, weight=2.5), weight=0.25).item() == pytest.approx(
        0.25 * base)


def angle_after_step(weight: float, stop: float = -INF) -> tuple[float, torch.Tensor]:
    """Angle to the goal after one gradient step on the loss, and the gradient."""
    goal = unit(0.0, 1.0)
    x = unit(math.cos(0.5), math.sin(0.5)).requires_grad_(True)  # about 1.07 rad from the goal
    spherical_loss(x, Target(goal, weight=weight, stop=stop)).backward()
    with torch.no_grad():
        moved = F.normalize(x - 0.1 * x.grad, dim=1)
        return float(torch.acos((moved * goal).sum())), x.grad


def test_spherical_loss_negative_weight_pushes_away():
    start = math.pi / 2 - 0.5
    assert spherical_loss(unit(1, 0), Target(unit(0, 1), weight=-2.0)).item() == pytest.approx(
        -2 * math.pi**2 / 8)
    assert angle_after_step(1.0)[0] < start
    assert angle_after_step(-1.0)[0] > start


def test_spherical_loss_stop_clamps_the_pull():
    views, goal = unit(1, 0), unit(0, 1)
    dist = math.pi**2 / 8
    for stop in (dist - 0.1, dist + 0.1):
        # the value is the distance either way...
        assert spherical_loss(views, Target(goal, stop=stop)).item() == pytest.approx(dist)
    # ...but closer than `stop` the goal no longer pulls
    _, grad = angle_after_step(1.0, stop=10.0)
    assert torch.count_nonzero(grad) == 0
    _, grad = angle_after_step(1.0, stop=0.1)
    assert torch.count_nonzero(grad) > 0
    # with a negative weight the sign flips first: -dist is below a stop of 0, so no push
    _, grad = angle_after_step(-1.0, stop=0.0)
    assert torch.count_nonzero(grad) == 0
    _, grad = angle_after_step(-1.0, stop=-10.0)
    assert torch.count_nonzero(grad) > 0


# --- MakeCutouts ------------------------------------------------------------------------------


def check_cutouts(cutouts: MakeCutouts) -> torch.Tensor:
    """Runs cut-outs on a picture: shape, finiteness and a gradient back to the picture."""
    image = picture(requires_grad=True)
    out = cutouts(image)
    assert out.shape == (CUTN, 3, CUT, CUT)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    assert image.grad is not None and image.grad.shape == image.shape
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
    return out.detach()


@pytest.mark.parametrize("method", CUT_METHODS)
def test_cutouts_every_method(method):
    torch.manual_seed(0)
    check_cutouts(MakeCutouts(CUT, CUTN, method))


@pytest.mark.parametrize("method", ["latest", "nrupdated"])
@pytest.mark.parametrize("code", AUGMENTS)
def test_cutouts_every_augment(method, code):
    torch.manual_seed(1)
    cutouts = MakeCutouts(CUT, CUTN, method, augments=(code,))
    assert len(cutouts.augs) == 1
    check_cutouts(cutouts)


def test_cutouts_with_all_augments_and_a_small_picture():
    torch.manual_seed(2)
    cutouts = MakeCutouts(CUT, CUTN, "latest", augments=AUGMENTS)
    assert len(cutouts.augs) == len(AUGMENTS)
    image = picture(20, 24, requires_grad=True)  # smaller than a cut-out
    out = cutouts(image)
    assert out.shape == (CUTN, 3, CUT, CUT)
    out.sum().backward()
    assert image.grad.abs().sum() > 0


def test_augment_stacks():
    assert len(MakeCutouts(CUT, CUTN, "latest").augs) == len(DEFAULT_AUGMENTS)
    assert len(MakeCutouts(CUT, CUTN, "original").augs) == 0
    assert len(MakeCutouts(CUT, CUTN, "updated").augs) == 5
    assert len(MakeCutouts(CUT, CUTN, "updatedpooling").augs) == 4


def test_original_cutouts_stay_in_range():
    image = picture()
    # resampling the hard-edged checks overshoots [0, 1]...
    raw = resample(image[:, :, :40, :40], (CUT, CUT))
    assert raw.min() < 0 or raw.max() > 1
    # ...and 'original' clamps it, with more cut-outs for a better chance of an overshoot
    torch.manual_seed(3)
    out = MakeCutouts(CUT, 16, "original")(image)
    assert out.min() >= 0 and out.max() <= 1
    assert out.max() == 1.0  # some overshoot was clamped to exactly 1


@pytest.mark.parametrize("method", CUT_METHODS)
def test_cutouts_repeat_with_the_same_seed(method):
    cutouts = MakeCutouts(CUT, CUTN, method)
    image = picture()
    torch.manual_seed(7)
    first = cutouts(image)
    torch.manual_seed(7)
    again = cutouts(image)
    torch.manual_seed(8)
    other = cutouts(image)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_pooled_cutouts_are_one_view_before_augmenting():
    # 'latest' with no augments is the pooled picture plus per-cut-out noise
    torch.manual_seed(0)
    out = MakeCutouts(CUT, CUTN, "latest", augments=())(picture())
    pooled = (F.adaptive_avg_pool2d(picture(), CUT) + F.adaptive_max_pool2d(picture(), CUT)) / 2
    assert (out - pooled).abs().mean() < 0.1
    assert (out - pooled).abs().max() > 0  # the noise is there


# --- The seed's crop resampling, transcribed from nerdyrodent/VQGAN-CLIP generate.py -----------
# (sinc, lanczos, ramp, resample and MakeCutoutsOrig.forward, as the seed ran them)


def seed_sinc(x):
    return torch.where(x != 0, torch.sin(math.pi * x) / (math.pi * x), x.new_ones([]))


def seed_lanczos(x, a):
    cond = torch.logical_and(-a < x, x < a)
    out = torch.where(cond, seed_sinc(x) * seed_sinc(x / a), x.new_zeros([]))
    return out / out.sum()


def seed_ramp(ratio, width):
    n = math.ceil(width / ratio + 1)
    out = torch.empty([n])
    cur = 0
    for i in range(out.shape[0]):
        out[i] = cur
        cur += ratio
    return torch.cat([-out[1:].flip([0]), out])[1:-1]


def seed_resample(input, size, align_corners=True):
    n, c, h, w = input.shape
    dh, dw = size
    input = input.view([n * c, 1, h, w])
    if dh < h:
        kernel_h = seed_lanczos(seed_ramp(dh / h, 2), 2).to(input.device, input.dtype)
        pad_h = (kernel_h.shape[0] - 1) // 2
        input = F.pad(input, (0, 0, pad_h, pad_h), "reflect")
        input = F.conv2d(input, kernel_h[None, None, :, None])
    if dw < w:
        kernel_w = seed_lanczos(seed_ramp(dw / w, 2), 2).to(input.device, input.dtype)
        pad_w = (kernel_w.shape[0] - 1) // 2
        input = F.pad(input, (pad_w, pad_w, 0, 0), "reflect")
        input = F.conv2d(input, kernel_w[None, None, None, :])
    input = input.view([n, c, h, w])
    return F.interpolate(input, size, mode="bicubic", align_corners=align_corners)


def seed_original_cutouts(input, cut_size, cutn, cut_pow=1.0):
    sideY, sideX = input.shape[2:4]
    max_size = min(sideX, sideY)
    min_size = min(sideX, sideY, cut_size)
    cutouts = []
    for _ in range(cutn):
        size = int(torch.rand([]) ** cut_pow * (max_size - min_size) + min_size)
        offsetx = torch.randint(0, sideX - size + 1, ())
        offsety = torch.randint(0, sideY - size + 1, ())
        cutout = input[:, :, offsety:offsety + size, offsetx:offsetx + size]
        cutouts.append(seed_resample(cutout, (cut_size, cut_size)))
    return clamp_with_grad(torch.cat(cutouts, dim=0), 0, 1)


@pytest.mark.parametrize("side", [240, 224, 100, 47, 33, 32, 20])
def test_resample_is_the_seeds(side):
    image = torch.rand(1, 3, 256, 300, generator=torch.Generator().manual_seed(side))
    crop = image[:, :, 3:3 + side, 11:11 + side]  # a view, as the cut-outs take it
    ours = resample(crop, (CUT, CUT))
    assert ours.shape == (1, 3, CUT, CUT)
    torch.testing.assert_close(ours, seed_resample(crop, (CUT, CUT)), atol=2e-6, rtol=0)


def test_resample_shrinks_each_axis_on_its_own():
    image = torch.rand(2, 3, 90, 40, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(resample(image, (30, 40)), seed_resample(image, (30, 40)),
                               atol=2e-6, rtol=0)


@pytest.mark.parametrize("ratio", [0.9, 0.5, 32 / 47, 0.1])
def test_lanczos_taps(ratio):
    taps = lanczos_taps(ratio)
    assert taps.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(taps, taps.flip(0))  # symmetric, centred on the middle tap
    assert taps.argmax() == len(taps) // 2
    torch.testing.assert_close(taps, seed_lanczos(seed_ramp(ratio, 2), 2), atol=1e-6, rtol=0)


@pytest.mark.parametrize("cut_pow", [1.0, 0.5])
def test_original_cutouts_are_the_seeds(cut_pow):
    image = picture(120, 160)
    torch.manual_seed(11)
    ours = MakeCutouts(CUT, 8, "original", cut_pow=cut_pow)(image)
    torch.manual_seed(11)
    seeds = seed_original_cutouts(image, CUT, 8, cut_pow)
    torch.testing.assert_close(ours, seeds, atol=2e-6, rtol=0)


# --- Colour jitter: kornia 0.5's ColorJitter, which the seed ran ------------------------------


def kornia05_color_jitter(image: torch.Tensor, params: dict) -> torch.Tensor:
    """kornia 0.5's apply_color_jitter: brightness added, contrast multiplied (each clamped to
    [0, 1]), saturation scaled and hue shifted in HSV, in the drawn order."""
    from kornia.enhance import adjust_hue, adjust_saturation

    def factor(key):
        return params[key].view(-1, 1, 1, 1)

    steps = [lambda x: (x + factor("brightness_factor") - 1).clamp(0, 1),
             lambda x: (x * factor("contrast_factor")).clamp(0, 1),
             lambda x: adjust_saturation(x, params["saturation_factor"]),
             lambda x: adjust_hue(x, params["hue_factor"] * 2 * math.pi)]
    for index in params["order"].tolist():
        image = steps[index](image)
    return image


def jitters():
    """Every colour jitter the cut methods use: the Ji augment, and the updated stacks' own."""
    return {"Ji": augment("Ji", CUT, "latest"), "Ji-nr": augment("Ji", CUT, "nr"),
            "updated": _fixed_augments("updated")[1],
            "updatedpooling": _fixed_augments("updatedpooling")[2]}


@pytest.mark.parametrize("name", ["Ji", "Ji-nr", "updated", "updatedpooling"])
def test_colour_jitter_is_kornia_05s(name):
    jitter = jitters()[name]
    image = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    out = jitter(image)
    params = jitter._params
    applied = params["batch_prob"] > 0.5
    assert 0 < applied.sum() < len(applied)  # p=0.7: some pictures jittered, some not
    expected = kornia05_color_jitter(image, params)
    torch.testing.assert_close(out[applied], expected[applied], atol=1e-5, rtol=0)
    assert torch.equal(out[~applied], image[~applied])


def test_ji_brightness_is_additive():
    # kornia 0.5 (the seed's) adds (factor - 1); kornia 0.9's ColorJitter multiplies by factor.
    jitter = augment("Ji", CUT, "latest")
    gray = torch.full((64, 3, 4, 4), 0.3)
    torch.manual_seed(0)
    out = jitter(gray)
    params = jitter._params
    applied = params["batch_prob"] > 0.5
    order = params["order"].tolist()
    assert order  # the drawn order is shared by the batch
    # on a gray picture saturation and hue change nothing and contrast scales, so after
    # brightness-then-contrast the value is (0.3 + b - 1) * c, clamped
    if order.index(0) < order.index(1):
        expected = (0.3 + params["brightness_factor"] - 1) * params["contrast_factor"]
    else:
        expected = 0.3 * params["contrast_factor"] + params["brightness_factor"] - 1
    got = out[:, 0, 0, 0]
    torch.testing.assert_close(got[applied], expected[applied].clamp(0, 1),
                               atol=1e-5, rtol=0)


# --- Perceptor --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def perceptor(tiny_models):
    """The tiny CLIP with four 'latest' cut-outs."""
    return Perceptor(networks.load_clip(tiny_models["clip"]), MakeCutouts(CUT, CUTN, "latest"))


def test_text_target(perceptor, recwarn):
    target = perceptor.text_target("a red kite over green hills", weight=2.0, stop=0.5)
    assert target.embed.shape == (1, 512) and target.embed.dtype == torch.float32
    assert (target.weight, target.stop) == (2.0, 0.5)
    assert not recwarn.list
    again = perceptor.text_target("a red kite over green hills")
    assert torch.equal(target.embed, again.embed)
    assert not torch.equal(target.embed, perceptor.text_target("a lighthouse").embed)


def test_long_text_warns_and_is_cut(perceptor):
    text = "a very long lyric line " + " ".join(f"word{i}" for i in range(100))
    with pytest.warns(UserWarning, match="77 tokens") as record:
        target = perceptor.text_target(text)
    assert len(record) == 1 and repr(text) in str(record[0].message)
    assert target.embed.shape == (1, 512) and torch.isfinite(target.embed).all()


def test_image_target(perceptor):
    torch.manual_seed(0)
    target = perceptor.image_target(picture(), weight=0.5)
    assert target.embed.shape == (CUTN, 512) and target.weight == 0.5
    assert torch.isfinite(target.embed).all() and not target.embed.requires_grad


def test_encode_views_passes_gradient(perceptor):
    image = picture(requires_grad=True)
    embeds = perceptor.encode_views(image)
    assert embeds.shape == (CUTN, 512)
    spherical_loss(embeds, perceptor.text_target("stars")).backward()
    assert image.grad.abs().sum() > 0


def test_noise_target_is_deterministic_per_seed():
    a = noise_target(3, 0.5, 512, "cpu")
    b = noise_target(3, 0.5, 512, "cpu")
    c = noise_target(4, 0.5, 512, "cpu")
    assert a.embed.shape == (1, 512) and a.weight == 0.5 and a.stop == -INF
    assert torch.equal(a.embed, b.embed)
    assert not torch.equal(a.embed, c.embed)
    torch.manual_seed(0)
    d = noise_target(3, 0.5, 512, "cpu")
    torch.manual_seed(1)
    e = noise_target(3, 0.5, 512, "cpu")
    assert torch.equal(d.embed, e.embed)  # the global seed does not matter
