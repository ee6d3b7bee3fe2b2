"""Deadline soak on the real clock with real LiteRT stages, and pWCET estimators side by side.

    .venv/bin/python bench/bench_deadline.py [--bundle deploy/bundles/gtsrb-resann] [--frames 100000] [--json OUT]

1. Measures the first exit's latency distribution through Controller.run (p99.9).
2. Serves --frames real GTSRB test frames with budgets drawn uniformly between that p99.9 and 1.5x the
   full plan's p99.9, on the real clock (inference thread + watchdog), and reports: frames without a
   result by deadline + 1 ms (target: 0), the distribution of result-delivery lateness, exits reached,
   and the controller's counters.
3. Runs the same budgets with two controllers in alternation -- the default quantile estimator and a
   Gaussian mean + 3 sigma estimator -- and prints each one's step-overrun rate (a step slower than the
   pWCET it was admitted with; the quantile targets 0.1%) and late-step count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_anytime import Bundle, Controller, ControllerOptions, EstimatorOptions  # noqa: E402
from bench.bench_controller import test_frames  # noqa: E402


def percentiles(values, qs=(50, 90, 99, 99.9, 100)) -> dict:
    arr = np.asarray(values) * 1e3
    return {f"p{q}": round(float(np.percentile(arr, q)), 4) for q in qs}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="deploy/bundles/gtsrb-resann")
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--compare-frames", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    bundle = Bundle.load(args.bundle)
    frames = test_frames(2000)
    rng = np.random.default_rng(args.seed)
    with Controller.from_bundle(bundle, options=ControllerOptions(warmup_runs=50)) as ctrl:
        first, full = [], []
        for i in range(2000):
            result = ctrl.run(frames[i % len(frames)], 1.0)
            first.append(result.exits[0].elapsed_s)
            full.append(result.delivered_s - result.start_s)
        p999_first = float(np.percentile(first, 99.9))
        p999_full = float(np.percentile(full, 99.9))
        low, high = p999_first + ctrl.options.margin_s, 1.5 * p999_full
        print(f"first exit p99.9 {p999_first * 1e3:.3f} ms, full plan p99.9 {p999_full * 1e3:.3f} ms; "
              f"budgets uniform in [{low * 1e3:.3f}, {high * 1e3:.3f}] ms")
        lateness, no_result, exits = [], 0, np.zeros(len(bundle.program.exits) + 1, int)
        t0 = time.perf_counter()
        for i in range(args.frames):
            result = ctrl.run(frames[i % len(frames)], float(rng.uniform(low, high)))
            lateness.append(result.delivered_s - result.deadline_s)
            if result.best is None or result.delivered_s > result.deadline_s + 1e-3:
                no_result += 1
            exits[-1 if result.exit_index is None else result.exit_index] += 1
            if i and i % 20000 == 0:
                print(f"  {i} frames, {no_result} without a result by deadline + 1 ms")
        elapsed = time.perf_counter() - t0
        stats = ctrl.stats()
    soak = {
        "frames": args.frames, "seconds": round(elapsed, 1),
        "budget_ms": [round(low * 1e3, 4), round(high * 1e3, 4)],
        "first_exit_p999_ms": round(p999_first * 1e3, 4), "full_plan_p999_ms": round(p999_full * 1e3, 4),
        "frames_without_result_by_deadline_plus_1ms": no_result,
        "lateness_ms": percentiles(lateness),
        "exit_histogram": {**{f"exit{i}": int(n) for i, n in enumerate(exits[:-1])}, "none": int(exits[-1])},
        "stats": stats.__dict__,
    }
    print(f"soak: {args.frames} frames in {elapsed:.1f} s: {no_result} without a result by deadline + 1 ms; "
          f"lateness (delivered - deadline) ms: {soak['lateness_ms']}")
    print(f"exits: {soak['exit_histogram']}; steps overrun {stats.steps_overrun}, late steps {stats.late_steps}")

    compare = {}
    controllers = {
        "quantile-0.999": Controller.from_bundle(bundle, options=ControllerOptions(warmup_runs=50)),
        "gaussian-3sigma": Controller.from_bundle(bundle, options=ControllerOptions(
            warmup_runs=50, estimator=EstimatorOptions(kind="gaussian", sigmas=3.0))),
    }
    try:
        for i in range(args.compare_frames):
            budget = float(rng.uniform(low, high))
            for ctrl in controllers.values():
                ctrl.run(frames[i % len(frames)], budget)
        for name, ctrl in controllers.items():
            s = ctrl.stats()
            compare[name] = {"steps_admitted": s.steps_admitted, "steps_overrun": s.steps_overrun,
                             "overrun_rate": round(s.steps_overrun / max(1, s.steps_admitted), 5),
                             "late_steps": s.late_steps, "missed_deadlines": s.missed_deadlines,
                             "final": s.final}
    finally:
        for ctrl in controllers.values():
            ctrl.close()
    for name, row in compare.items():
        print(f"{name:16s} overrun rate {row['overrun_rate'] * 100:.3f}% ({row['steps_overrun']}/{row['steps_admitted']}), "
              f"late steps {row['late_steps']}, missed deadlines {row['missed_deadlines']}, final {row['final']}")
    if compare["quantile-0.999"]["overrun_rate"] > 0:
        ratio = compare["gaussian-3sigma"]["overrun_rate"] / compare["quantile-0.999"]["overrun_rate"]
        print(f"gaussian/quantile overrun-rate ratio: {ratio:.1f}x")
    report = {"soak": soak, "estimators": compare}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
