"""Training throughput (images/s) on this machine: memory format x threads x augmentation, side by side.

Runs the trainer's inner step (augmented real GTSRB batches, forward through every exit,
weighted loss, SGD step) for a fixed number of batches per configuration, interleaved in
rounds so that load from other processes hits every configuration alike, and prints the
median images/s of each and its ratio to the first (the trainer's old defaults).

    python -m bench.bench_train_throughput --arch-kwargs '{"blocks_per_section": [2, 2, 3], "head_pool": [4, 4, 2]}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.loaders import LoaderOptions, make_loader
from training.models import create_model


@dataclass(frozen=True)
class Variant:
    channels_last: bool
    threads: int
    augment: str

    @property
    def label(self) -> str:
        return f"{'channels_last' if self.channels_last else 'contiguous'}, {self.threads} thread(s), {self.augment}"


def images_per_second(variant: Variant, arch: str, arch_kwargs: dict, batches: int, batch_size: int) -> float:
    torch.set_num_threads(variant.threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if variant.channels_last else torch.contiguous_format
    model = create_model(arch, num_classes=43, **arch_kwargs).to(memory_format=fmt).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = make_loader("gtsrb32", "train", LoaderOptions(batch_size=batch_size, augment=variant.augment), train=True)
    batch_iter = iter(loader)
    next(batch_iter)  # warm-up batch outside the clock
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        images, labels = next(batch_iter)
        images = images.contiguous(memory_format=fmt)
        loss = sum(F.cross_entropy(z, labels, label_smoothing=0.1) for z in model(images))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(labels)
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resann")
    p.add_argument("--arch-kwargs", default="{}")
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    variants = [Variant(False, 1, "standard"), Variant(True, 1, "standard"), Variant(False, 2, "standard"),
                Variant(True, 2, "standard"), Variant(True, 2, "signs")]
    results: dict[Variant, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            results[v].append(images_per_second(v, args.arch, json.loads(args.arch_kwargs), args.batches,
                                                args.batch_size))
    base = statistics.median(results[variants[0]])
    print(f"| configuration ({args.arch} {args.arch_kwargs}, batch {args.batch_size}) | images/s (median of "
          f"{args.rounds}) | ratio |")
    print("|---|---|---|")
    for v in variants:
        med = statistics.median(results[v])
        print(f"| {v.label} | {med:.0f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
