"""Batched image augmentation and normalisation on uint8 NHWC tensors.

Two recipes per dataset (`Augment.for_dataset(name, recipe)`):

- "standard": random crop with 4-pixel zero padding, plus a horizontal flip for CIFAR-10
  or brightness jitter (+-20%) for GTSRB.
- "signs" (GTSRB): one random projective warp per image (rotation +-10 degrees, scale
  0.9-1.1, a small perspective tilt, shift +-2 pixels via the crop) and contrast and
  brightness jitter (+-30% / +-20%): the views a camera gets of a sign by the road.
  For CIFAR-10 "signs" is "standard" (no warp recipe tuned there).
- "none": no augmentation.

Whole batches at once (vectorised indexing, no per-image Python loop), which
matters on small CPUs. Random numbers come from torch's global generator, or
from `generator` when given.

>>> aug = Augment.for_dataset("gtsrb32")
>>> aug.hflip            # traffic signs are never mirrored (keep left != keep right)
False
>>> batch = aug(torch.zeros(8, 32, 32, 3, dtype=torch.uint8))          # doctest: +SKIP
>>> normalize(batch, mean, std).shape                                    # doctest: +SKIP
torch.Size([8, 3, 32, 32])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class Augment:
    """Training augmentation: projective warp, random crop with zero padding, optional flip,
    brightness and contrast jitter (applied in that order)."""

    crop_padding: int = 4
    hflip: bool = False
    brightness: float = 0.0  # max relative change, e.g. 0.2 scales each image by U(0.8, 1.2)
    rotation: float = 0.0    # max rotation in degrees
    scale: float = 0.0       # max relative zoom, e.g. 0.1 zooms by U(0.9, 1.1)
    perspective: float = 0.0  # max projective tilt (last-row coefficients of the homography, normalised coords)
    contrast: float = 0.0    # max relative change of the distance of each pixel to the image mean

    @classmethod
    def for_dataset(cls, dataset: str, recipe: str = "standard") -> "Augment | None":
        """The named recipe for `dataset` (see the module docstring); None for recipe "none".
        GTSRB is never flipped (mirroring turns "keep left" into "keep right" and breaks other signs)."""
        if recipe not in RECIPES:
            raise ValueError(f"unknown augmentation recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
        if dataset not in ("cifar10", "gtsrb32"):
            raise ValueError(f"no augmentation defined for dataset {dataset!r}")
        if recipe == "none":
            return None
        if dataset == "cifar10":
            return cls(crop_padding=4, hflip=True)
        if recipe == "signs":
            return cls(crop_padding=2, brightness=0.2, rotation=10.0, scale=0.1, perspective=0.1, contrast=0.3)
        return cls(crop_padding=4, hflip=False, brightness=0.2)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        out = images
        if self.rotation or self.scale or self.perspective:
            out = random_warp(out, self.rotation, self.scale, self.perspective, generator)
        if self.crop_padding:
            out = random_crop(out, self.crop_padding, generator)
        if self.hflip:
            out = random_hflip(out, generator)
        if self.brightness:
            out = random_brightness(out, self.brightness, generator)
        if self.contrast:
            out = random_contrast(out, self.contrast, generator)
        return out


RECIPES = ("standard", "signs", "none")


def _uniform(n: int, amount: float, generator: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * 2 - 1) * amount


def random_warp(images: torch.Tensor, rotation: float, scale: float, perspective: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """`warp` each NHWC uint8 image by a random homography about its centre: rotation by
    U(-rotation, rotation) degrees, zoom by U(1 - scale, 1 + scale), projective tilt with
    last-row coefficients U(-perspective, perspective)."""
    n = images.shape[0]
    angle = _uniform(n, rotation, generator)
    zoom = 1 + _uniform(n, scale, generator)
    tilt = torch.stack([_uniform(n, perspective, generator), _uniform(n, perspective, generator)], 1)
    return warp(images, angle, zoom, tilt)


def warp(images: torch.Tensor, degrees: torch.Tensor, zoom: torch.Tensor, tilt: torch.Tensor) -> torch.Tensor:
    """Warp NHWC uint8 images (one angle in degrees, zoom factor and (tx, ty) tilt each) about the
    centre; normalised coordinates in [-1, 1]. The output pixel at p samples the input at
    R(-angle) p / zoom / (1 + tilt . p): bilinear, edges replicated (a sign's background goes on
    past the frame)."""
    _, h, w, _ = images.shape
    angle = degrees * (torch.pi / 180)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    xs, ys = xs[None], ys[None]
    c, s = cos[:, None, None], sin[:, None, None]
    denom = 1 + tilt[:, 0, None, None] * xs + tilt[:, 1, None, None] * ys
    grid = torch.stack([(c * xs - s * ys) / denom, (s * xs + c * ys) / denom], dim=-1)
    x = images.permute(0, 3, 1, 2).float()
    out = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def random_contrast(images: torch.Tensor, amount: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each uint8 image's distance to its mean grey level by U(1 - amount, 1 + amount)."""
    factor = 1 + _uniform(images.shape[0], amount, generator)
    x = images.float()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * factor[:, None, None, None] + mean).round_().clamp_(0, 255).to(torch.uint8)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad each NHWC image by `padding` and crop back to its size at a random offset."""
    n, h, w, _ = images.shape
    padded = torch.nn.functional.pad(images, (0, 0, padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return padded[torch.arange(n)[:, None, None], rows, cols]


def random_hflip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the NHWC images left-right."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(2), images)


def random_brightness(images: torch.Tensor, amount: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each uint8 image by a factor in [1 - amount, 1 + amount], clipped to 0..255."""
    factor = 1 + (torch.rand(images.shape[0], generator=generator) * 2 - 1) * amount
    scaled = images.float() * factor[:, None, None, None]
    return scaled.round_().clamp_(0, 255).to(torch.uint8)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW, (pixel / 255 - mean) / std per channel."""
    x = images.permute(0, 3, 1, 2).float().div_(255)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return x.sub_(m).div_(s).contiguous()
