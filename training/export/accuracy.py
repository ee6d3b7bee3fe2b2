"""Per-exit accuracy of an exported bundle through LiteRT, on a whole labelled test split.

Every frame is preprocessed as on the device (`edge_anytime.preprocess.Preprocessor`) and chained
through the bundle's graphs one frame at a time (`parity.chain_logits`, the device's
`runners.run_program`), so the figures include every layout transpose and (de)quantisation of the
deployed path. For each precision: top-1 accuracy per exit, and argmax agreement with fp32.

    python -m training.export.accuracy --bundle deploy/bundles/gtsrb-resann --precision fp32,int8
    python -m training.export.accuracy --bundle deploy/bundles/gtsrb-resann --precision fp32 --split val --ensembles

prints a markdown table and, with --json FILE, writes the figures. The default is every one of the
12,630 GTSRB test frames (about a minute per precision for the demo bundle on one core).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ExitAccuracy:
    precision: str
    exit: int
    accuracy: float
    agreement_with_fp32: float  # argmax agreement with the fp32 graphs on the same frames
    frames: int


def _labelled_images(bundle, split: str, limit: int | None, data_dir: str | None, dataset: str | None):
    """The split's frames preprocessed as on the device, and their labels."""
    from ..data import load_split
    from .pipeline import preprocess

    dataset = dataset or bundle.model.dataset
    if not dataset:
        raise ValueError(f"{bundle.root} does not name its dataset in manifest.json; pass --dataset")
    frames, labels = load_split(dataset, split, data_dir)
    if limit is not None:
        frames, labels = frames[:limit], labels[:limit]
    return preprocess(bundle.model, frames), labels


def _exit_logits(bundle, precision: str, images: np.ndarray, threads: int) -> dict[str, np.ndarray]:
    """Every exit tensor of the bundle's `precision` graphs, chained on LiteRT frame by frame."""
    from edge_anytime.backends import GraphLoadSpec, create_backend

    from .parity import chain_logits

    backend = create_backend("litert", num_threads=threads)
    program = bundle.program
    runners = {g: backend.load_graph(GraphLoadSpec(program.graphs[g], precision, bundle.graph_file(g, precision),
                                                   bundle.path_of(bundle.graph_file(g, precision).path)))
               for g in program.graphs}
    return chain_logits(program, runners, images)


def _evaluate(bundle_dir, precisions: Sequence[str], split: str, limit: int | None, data_dir: str | None,
              threads: int, dataset: str | None):
    """(rows of `bundle_accuracy`, the bundle, the fp32 logits, the labels)."""
    from edge_anytime.bundle import Bundle

    bundle = Bundle.load(bundle_dir)
    missing = [p for p in precisions if p not in bundle.precisions()]
    if missing:
        raise ValueError(f"{bundle_dir} has no {missing} graphs (it has {list(bundle.precisions())}); "
                         f"export with --precision {','.join(dict.fromkeys(['fp32', *precisions]))}")
    images, labels = _labelled_images(bundle, split, limit, data_dir, dataset)
    logits = {p: _exit_logits(bundle, p, images, threads) for p in dict.fromkeys(["fp32", *precisions])}
    rows = []
    for precision, out in logits.items():
        for exit_ in bundle.program.exits:
            got, ref = out[exit_.tensor].argmax(-1), logits["fp32"][exit_.tensor].argmax(-1)
            rows.append(ExitAccuracy(precision, exit_.index, float(np.mean(got == labels)), float(np.mean(got == ref)),
                                     len(labels)))
    return rows, bundle, logits["fp32"], labels


def bundle_accuracy(bundle_dir: str | Path, precisions: Sequence[str] = ("fp32",), split: str = "test",
                    limit: int | None = None, data_dir: str | None = None, threads: int = 1,
                    dataset: str | None = None) -> list[ExitAccuracy]:
    """Accuracy of every exit of the bundle at each precision (fp32 is always run: the agreement reference)."""
    return _evaluate(bundle_dir, precisions, split, limit, data_dir, threads, dataset)[0]


def exit_ensembles(program, logits: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """Accuracy of exit ensembles: the average of calibrated probabilities (each exit's softmax at its
    temperature) of exits k-1 and k, and of exits 0..k, for every exit k >= 1 (by name, e.g. 'exits 1+2').
    An ensemble of exits the anytime plan has already run costs nothing more (Zero Time Waste's idea; EANN's
    running average over members)."""
    probs = []
    for exit_ in program.exits:
        z = logits[exit_.tensor] / (exit_.temperature or 1.0)
        e = np.exp(z - z.max(-1, keepdims=True))
        probs.append(e / e.sum(-1, keepdims=True))
    out = {}
    for k in range(1, len(probs)):
        out[f"exits {k - 1}+{k}"] = float(np.mean((probs[k - 1] + probs[k]).argmax(-1) == labels))
        if k > 1:
            out[f"exits 0..{k}"] = float(np.mean(sum(probs[:k + 1]).argmax(-1) == labels))
    return out


def ensemble_accuracy(bundle_dir: str | Path, split: str = "test", limit: int | None = None,
                      data_dir: str | None = None, dataset: str | None = None) -> dict[str, float]:
    """fp32 accuracy of the bundle's exit ensembles (see `exit_ensembles`) on a labelled split."""
    from edge_anytime.bundle import Bundle

    bundle = Bundle.load(bundle_dir)
    images, labels = _labelled_images(bundle, split, limit, data_dir, dataset)
    return exit_ensembles(bundle.program, _exit_logits(bundle, "fp32", images, 1), labels)


def format_table(rows: Sequence[ExitAccuracy]) -> str:
    lines = ["| precision | exit | top-1 | argmax agreement with fp32 | frames |", "|---|---|---|---|---|"]
    lines += [f"| {r.precision} | {r.exit} | {100 * r.accuracy:.2f}% | {100 * r.agreement_with_fp32:.2f}% | "
              f"{r.frames:,} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[ExitAccuracy]:
    p = argparse.ArgumentParser(prog="python -m training.export.accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="bundle folder")
    p.add_argument("--precision", default="fp32,int8", help="comma-separated precisions to run (fp32 always runs)")
    p.add_argument("--split", default="test", choices=("test", "val", "train", "trainval"))
    p.add_argument("--limit", type=int, default=None, help="first N frames only")
    p.add_argument("--dataset", default=None, help="dataset of the frames (default: the one in manifest.json)")
    p.add_argument("--data-dir", default=None, help="folder holding the datasets (else $EDGE_ANYTIME_DATA)")
    p.add_argument("--threads", type=int, default=1, help="LiteRT threads")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--ensembles", action="store_true",
                   help="also print fp32 exit ensembles (averaged calibrated probabilities of consecutive exits)")
    args = p.parse_args(argv)
    started = time.time()
    rows, bundle, fp32, labels = _evaluate(args.bundle, [s.strip() for s in args.precision.split(",") if s.strip()],
                                           args.split, args.limit, args.data_dir, args.threads, args.dataset)
    print(format_table(rows))
    if args.ensembles:   # from the fp32 logits already chained
        ensembles = exit_ensembles(bundle.program, fp32, labels)
        print("\nfp32 exit ensembles: " + ", ".join(f"{name} {100 * acc:.2f}%" for name, acc in ensembles.items()))
    print(f"\n{args.bundle}, {args.split} split, {time.time() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
