"""torch DataLoaders over the packed datasets: batched augmentation, DDP-aware sampling.

The dataset is indexed by a *list* of indices and returns a whole normalised
batch, so augmentation is vectorised (training/augment.py) and a DataLoader
worker produces one batch per call. Shuffling uses `DistributedSampler` even on
one process (num_replicas=1), so the order depends only on (seed, epoch): a
resumed run sees the same batches as an uninterrupted one.

>>> opts = LoaderOptions(batch_size=128)
>>> train = make_loader("gtsrb32", "train", opts, train=True)        # doctest: +SKIP
>>> train.sampler.sampler.set_epoch(3)                                # doctest: +SKIP
>>> images, labels = next(iter(train))                                 # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, SequentialSampler

from .augment import Augment, normalize
from .data import dataset_info, load_split, validation_seed


@dataclass(frozen=True)
class LoaderOptions:
    batch_size: int = 128
    workers: int = 0
    limit_train: int | None = None  # keep only this many training images (smoke runs)
    limit_eval: int | None = None   # keep only this many val/test images (smoke runs)
    seed: int = 0
    split_seed: int | None = None   # the train/validation split's seed (None: `seed`)
    val_fraction: float = 0.1
    data_dir: str | None = None
    pin_memory: bool = False
    augment: str = "standard"  # training augmentation recipe (training/augment.py RECIPES)


class BatchDataset(Dataset):
    """uint8 images + labels; `ds[list_of_indices]` -> (float NCHW normalised batch, int64 labels)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: Sequence[float], std: Sequence[float],
                 augment: Augment | None = None) -> None:
        self.images = torch.from_numpy(np.array(images, np.uint8))
        self.labels = torch.from_numpy(np.array(labels, np.int64))
        self.mean, self.std, self.augment = tuple(mean), tuple(std), augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[index]
        if self.augment is not None:
            images = self.augment(images)
        return normalize(images, self.mean, self.std), self.labels[index]


def split_arrays(dataset: str, split: str, options: LoaderOptions) -> tuple[np.ndarray, np.ndarray]:
    """The split's arrays, cut to `options.limit_train` (train) or `options.limit_eval` (other
    splits) images: a seeded random subset, kept in file order."""
    x, y = load_split(dataset, split, options.data_dir, options.val_fraction,
                      validation_seed(options.seed, options.split_seed))
    limit = options.limit_train if split == "train" else options.limit_eval
    if limit is not None and limit < len(y):
        keep = np.sort(np.random.default_rng(options.seed).permutation(len(y))[:limit])
        x, y = x[keep], y[keep]
    return x, y


def make_loader(dataset: str, split: str, options: LoaderOptions, train: bool = False,
                rank: int = 0, world_size: int = 1) -> DataLoader:
    """A loader of (images, labels) batches. `train=True`: augmented, shuffled per epoch
    (call `loader.sampler.sampler.set_epoch(e)`), sharded over `world_size` ranks, last
    partial batch dropped. Otherwise in file order, unaugmented, every image once."""
    info = dataset_info(dataset)
    x, y = split_arrays(dataset, split, options)
    data = BatchDataset(x, y, info.mean, info.std, Augment.for_dataset(dataset, options.augment) if train else None)
    if train:
        base = DistributedSampler(range(len(data)), num_replicas=world_size, rank=rank, shuffle=True,
                                  seed=options.seed)
        per_rank = len(base)
        drop_last = per_rank >= options.batch_size
    else:
        base, drop_last = SequentialSampler(range(len(data))), False
    sampler = BatchSampler(base, options.batch_size, drop_last=drop_last)
    return DataLoader(data, sampler=sampler, batch_size=None, num_workers=options.workers,
                      pin_memory=options.pin_memory, persistent_workers=options.workers > 0)
