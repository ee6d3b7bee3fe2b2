"""Batched image augmentation and normalisation on uint8 NHWC tensors.

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
    """Training augmentation: random crop with zero padding, optional flip and brightness jitter."""

    crop_padding: int = 4
    hflip: bool = False
    brightness: float = 0.0  # max relative change, e.g. 0.2 scales each image by U(0.8, 1.2)

    @classmethod
    def for_dataset(cls, dataset: str) -> "Augment":
        """CIFAR-10: pad-4 crop + horizontal flip. GTSRB: pad-4 crop + brightness jitter, never flipped
        (mirroring turns "keep left" into "keep right" and breaks other signs)."""
        if dataset == "cifar10":
            return cls(crop_padding=4, hflip=True)
        if dataset == "gtsrb32":
            return cls(crop_padding=4, hflip=False, brightness=0.2)
        raise ValueError(f"no augmentation defined for dataset {dataset!r}")

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        out = images
        if self.crop_padding:
            out = random_crop(out, self.crop_padding, generator)
        if self.hflip:
            out = random_hflip(out, generator)
        if self.brightness:
            out = random_brightness(out, self.brightness, generator)
        return out


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
