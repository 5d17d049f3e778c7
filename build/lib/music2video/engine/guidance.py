"""Guidance: what the picture is pulled towards (goals) and how CLIP looks at it (cut-outs)."""

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models.autograd import clamp_with_grad, replace_grad
from ..options import DEFAULT_AUGMENTS

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
NOISE_FAC = 0.1  # the seed's per-cut-out noise level
LANCZOS_LOBES = 2  # the seed's anti-alias filter before shrinking a crop


@dataclass(frozen=True)
class Target:
    """One goal embedding and how strongly it pulls."""

    embed: torch.Tensor  # (R, D) CLIP-space rows; the loss averages over them
    weight: float = 1.0  # negative pushes away
    stop: float = float("-inf")  # distance below which the goal stops pulling


def spherical_loss(image_embeds: torch.Tensor, target: Target, weight: float | None = None):
    """Squared great-circle distance of cut-out embeddings (C, D) to a target, weighted."""
    weight = target.weight if weight is None else weight
    x = F.normalize(image_embeds.unsqueeze(1), dim=2)  # (C, 1, D)
    y = F.normalize(target.embed.unsqueeze(0), dim=2)  # (1, R, D)
    dists = x.sub(y).norm(dim=2).div(2).arcsin().pow(2).mul(2)  # (C, R)
    dists = dists * (1.0 if weight >= 0 else -1.0)
    return abs(weight) * replace_grad(dists, torch.clamp_min(dists, target.stop)).mean()


def augment(code: str, cut_size: int, variant: str) -> nn.Module:
    """One of the seed's kornia augments; 'nr' is the nrupdated method's stronger variant.

    The seed's kornia 0.5 ColorJitter is kornia's ColorJiggle now (additive brightness,
    multiplicative contrast); today's ColorJitter follows torchvision's formulas instead."""
    import kornia.augmentation as K

    nr = variant == "nr"
    size = (cut_size, cut_size)
    factories = {
        "Ji": lambda: K.ColorJiggle(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1, p=0.7),
        "Sh": lambda: K.RandomSharpness(sharpness=0.3, p=0.5),
        "Gn": lambda: K.RandomGaussianNoise(mean=0.0, std=1.0, p=0.5),
        "Pe": lambda: K.RandomPerspective(distortion_scale=0.5 if nr else 0.7, p=0.7),
        "Ro": lambda: K.RandomRotation(degrees=15, p=0.7),
        "Af": lambda: K.RandomAffine(degrees=30 if nr else 15, translate=0.1, shear=5, p=0.7,
                                     padding_mode="zeros", keepdim=True),
        "Et": lambda: K.RandomElasticTransform(p=0.7),
        "Ts": lambda: K.RandomThinPlateSpline(scale=0.8, same_on_batch=True, p=0.7),
        "Cr": lambda: K.RandomCrop(size=size, pad_if_needed=True, padding_mode="reflect", p=0.5),
        "Er": lambda: K.RandomErasing(scale=(0.1, 0.4), ratio=(0.3, 1 / 0.3), same_on_batch=True,
                                      p=0.7),
        "Re": lambda: K.RandomResizedCrop(size=size, scale=(0.1, 1), ratio=(0.75, 1.333),
                                          cropping_mode="resample", p=0.5),
    }
    return factories[code]()


def _fixed_augments(method: str) -> list[nn.Module]:
    """The augment stacks the 'updated' and 'updatedpooling' methods hard-wire."""
    import kornia.augmentation as K

    if method == "updated":
        return [K.RandomHorizontalFlip(p=0.5), K.ColorJiggle(hue=0.01, saturation=0.01, p=0.7),
                K.RandomSharpness(0.3, p=0.4),
                K.RandomAffine(degrees=30, translate=0.1, p=0.8, padding_mode="border"),
                K.RandomPerspective(0.2, p=0.4)]
    return [K.RandomAffine(degrees=15, translate=0.1, p=0.7, padding_mode="border"),
            K.RandomPerspective(0.7, p=0.7), K.ColorJiggle(hue=0.1, saturation=0.1, p=0.7),
            K.RandomErasing((0.1, 0.4), (0.3, 1 / 0.3), same_on_batch=True, p=0.7)]


def lanczos_taps(ratio: float, lobes: int = LANCZOS_LOBES) -> torch.Tensor:
    """Low-pass taps (K,) for shrinking by `ratio` < 1: a Lanczos window sampled every `ratio`.

    The taps reach as far as the seed's filter did (its ramp of ceil(lobes/ratio + 1) - 2
    steps to each side) and sum to 1."""
    reach = math.ceil(lobes / ratio + 1) - 2
    x = torch.arange(-reach, reach + 1, dtype=torch.float64) * ratio  # (K,) in source pixels
    taps = torch.where(x.abs() < lobes, torch.sinc(x) * torch.sinc(x / lobes), 0.0)
    return (taps / taps.sum()).float()


