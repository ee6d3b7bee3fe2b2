"""training.augment / training.loaders: batched crops, no flips for traffic signs, normalisation, sampling."""

from __future__ import annotations

import numpy as np
import torch

from training import data
from training.augment import Augment, normalize, random_contrast, random_crop, random_hflip, random_warp, warp
from training.loaders import LoaderOptions, make_loader


def images(n: int = 6) -> torch.Tensor:
    return torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_random_crop_is_a_shifted_window():
    x = images()
    out = random_crop(x, 4, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (0, 0, 4, 4, 4, 4))
    for i in range(len(x)):
        windows = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.equal(padded[i, dy:dy + 32, dx:dx + 32], out[i])]
        assert windows


def test_flip_only_for_cifar():
    assert not Augment.for_dataset("gtsrb32").hflip and Augment.for_dataset("cifar10").hflip
    x = images(64)
    flipped = random_hflip(x, torch.Generator().manual_seed(0))
    same = [torch.equal(a, b) for a, b in zip(flipped, x)]
    mirrored = [torch.equal(a, b.flip(1)) for a, b in zip(flipped, x)]
    assert all(s or m for s, m in zip(same, mirrored)) and 10 < sum(mirrored) < 54
    gtsrb = Augment.for_dataset("gtsrb32")
    out = gtsrb(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape


def test_normalize():
    x = images(2)
    out = normalize(x, (0.5, 0.4, 0.3), (0.2, 0.25, 0.5))
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32
    expected = (x[1, 5, 7, 2].item() / 255 - 0.3) / 0.5
    assert abs(out[1, 2, 5, 7].item() - expected) < 1e-6


def test_loaders_batches_epochs_and_limits(tmp_path):
    data.clear_cache()
    data.write_synthetic(tmp_path, "gtsrb32", tracks_per_class=2, test_per_class=1)
    opts = LoaderOptions(batch_size=32, data_dir=str(tmp_path), limit_train=200)
    train = make_loader("gtsrb32", "train", opts, train=True)
    batches = list(train)
    assert len(batches) == 200 // 32 and batches[0][0].shape == (32, 3, 32, 32)
    train.sampler.sampler.set_epoch(0)
    again = next(iter(train))[1]
    torch.testing.assert_close(again, batches[0][1])  # same (seed, epoch) -> same order
    train.sampler.sampler.set_epoch(1)
    assert not torch.equal(next(iter(train))[1], batches[0][1])
    test = make_loader("gtsrb32", "test", opts)
    labels = torch.cat([y for _, y in test])
    np.testing.assert_array_equal(labels.numpy(), data.load_split("gtsrb32", "test", tmp_path)[1])
    shard = make_loader("gtsrb32", "train", opts, train=True, rank=1, world_size=2)
    assert sum(len(y) for _, y in shard) == 96  # 100 per rank, last partial batch dropped
    data.clear_cache()


def test_warp_without_change_is_the_identity_and_turns_are_exact():
    x = images(4)
    torch.testing.assert_close(random_warp(x, 0.0, 0.0, 0.0), x)
    ones, zero = torch.ones(4), torch.zeros(4, 2)
    half_turn = warp(x, 180 * ones, ones, zero)
    torch.testing.assert_close(half_turn, x.flip(1).flip(2), atol=1, rtol=0)
    quarter = warp(x, 90 * ones, ones, zero)  # some direction of a quarter turn: a transpose plus one flip
    assert any((quarter.int() - t.int()).abs().max() <= 1 for t in (x.transpose(1, 2).flip(1), x.transpose(1, 2).flip(2)))
    ramp = (torch.arange(32) * 8).to(torch.uint8)[None, None, :, None].expand(1, 32, 32, 3).contiguous()
    zoomed = warp(ramp, torch.zeros(1), 2 * torch.ones(1), torch.zeros(1, 2))  # the centre half fills the frame
    torch.testing.assert_close(zoomed[0, 5].float(), (8 * (7.75 + torch.arange(32) / 2))[:, None].expand(32, 3),
                               atol=0.51, rtol=0)
    tilted = random_warp(x, 0.0, 0.0, 0.1, torch.Generator().manual_seed(0))
    assert not torch.equal(tilted, x)


def test_contrast_keeps_the_mean_grey_and_scales_the_spread():
    flat = torch.full((3, 32, 32, 3), 100, dtype=torch.uint8)
    torch.testing.assert_close(random_contrast(flat, 0.5), flat)  # nothing to stretch
    x = images(64)
    out = random_contrast(x, 0.3, torch.Generator().manual_seed(3))
    ratio = out.float().std(dim=(1, 2, 3)) / x.float().std(dim=(1, 2, 3))
    assert ratio.min() > 0.65 and ratio.max() < 1.35 and ratio.std() > 0.05
    assert (out.float().mean(dim=(1, 2, 3)) - x.float().mean(dim=(1, 2, 3))).abs().max() < 8


def test_recipes():
    signs = Augment.for_dataset("gtsrb32", "signs")
    assert not signs.hflip and signs.rotation > 0 and signs.perspective > 0 and signs.contrast > 0
    assert Augment.for_dataset("gtsrb32", "none") is None
    assert Augment.for_dataset("cifar10", "signs") == Augment.for_dataset("cifar10")  # no sign warps on CIFAR
    x = images(16)
    out = signs(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    import pytest
    with pytest.raises(ValueError, match="choose one of standard, signs, none"):
        Augment.for_dataset("gtsrb32", "heavy")
