"""Controller overhead on real LiteRT stages, measured side by side in one run.

    .venv/bin/python bench/bench_controller.py [--bundle deploy/bundles/gtsrb-resann] [--frames 2000] [--json OUT]

Interleaves, frame by frame on the same real GTSRB test images:
  bare   - the same steps chained by the one ProgramInterpreter's run_all (same files, 1 thread each,
           preprocessing included, no controller),
  inline - Controller.run with the default options: the steps on the caller's thread,
  run    - Controller.run with ControllerOptions(threaded=True) (inference thread, timed hand-back),
  run_shared - the same with share_caller_cpu=True (each hand-off a context switch on the caller's CPU).
Prints medians and the ratios inline/bare (target <= 1.15) and threaded/bare (target <= 1.25), and the
per-step overhead in microseconds ((controller - bare) / steps), and how long after its result's
`delivered_s` each controller call returned (what truthful accounting leaves out). Then the anatomy of an
inline frame: where the controller's own time goes (before the first step, between steps, after the last),
with warm caches and with 8 MB touched between frames (cache-cold, as in a control loop doing other work).
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
from edge_anytime.interpreter import ProgramInterpreter  # noqa: E402
from edge_anytime.runners import close_runners, load_runners  # noqa: E402


def test_frames(count: int) -> np.ndarray:
    try:
        from training.data import load_split

        x, _ = load_split("gtsrb32", "test")
        return x[:count]
    except Exception:  # data not available: random frames still measure overhead
        return np.random.default_rng(0).integers(0, 255, (count, 32, 32, 3), dtype=np.uint8)


def controller_anatomy(ctrl: Controller, frames: np.ndarray, preprocess, count: int, cold: bool) -> dict:
    """Where an inline controller's time goes, timed around its own step calls (medians, us): from the call to
    the first step (preprocessing included, and measured alone), between steps, from the last step to the
    return. `cold`: 8 MB are touched between frames, as other work in a control loop would evict the caches."""
    marks: list[tuple[float, float]] = []
    originals = [step.run for step in ctrl.interpreter.steps]

    def timed(run):
        def wrapper(inputs):
            start = time.perf_counter()
            out = run(inputs)
            marks.append((start, time.perf_counter()))
            return out
        return wrapper

    for step, run in zip(ctrl.interpreter.steps, originals):
        step.run = timed(run)
    junk = np.ones(8 << 20, np.uint8)
    pre, between, post, own, prep = [], [], [], [], []
    try:
        for i in range(count):
            frame = frames[i % len(frames)]
            if cold:
                junk[::64] += 1
            t0 = time.perf_counter()
            preprocess(frame)
            prep.append(time.perf_counter() - t0)
            if cold:
                junk[::64] += 1
            marks.clear()
            t0 = time.perf_counter()
            ctrl.run(frame, 1.0)
            t1 = time.perf_counter()
            pre.append(marks[0][0] - t0)
            post.append(t1 - marks[-1][1])
            gaps = [marks[k + 1][0] - marks[k][1] for k in range(len(marks) - 1)]
            between.append(sum(gaps) / max(1, len(gaps)))
            own.append(t1 - t0 - sum(b - a for a, b in marks) - prep[-1])
    finally:
        for step, run in zip(ctrl.interpreter.steps, originals):
            step.run = run
    us = lambda v: round(float(np.median(v)) * 1e6, 1)  # noqa: E731
    return {"call_to_first_step": us(pre), "preprocess": us(prep), "between_steps": us(between),
            "last_step_to_return": us(post), "controller_work": us(own)}


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
    shared = Controller.from_bundle(bundle, options=dataclasses.replace(options, threaded=True, share_caller_cpu=True))
    inline = Controller.from_bundle(bundle, options=options)
    program = bundle.program
    runners = load_runners(bundle, bundle.resolve_precisions(options.precision))   # same files, own interpreters
    preprocess = Preprocessor(bundle.model.input)
    # the controller runs the anytime plan up to its best exit (validation accuracy; a worse exit after it
    # is never run): the bare chain runs the same steps
    best = max(range(len(program.exits)), key=lambda k: (program.exits[k].val_accuracy or 0.0, k))
    steps = program.steps[:program.exit_step(best) + 1]
    interpreter = ProgramInterpreter(program, runners)
    bound = interpreter.steps[:len(steps)]

    def bare(frame):
        return interpreter.run_all(preprocess(frame), steps=bound)

    controllers = {"inline": inline, "run": ctrl, "run_shared": shared}
    timings = {"bare": [], "inline": [], "run": [], "run_shared": []}
    after_delivered = {name: [] for name in controllers}   # the call's return minus the result's delivered_s
    budget = 1.0
    order = tuple(timings)
    for i in range(args.frames):
        frame = frames[i % len(frames)]
        for name in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            if name == "bare":
                bare(frame)
            else:
                result = controllers[name].run(frame, budget)
                assert result.steps_run == len(steps), result
            t1 = time.perf_counter()
            timings[name].append(t1 - t0)
            if name != "bare":
                after_delivered[name].append(t1 - result.delivered_s)   # the controller's clock is perf_counter
    anatomy = {state: controller_anatomy(inline, frames, preprocess, min(args.frames, 2000), cold=state == "cold")
               for state in ("warm", "cold")}
    for controller in controllers.values():
        controller.close()
    close_runners(runners)
    median = {k: statistics.median(v) for k, v in timings.items()}
    n_steps = len(steps)
    report = {
        "bundle": str(args.bundle), "frames": args.frames, "steps_per_frame": n_steps,
        "median_us": {k: round(v * 1e6, 1) for k, v in median.items()},
        "ratio_inline_vs_bare": round(median["inline"] / median["bare"], 3),
        "ratio_run_vs_bare": round(median["run"] / median["bare"], 3),
        "ratio_run_shared_vs_bare": round(median["run_shared"] / median["bare"], 3),
        "overhead_per_step_us_inline": round((median["inline"] - median["bare"]) / n_steps * 1e6, 1),
        "overhead_per_step_us_run": round((median["run"] - median["bare"]) / n_steps * 1e6, 1),
        "return_after_delivered_us": {k: {"median": round(float(np.median(v)) * 1e6, 2),
                                          "p99": round(float(np.percentile(v, 99)) * 1e6, 2),
                                          "max": round(float(np.max(v)) * 1e6, 2)} for k, v in after_delivered.items()},
        "anatomy_inline_us": anatomy,
        "targets": {"ratio_inline": 1.15, "ratio_threaded": 1.25},
        "load_average": os.getloadavg(),
    }
    print(f"staged plan, {n_steps} steps/frame, {args.frames} frames, medians: "
          f"bare {report['median_us']['bare']} us, controller inline {report['median_us']['inline']} us, "
          f"controller threaded {report['median_us']['run']} us "
          f"(share_caller_cpu {report['median_us']['run_shared']} us)")
    print(f"ratio controller/bare: inline (default) {report['ratio_inline_vs_bare']} (target <= 1.15), "
          f"threaded {report['ratio_run_vs_bare']} (target <= 1.25; share_caller_cpu "
          f"{report['ratio_run_shared_vs_bare']}); load average {os.getloadavg()}")
    print(f"overhead per step: inline {report['overhead_per_step_us_inline']} us, "
          f"threaded {report['overhead_per_step_us_run']} us")
    print("run() returned after the result's delivered_s (us): " + ", ".join(
        f"{ {'inline': 'inline', 'run': 'threaded'}.get(k, 'threaded, share_caller_cpu')} median {v['median']}, "
        f"p99 {v['p99']}, max {v['max']}"
        for k, v in report["return_after_delivered_us"].items()))
    for state, a in anatomy.items():
        print(f"inline controller, caches {state} (median us): call -> first step {a['call_to_first_step']} "
              f"(preprocessing {a['preprocess']} of it), between steps {a['between_steps']}, last step -> return "
              f"{a['last_step_to_return']}; controller's own work per frame {a['controller_work']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
