"""training.augment / training.loaders: batched crops, no flips for traffic signs, normalisation, sampling."""

from __future__ import annotations

import numpy as np
import torch

from training import data
from training.augment import Augment, normalize, random_crop, random_hflip
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
