"""A/B of the controller: a commit's `edge_anytime` against the working tree's, on the same frames, interleaved.

    .venv/bin/python bench/bench_ab.py --against HEAD~1 [--frames 1000] [--fresh LOADS] [--bundle deploy/bundles/gtsrb-resann]

How a runtime change is judged before it lands (docs/results.md reports these runs): the package of commit
`--against` is extracted (`git archive`) into a temporary folder as the package `ea_ref` (the package imports
itself relatively, so both load side by side in one process), both controllers load the bundle with their
defaults, and every frame runs through static exit 0 (the bare chain, deadline-unaware), the reference and the
working tree's controller in a shuffled order (bench_budgets.shuffled_orders), each timed around its call. Scenarios: constant budgets of 0.5x,
0.6x, 0.8x and 1.0x the full model's median latency and four speed traces (bench/budget_traces.py, seed 0).
`--crowded`: static exits 1 and 2 and static int8 exit 0 (each with its own interpreters) run on every frame
too, so each controller runs on caches larger graphs left, as in bench_budgets.py's real clock; adds 1.2x and
1.4x.
Columns: on time and correct, calls that returned after the deadline (%). Pin it to a core
(`taskset -c 0`) and run nothing else beside it: it measures differences of microseconds.

`--fresh LOADS`: fresh controllers instead (what a controller does from its first frame): per load, both
controllers are loaded anew and serve FRESH_FRAMES frames, interleaved, at 0.75x, 1.0x and 1.3x the full model's
median; on time and correct (frames 0-31, the estimators' seed phase, and 32-63) and explorations. Run it
unpinned when the bundle's profile was measured unpinned (a profile is used only on a host with the same number
of usable CPUs).
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_budgets import Unaware, interleaved, scenarios, side_by_side  # noqa: E402
from edge_anytime import Bundle, Controller  # noqa: E402
from edge_anytime.runners import close_runners, load_runners  # noqa: E402

REFERENCE_PACKAGE = "ea_ref"
SCENARIOS = ("constant 0.5x full", "constant 0.6x full", "constant 0.8x full", "constant 1.0x full",
             "speed cruise #0", "speed sweep #0", "speed stop-and-go #0", "speed random #0")   # bench_budgets' names
CROWDED_SCENARIOS = SCENARIOS[:4] + ("constant 1.2x full", "constant 1.4x full") + SCENARIOS[4:]


def import_reference(ref: str, folder: Path):
    """`edge_anytime` as of git commit `ref`, imported as the package `ea_ref` from `folder`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "edge_anytime"], check=True,
                             capture_output=True).stdout
    tar_path = folder / "ref.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(folder, filter="data")
    (folder / "edge_anytime").rename(folder / REFERENCE_PACKAGE)
    sys.path.insert(0, str(folder))
    return importlib.import_module(REFERENCE_PACKAGE)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the git commit whose controller is the reference")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--bundle", default=str(ROOT / "deploy/bundles/gtsrb-resann"))
    parser.add_argument("--fresh", type=int, default=0, metavar="LOADS",
                        help="compare fresh controllers over this many loads instead (see above)")
    parser.add_argument("--crowded", action="store_true",
                        help="static exits 1 and 2 and static int8 exit 0 run on every frame too (see above)")
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as folder:
        reference = import_reference(args.against, Path(folder))
        if args.fresh:
            return fresh_ab(reference, args)
        bundle = Bundle.load(args.bundle)
        setup = side_by_side(bundle, args.frames)
        frames, stamps = setup.frames, setup.stamps
        n, full, first = len(frames), setup.full_s, setup.first_s
        controllers = {f"ref {args.against}": reference.Controller.from_bundle(args.bundle),
                       "working tree": Controller.from_bundle(bundle)}
        for ctrl in controllers.values():      # settle: online estimates of this host and stream
            for i in range(min(n, 500)):
                ctrl.run(frames[i], 10 * full)
        crowd, crowd_runners = {}, []
        if args.crowded:      # each with its own interpreters, as separate tools would have
            for name, precision, k in (("static:1", "fp32", 1), ("static:2", "fp32", 2), ("static:0/int8", "int8", 0)):
                crowd_runners.append(load_runners(bundle, bundle.resolve_precisions(precision)))
                crowd[name] = (Unaware(bundle, crowd_runners[-1]), k)
        wanted = CROWDED_SCENARIOS if args.crowded else SCENARIOS
        chosen = {name: budgets for name, budgets in scenarios(stamps, full, first, 1, n).items()
                  if name in wanted}
        names = ["static:0", *crowd, *controllers]
        report = {}
        try:
            for scenario, budgets in chosen.items():
                good, late = interleaved(setup, budgets, controllers, crowd)
                report[scenario] = {name: {"on_time_correct": good[name] / n, "late": late[name] / n}
                                    for name in names}
                print(f"{scenario:<22}" + "".join(f"  {name}: {good[name] / n * 100:5.1f} (late {late[name] / n * 100:5.1f})"
                                                  for name in names), flush=True)
        finally:
            for ctrl in controllers.values():
                ctrl.close()
            for runners in crowd_runners:
                close_runners(runners)
    print(f"on time and correct % (calls returned late %); load average at the end {os.getloadavg()}")
    return report


FRESH_FRAMES = 64
FRESH_BUDGETS = (0.75, 1.0, 1.3)   # x the full model's median (bare chain)


def fresh_ab(reference, args) -> dict:
    """`--fresh`: per load, both controllers anew, FRESH_FRAMES frames each, interleaved (see the docstring)."""
    from bench.bench_deadline import full_plan_latency, test_set

    bundle = Bundle.load(args.bundle)
    frames, labels = test_set(2000)
    median, _ = full_plan_latency(bundle, frames, 500)
    names = (f"ref {args.against}", "working tree")
    report = {}
    for factor in FRESH_BUDGETS:
        budget = factor * median
        good = {name: np.zeros((args.fresh, FRESH_FRAMES), bool) for name in names}
        explorations = dict.fromkeys(names, 0)
        for load in range(args.fresh):
            controllers = {names[0]: reference.Controller.from_bundle(args.bundle),
                           names[1]: Controller.from_bundle(bundle)}
            try:
                for i in range(FRESH_FRAMES):
                    j = (load * 13 + i) % len(frames)
                    order = names if (i + load) % 2 else names[::-1]
                    for name in order:
                        t0 = time.perf_counter()
                        result = controllers[name].run(frames[j], budget)
                        elapsed = time.perf_counter() - t0
                        good[name][load, i] = (elapsed <= budget and result.best is not None
                                               and (labels is None or result.label == labels[j]))
            finally:
                for name, ctrl in controllers.items():
                    explorations[name] += ctrl.stats().explorations
                    ctrl.close()
        half = FRESH_FRAMES // 2
        report[f"{factor}x"] = {name: {"on_time_correct": float(good[name].mean()),
                                       "frames_0_31": float(good[name][:, :half].mean()),
                                       "frames_32_63": float(good[name][:, half:].mean()),
                                       "explorations": explorations[name]} for name in names}
        print(f"fresh, {factor}x the full model's median ({budget * 1e3:.3f} ms), {args.fresh} loads: " + "; ".join(
            f"{name}: {good[name].mean() * 100:.2f}% (frames 0-{half - 1} {good[name][:, :half].mean() * 100:.2f}, "
            f"{half}-{FRESH_FRAMES - 1} {good[name][:, half:].mean() * 100:.2f}), explorations {explorations[name]}"
            for name in names), flush=True)
    print(f"on time and correct %; load average at the end {os.getloadavg()}")
    return report


if __name__ == "__main__":
    main()
