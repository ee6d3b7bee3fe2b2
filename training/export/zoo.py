"""Tiny configurations of every registered architecture, exported end to end with the real pipeline.

Used by tests/test_export_zoo.py and for the per-architecture table in docs/export.md:

    python -m training.export.zoo [--arch ID ...] [--precision fp32,int8] [--cache-dir DIR]

builds each tiny model (random weights; BatchNorm statistics from a few batches of real training
images), exports it to a bundle (GTSRB crops of `--size` pixels, calibration and parity on real
images when the data are there, random pixels otherwise) and prints a markdown table: graphs,
steps, exits, fp32 max |delta logits| against torch, int8 argmax agreement with torch, export time.
Without --cache-dir every conversion is cold (a fresh temporary cache).

>>> sorted(CASES)[:3]
['anytimenet', 'anytimenet-baseline', 'anytimenet-paper']
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .options import ExportOptions

SIZE = 16
CLASSES = 43  # GTSRB: the hierarchical heads use its 6 superclasses


@dataclass(frozen=True)
class ZooCase:
    """One tiny export: `arch` built with `kwargs`; `slow` ones are left to `pytest -m slow`."""

    id: str
    arch: str
    kwargs: Mapping[str, Any]
    what: str
    precisions: tuple[str, ...] = ("fp32",)
    slow: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


CASES: dict[str, ZooCase] = {c.id: c for c in (
    ZooCase("resann", "resann", dict(widths=(4, 8, 8)),
            "3 segments + 3 heads; segment1 output (1, 8, 8, 8) is cubic"),
    ZooCase("resann-spatial", "resann", dict(widths=(4, 8, 8), head_pool=(4, 2, 2), head_conv=(4, 0, 0)),
            "exit heads that keep a 4x4 / 2x2 grid (AveragePool, NCHW flatten into the Linear), a 3x3 conv "
            "in head 0", precisions=("fp32", "int8")),
    ZooCase("resann-boosted", "resann", dict(widths=(4, 8, 8), head_pool=2, head_boost=True),
            "boosted exits: head1 and head2 take the previous exit's (1, 43) logits beside their (1, C, H, W) "
            "features (two inputs of different rank in one graph; int8 calibrated on both)",
            precisions=("fp32", "int8")),
    ZooCase("anytimenet", "anytimenet", dict(widths=(4, 8, 8), schedule=((1, 1),), iteration_bn="shared"),
            "re-executed segments: sec3_grp0 and the shared OUT run twice; sec3_grp0 reads a cubic "
            "(1, 8, 8, 8) input through a strided-slice shortcut"),
    ZooCase("anytimenet-iteration-bn", "anytimenet", dict(widths=(4, 8, 8), schedule=((1, 1),), iteration_bn="affine"),
            "per-iteration BatchNorm: sec3_grp0 and OUT get one graph per iteration (convolutions and Linear "
            "shared in torch, stored once per graph); int8 calibrated on each iteration's own inputs",
            precisions=("fp32", "int8")),
    ZooCase("anytimenet-baseline", "anytimenet-baseline", dict(widths=(4, 8, 8), blocks=(1, 1, 1)),
            "single exit, one graph per section"),
    ZooCase("eann", "eann", dict(num_anns=2, base_units=1, width=4, exit_period=3, keep_exits=(0, 2)),
            "two independent networks; exit 1 dropped by keep_exits"),
    ZooCase("i-resnext", "i-resnext", dict(blocks=3, width=8, num_subnets=2, bottleneck=2, cardinality=2),
            "independent sub-networks (own BN layers), each from the image"),
    ZooCase("is-resnext-hier", "is-resnext",
            dict(blocks=3, width=6, num_subnets=3, bottleneck=2, cardinality=3, hierarchical=True),
            "slices read the cached slices of every layer (5 inputs, 4 outputs, cubic (1, 8, 8, 8) ones); "
            "hierarchical heads with a coarse output", precisions=("fp32", "int8")),
    ZooCase("is-resnext", "is-resnext", dict(blocks=6, width=6, num_subnets=3, bottleneck=2, cardinality=3),
            "8 inputs and 7 outputs per slice graph, 5 of one shape", slow=True),
    ZooCase("i-resnext-hier", "i-resnext",
            dict(blocks=3, width=8, num_subnets=2, bottleneck=2, cardinality=2, hierarchical=True),
            "hierarchical heads on independent sub-networks", slow=True),
    ZooCase("anytimenet-paper", "anytimenet", dict(widths=(4, 8, 8), iteration_bn="shared"),
            "the paper's 7-iteration schedule: 11 graphs for 23 steps, OUT shared by 7; int8 calibrated on "
            "the inputs of every step", precisions=("fp32", "int8"), slow=True),
    ZooCase("anytimenet-own-out", "anytimenet", dict(widths=(4, 8, 8), schedule=((0, 1), (2, 1)), shared_out=False,
                                                     iteration_bn="shared"),
            "one OUT per iteration", slow=True),
)}


def bn_statistics(model, images: np.ndarray, batches: int = 4, batch_size: int = 16) -> None:
    """Running BatchNorm statistics from a few batches of real (preprocessed) images; eval mode after."""
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    model.train()
    with torch.no_grad():
        for start in range(0, min(len(images), batches * batch_size), batch_size):
            model(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size], np.float32)))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def zoo_frames(size: int = SIZE, data_dir: str | Path | None = None, calib: int = 64, test: int = 32,
               seed: int = 0) -> dict[str, Any]:
    """Centre crops of real GTSRB images (train split for calibration, test split for parity), or random
    pixels when the data are missing (then `real` is False)."""
    rng = np.random.default_rng(seed)
    lo = (32 - size) // 2
    try:
        from ..data import load_split

        x_train, _ = load_split("gtsrb32", "train", data_dir)
        x_test, y_test = load_split("gtsrb32", "test", data_dir)
        i_train = np.sort(rng.choice(len(x_train), calib, replace=False))
        i_test = np.sort(rng.choice(len(x_test), test, replace=False))
        return {"calib": np.ascontiguousarray(x_train[i_train, lo:lo + size, lo:lo + size]),
                "test": np.ascontiguousarray(x_test[i_test, lo:lo + size, lo:lo + size]),
                "labels": np.asarray(y_test[i_test]), "real": True}
    except Exception:  # no data here: random pixels still exercise every conversion
        return {"calib": rng.integers(0, 256, (calib, size, size, 3), dtype=np.uint8),
                "test": rng.integers(0, 256, (test, size, size, 3), dtype=np.uint8),
                "labels": rng.integers(0, CLASSES, test), "real": False}


def build(case: ZooCase, frames: Mapping[str, Any], size: int = SIZE, seed: int = 0):
    """(model in eval mode, its StagedModel, ExportInputs) for a case."""
    import torch

    from ..models import create_model
    from .modelinfo import dataset_model_info
    from .pipeline import ExportInputs, preprocess

    model_info = dataset_model_info("gtsrb32", case.arch, f"zoo-{case.id}", (1, 3, size, size))
    torch.manual_seed(seed)
    model = create_model(case.arch, num_classes=CLASSES, **dict(case.kwargs))
    bn_statistics(model, preprocess(model_info, frames["calib"]))
    staged = model.stage_program(torch.zeros(1, 3, size, size))
    inputs = ExportInputs(staged, model_info, frames["calib"], frames["test"], frames["labels"],
                          source={"zoo_case": case.id, "arch": case.arch, "arch_kwargs": _jsonable(case.kwargs)})
    return model, staged, inputs


def options(case: ZooCase, cache_dir: str | Path | None, work_dir: str | Path | None = None,
            precisions: Sequence[str] | None = None, frames: Mapping[str, Any] | None = None) -> ExportOptions:
    calib = len(frames["calib"]) if frames else 64
    test = len(frames["test"]) if frames else 32
    return ExportOptions(precisions=tuple(precisions or case.precisions), calib_samples=calib, parity_samples=test,
                         self_test_samples=4, cache_dir=Path(cache_dir) if cache_dir else None,
                         work_dir=Path(work_dir) if work_dir else None)


def _jsonable(value):
    return json.loads(json.dumps(value, default=list))


def table_row(case: ZooCase, summary, bundle, seconds: float) -> dict:
    """The docs/export.md numbers of one export."""
    report = json.loads((bundle.root / "parity.json").read_text())
    program = bundle.program
    fp32 = report["backends"]["litert:fp32"]["exits"]
    row = {"case": case.id, "arch": case.arch, "graphs": len(program.graphs), "steps": len(program.steps),
           "exits": len(program.exits), "fp32_max_abs_delta": max(r["max_abs_delta"] for r in fp32),
           "fp32_min_agreement": min(r["argmax_agreement"] for r in fp32),
           "coarse_fp32_max_abs_delta": max((r["coarse"]["max_abs_delta"] for r in fp32 if "coarse" in r), default=None),
           "seconds": round(seconds, 1),
           "converted": sum(not next(iter(per.values())).get("cached", True) for per in summary.graphs.values())}
    if "litert:int8" in report["backends"]:
        int8 = report["backends"]["litert:int8"]["exits"]
        row["int8_agreement"] = [r["argmax_agreement"] for r in int8]
        row["int8_max_abs_delta"] = max(r["max_abs_delta"] for r in int8)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export.zoo", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", action="append", choices=sorted(CASES), help="case id (repeatable; default: all)")
    parser.add_argument("--precision", default=None, help="comma list (default: fp32,int8 for every case)")
    parser.add_argument("--size", type=int, default=SIZE, help="image crop size (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="conversion cache (default: a fresh one: cold)")
    parser.add_argument("--out", type=Path, default=None, help="keep the bundles here (default: removed)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of the markdown table")
    args = parser.parse_args(argv)
    from edge_anytime.bundle import Bundle

    from .pipeline import export_bundle

    precisions = tuple(p for p in (args.precision or "fp32,int8").split(",") if p)
    scratch = Path(tempfile.mkdtemp(prefix="edge_anytime-zoo-"))
    cache = args.cache_dir or scratch / "cache"
    out_root = args.out or scratch / "bundles"
    frames = zoo_frames(args.size, args.data_dir)
    rows = []
    try:
        for case_id in args.arch or list(CASES):
            case = CASES[case_id]
            _, _, inputs = build(case, frames, args.size)
            started = time.perf_counter()
            summary = export_bundle(inputs, out_root / case.id, options(case, cache, None, precisions, frames))
            seconds = time.perf_counter() - started
            rows.append(table_row(case, summary, Bundle.load(out_root / case.id), seconds))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"data: {'real GTSRB crops' if frames['real'] else 'random pixels'} {args.size}x{args.size}, "
          f"{len(frames['calib'])} calibration / {len(frames['test'])} parity images; precisions {','.join(precisions)}")
    print()
    print("| case | graphs | steps | exits | fp32 max abs delta | int8 argmax agreement per exit | export time |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        int8 = " / ".join(f"{a:.0%}" for a in r["int8_agreement"]) if "int8_agreement" in r else "-"
        coarse = f" (coarse {r['coarse_fp32_max_abs_delta']:.1e})" if r["coarse_fp32_max_abs_delta"] is not None else ""
        print(f"| {r['case']} | {r['graphs']} | {r['steps']} | {r['exits']} | {r['fp32_max_abs_delta']:.1e}{coarse} | "
              f"{int8} | {r['seconds']:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
