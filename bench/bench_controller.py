"""Controller overhead on real LiteRT stages, measured side by side in one run.

    .venv/bin/python bench/bench_controller.py [--bundle deploy/bundles/gtsrb-resann] [--frames 2000] [--json OUT]

Interleaves, frame by frame on the same real GTSRB test images:
  bare   - the stage program's interpreter calls chained with edge_anytime.runners.run_program
           (same files, 1 thread each, no controller),
  inline - Controller.run with the default options: the steps on the caller's thread,
  run    - Controller.run with ControllerOptions(threaded=True) (inference thread, timed hand-back).
Prints medians and the ratios inline/bare (target <= 1.15) and threaded/bare (target <= 1.25), and the
per-step overhead in microseconds ((controller - bare) / steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_anytime import Bundle, Controller, ControllerOptions  # noqa: E402
from edge_anytime.preprocess import Preprocessor  # noqa: E402
from edge_anytime.runners import close_runners, load_runners, run_program  # noqa: E402


def test_frames(count: int) -> np.ndarray:
    try:
        from training.data import load_split

        x, _ = load_split("gtsrb32", "test")
        return x[:count]
    except Exception:  # data not available: random frames still measure overhead
        return np.random.default_rng(0).integers(0, 255, (count, 32, 32, 3), dtype=np.uint8)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="deploy/bundles/gtsrb-resann")
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    bundle = Bundle.load(args.bundle)
    frames = test_frames(min(args.frames, 2000))
    options = ControllerOptions(warmup_runs=20)
    ctrl = Controller.from_bundle(bundle, options=dataclasses.replace(options, threaded=True))
    inline = Controller.from_bundle(bundle, options=options)
    program = bundle.program
    runners = load_runners(bundle, bundle.resolve_precisions(options.precision))   # same files, own interpreters
    preprocess = Preprocessor(bundle.model.input)
    steps = program.steps

    def bare(frame):
        return run_program(program, runners, preprocess(frame))

    timings = {"bare": [], "inline": [], "run": []}
    budget = 1.0
    for i in range(args.frames):
        frame = frames[i % len(frames)]
        for name in ("bare", "inline", "run") if i % 2 == 0 else ("run", "inline", "bare"):
            t0 = time.perf_counter()
            if name == "bare":
                bare(frame)
            elif name == "inline":
                result = inline.run(frame, budget)
                assert result.steps_run == len(steps), result
            else:
                result = ctrl.run(frame, budget)
                assert result.steps_run == len(steps), result
            timings[name].append(time.perf_counter() - t0)
    ctrl.close()
    inline.close()
    close_runners(runners)
    median = {k: statistics.median(v) for k, v in timings.items()}
    n_steps = len(steps)
    report = {
        "bundle": str(args.bundle), "frames": args.frames, "steps_per_frame": n_steps,
        "median_us": {k: round(v * 1e6, 1) for k, v in median.items()},
        "ratio_inline_vs_bare": round(median["inline"] / median["bare"], 3),
        "ratio_run_vs_bare": round(median["run"] / median["bare"], 3),
        "overhead_per_step_us_inline": round((median["inline"] - median["bare"]) / n_steps * 1e6, 1),
        "overhead_per_step_us_run": round((median["run"] - median["bare"]) / n_steps * 1e6, 1),
        "targets": {"ratio_inline": 1.15, "ratio_threaded": 1.25},
        "load_average": os.getloadavg(),
    }
    print(f"staged plan, {n_steps} steps/frame, {args.frames} frames, medians: "
          f"bare {report['median_us']['bare']} us, controller inline {report['median_us']['inline']} us, "
          f"controller threaded {report['median_us']['run']} us")
    print(f"ratio controller/bare: inline (default) {report['ratio_inline_vs_bare']} (target <= 1.15), "
          f"threaded {report['ratio_run_vs_bare']} (target <= 1.25); load average {os.getloadavg()}")
    print(f"overhead per step: inline {report['overhead_per_step_us_inline']} us, "
          f"threaded {report['overhead_per_step_us_run']} us")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