def resample(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The seed's crop resize: a Lanczos low-pass along each axis that shrinks, then bicubic.

    (N, C, H, W) -> (N, C, *size); the filter pads by reflection, and the bicubic
    interpolation aligns corners, as the seed's resample() did."""
    n, c, h, w = image.shape
    planes = image.reshape(n * c, 1, h, w)
    if size[0] < h:
        taps = lanczos_taps(size[0] / h).to(planes)
        pad = (taps.numel() - 1) // 2
        planes = F.conv2d(F.pad(planes, (0, 0, pad, pad), "reflect"), taps.view(1, 1, -1, 1))
    if size[1] < w:
        taps = lanczos_taps(size[1] / w).to(planes)
        pad = (taps.numel() - 1) // 2
        planes = F.conv2d(F.pad(planes, (pad, pad, 0, 0), "reflect"), taps.view(1, 1, 1, -1))
    return F.interpolate(planes.reshape(n, c, h, w), size, mode="bicubic", align_corners=True)


class MakeCutouts(nn.Module):
    """The seed's five ways of cutting a picture into `cutn` CLIP-sized views.

    'latest' and 'updatedpooling' pool the whole picture once and augment `cutn` copies of it
    (the seed pooled it `cutn` times over, to the same result); 'original', 'updated' and
    'nrupdated' take random square crops of size ~ rand**cut_pow."""

    def __init__(self, cut_size: int, cutn: int, method: str = "latest", cut_pow: float = 1.0,
                 augments=DEFAULT_AUGMENTS):
        super().__init__()
        self.cut_size, self.cutn, self.method, self.cut_pow = cut_size, cutn, method, cut_pow
        if method in ("latest", "nrupdated"):
            variant = "nr" if method == "nrupdated" else "latest"
            augs = [augment(code, cut_size, variant) for code in augments]
        elif method in ("updated", "updatedpooling"):
            augs = _fixed_augments(method)
        else:
            augs = []
        self.augs = nn.Sequential(*augs)

    def _pooled(self, image: torch.Tensor) -> torch.Tensor:
        """One average+max pooled view (1, 3, s, s), repeated cutn times."""
        size = (self.cut_size, self.cut_size)
        pooled = (F.adaptive_avg_pool2d(image, size) + F.adaptive_max_pool2d(image, size)) / 2
        return pooled.expand(self.cutn, -1, -1, -1)

    def _crops(self, image: torch.Tensor) -> torch.Tensor:
        """cutn random square crops, each resampled to the cut size as the seed did."""
        side_y, side_x = image.shape[2:4]
        max_size, min_size = min(side_x, side_y), min(side_x, side_y, self.cut_size)
        cutouts = []
        for _ in range(self.cutn):
            size = int(torch.rand([]) ** self.cut_pow * (max_size - min_size) + min_size)
            ox = int(torch.randint(0, side_x - size + 1, ()))
            oy = int(torch.randint(0, side_y - size + 1, ()))
            crop = image[:, :, oy:oy + size, ox:ox + size]
            cutouts.append(resample(crop, (self.cut_size, self.cut_size)))
        return torch.cat(cutouts)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) in [0, 1] -> (cutn, 3, s, s)."""
        pooling = self.method in ("latest", "updatedpooling")
        batch = self._pooled(image) if pooling else self._crops(image)
        if self.method == "original":
            return clamp_with_grad(batch, 0, 1)
        batch = self.augs(batch)
        facs = batch.new_empty([self.cutn, 1, 1, 1]).uniform_(0, NOISE_FAC)
        return batch + facs * torch.randn_like(batch)


class Perceptor:
    """CLIP with its cut-outs: turns pictures and words into goal embeddings."""

    def __init__(self, clip_model: nn.Module, cutouts: MakeCutouts):
        self.clip, self.cutouts = clip_model, cutouts
        param = next(clip_model.parameters())
        self.device = param.device
        self.mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)

    def encode_views(self, image: torch.Tensor) -> torch.Tensor:
        """Embeddings (cutn, D) of the cut-outs of a picture (1, 3, H, W) in [0, 1].

        The cut-outs are always fp32 (bf16 sampling grids are off by a pixel, and the random
        draws stay those of fp32); CLIP runs in the caller's autocast precision."""
        with torch.autocast(image.device.type, enabled=False):
            views = self.cutouts(image.float())
            views = (views - self.mean) / self.std  # (cutn, 3, s, s)
        return self.clip.encode_image(views).float()

    @torch.no_grad()
    def image_target(self, image: torch.Tensor, weight=1.0, stop=float("-inf")) -> Target:
        """A goal that pulls towards a picture, as the seed's image prompts and continuity did."""
        return Target(self.encode_views(image.to(self.device)), weight, stop)

    @torch.no_grad()
    def text_target(self, text: str, weight=1.0, stop=float("-inf")) -> Target:
        """A goal that pulls towards a text; text over CLIP's 77 tokens is cut, with a warning."""
        import clip

        try:
            tokens = clip.tokenize([text])
        except RuntimeError:
            warnings.warn(f"text longer than CLIP's 77 tokens, cut short: {text!r}")
            tokens = clip.tokenize([text], truncate=True)
        return Target(self.clip.encode_text(tokens.to(self.device)).float(), weight, stop)


def noise_target(seed: int, weight: float, dim: int, device) -> Target:
    """The seed's noise prompt: a random direction drawn from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    return Target(torch.empty([1, dim]).normal_(generator=gen).to(device), weight)
