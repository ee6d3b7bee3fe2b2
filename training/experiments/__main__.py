"""Reproduce the papers' claims at CPU scale: run one experiment (or all), print its tables, write JSON.

    python -m training.experiments NAME [--dataset gtsrb32|cifar10] [--epochs N] [--limit-train N] [--out DIR] [--json]

Prints the experiment's tables (markdown) or, with --json, its whole result as JSON;
always writes OUT/NAME.json and OUT/NAME.md. NAME `all` runs every experiment in turn.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import EXPERIMENTS, ExperimentConfig, run_experiment


def parse_args(argv: list[str] | None = None) -> tuple[list[str], ExperimentConfig, bool]:
    defaults = ExperimentConfig()
    p = argparse.ArgumentParser(prog="python -m training.experiments", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Experiments: " + ", ".join(EXPERIMENTS) + ". See docs/results.md.")
    p.add_argument("name", choices=list(EXPERIMENTS) + ["all"], help="which experiment")
    p.add_argument("--dataset", default=defaults.dataset, choices=("gtsrb32", "cifar10"))
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--limit-train", type=int, default=defaults.limit_train,
                   help=f"training images (seeded subset; default {defaults.limit_train}; 0 = all)")
    p.add_argument("--limit-eval", type=int, default=defaults.limit_eval,
                   help=f"val and test images each (default {defaults.limit_eval}; 0 = all)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--out", default=defaults.out, help=f"results and cached runs (default {defaults.out})")
    p.add_argument("--data-dir", default=None, help="folder holding gtsrb32/ and cifar10/ (else $EDGE_ANYTIME_DATA)")
    p.add_argument("--threads", type=int, default=defaults.threads,
                   help="torch CPU threads (default 1: tiny models on shared cores run fastest single-threaded)")
    p.add_argument("--device", default=defaults.device, choices=("auto", "cpu", "cuda"))
    p.add_argument("--channels-last", action="store_true",
                   help="train in channels_last memory format (faster for ResANNs on CPU; a cached run made "
                        "without it is trained again)")
    p.add_argument("--schemes", default=None,
                   help="weighting: comma-separated schemes to train (default: all; e.g. const,linear); budgets: the "
                        "weightings its cross table shows besides const and impatient-* (default: all)")
    p.add_argument("--opt-exits", default=None,
                   help="weighting only: comma-separated exits (1-based, as in its tables) that get an OPT network "
                        "(default 1,2,4,6)")
    p.add_argument("--reference", default=None,
                   help="resnext-solo only: comma-separated result JSONs of earlier experiments (same schedule) "
                        "whose runs it takes by tag instead of training them (first file wins), e.g. "
                        "docs/experiments/gtsrb32-full-6ep/budgets.json")
    p.add_argument("--figures", default=None, help="also copy plots into this folder (e.g. docs/figures)")
    p.add_argument("--log-every", type=int, default=defaults.log_every, help="batches between progress lines")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of markdown tables")
    args = p.parse_args(argv)
    config = ExperimentConfig(dataset=args.dataset, epochs=args.epochs, limit_train=args.limit_train or None,
                              limit_eval=args.limit_eval or None, batch_size=args.batch_size, lr=args.lr,
                              seed=args.seed, out=args.out, data_dir=args.data_dir, threads=args.threads,
                              figures=args.figures, device=args.device, log_every=args.log_every,
                              channels_last=args.channels_last, schemes=_names(args.schemes),
                              opt_exits=_exits(p, args.opt_exits), references=_names(args.reference))
    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    return names, config, args.json


def _names(text: str | None) -> tuple[str, ...] | None:
    """'a, b' -> ('a', 'b'); None stays None."""
    return None if text is None else tuple(t.strip() for t in text.split(",") if t.strip())


def _exits(p: argparse.ArgumentParser, text: str | None) -> tuple[int, ...] | None:
    """--opt-exits '1,6' (1-based, as the tables print them) -> (0, 5)."""
    if text is None:
        return None
    try:
        exits = tuple(int(k) - 1 for k in _names(text) or ())
    except ValueError:
        p.error(f"--opt-exits takes comma-separated exit numbers, got {text!r}")
    if not exits or min(exits) < 0:
        p.error(f"--opt-exits takes exit numbers from 1, got {text!r}")
    return exits


def main(argv: list[str] | None = None) -> int:
    import torch

    names, config, as_json = parse_args(argv)
    torch.set_num_threads(config.threads)
    for name in names:
        started = time.time()
        print(f"[experiments] {name}: {config}", file=sys.stderr if as_json else sys.stdout, flush=True)
        result = run_experiment(name, config)
        wall = time.time() - started
        if as_json:
            print(json.dumps({**result, "wall_seconds": wall}, indent=1, default=str))
        else:
            print("\n\n".join(t["markdown"] for t in result["tables"]))
            if result.get("answer"):
                print("\n" + result["answer"])
            if result.get("curves_table"):
                print("\n" + result["curves_table"]["markdown"])
            print(f"\n[experiments] {name}: {wall:.0f}s wall, {result['train_seconds']:.0f}s training; "
                  f"wrote {config.out}/{name}.json and {config.out}/{name}.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
