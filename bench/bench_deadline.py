"""Deadline soak and cold starts on the real clock with real LiteRT stages.

    .venv/bin/python bench/bench_deadline.py [--bundle deploy/bundles/gtsrb-resann] [--frames 100000]
        [--loads 100] [--cpu-load 1.0] [--json OUT]

1. Cold starts: `--loads` fresh `Controller.from_bundle` loads; each one's FIRST frame gets a budget of 3x the
   full model's p99 latency (bare chain, measured first). Counts the loads whose first frame gets the full
   plan's answer, the best exit by validation accuracy (target: >= 99 of 100), for the default (inline) and
   the threaded controller.
   Fresh vs settled: `--fresh-loads` more fresh loads (default 20) each serve FRESH_FRAMES frames at a tight
   budget (the full model's median, where the plan's choice depends on the estimates), then SETTLE_FRAMES more,
   then FRESH_FRAMES again: a fresh controller should do what it does once settled (on time and correct, exit
   reached, time per call), from its first frame.
2. Soak (skipped with `--frames 0`): `--frames` real GTSRB test frames back to back with budgets uniform between 1x and 3x the full model's
   median latency, for the default (inline) and the threaded controller in alternating blocks; reports
   results later than deadline + 1 ms (target: 0), the lateness distribution (delivered - deadline), exits
   reached and the counters. Then the same with `--cpu-load` of a core busy in another process per core
   (both cores loaded), and once more with the documented real-time settings (SCHED_FIFO priority 50, pinned
   to one core, mlockall; each reported applied or refused). The kernel's RT throttling (95% by default)
   keeps the machine responsive meanwhile.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_anytime import Bundle, Controller, ControllerOptions  # noqa: E402
from edge_anytime.interpreter import ProgramInterpreter  # noqa: E402
from edge_anytime.preprocess import Preprocessor  # noqa: E402
from edge_anytime.runners import close_runners, load_runners  # noqa: E402
from bench.bench_controller import test_frames  # noqa: E402

BLOCK = 500   # soak: the two controllers alternate every BLOCK frames
FRESH_FRAMES = 64    # fresh vs settled: the first frames of a fresh load (its estimators' seed phase: 32 samples)
SETTLE_FRAMES = 500  # ... and the same number again after this many more


def percentiles(values, qs=(50, 90, 99, 99.9, 100)) -> dict:
    arr = np.asarray(values) * 1e3
    return {f"p{q}": round(float(np.percentile(arr, q)), 4) for q in qs}


def full_plan_latency(bundle: Bundle, frames: np.ndarray, count: int = 2000) -> tuple[float, float]:
    """Median and p99 of the whole anytime chain through the bare interpreter (preprocessing included)."""
    runners = load_runners(bundle, bundle.resolve_precisions("fp32"))
    interpreter = ProgramInterpreter(bundle.program, runners)
    prepare = Preprocessor(bundle.model.input)
    times = []
    try:
        for i in range(count):
            t0 = time.perf_counter()
            interpreter.run_all(prepare(frames[i % len(frames)]))
            times.append(time.perf_counter() - t0)
    finally:
        close_runners(runners)
    times = np.asarray(times[50:])
    return float(np.median(times)), float(np.percentile(times, 99))


def cold_starts(bundle: Bundle, frames: np.ndarray, loads: int, budget: float, options: ControllerOptions) -> dict:
    final = 0
    exits = []
    exits_ = bundle.program.exits
    best = max(range(len(exits_)), key=lambda k: (exits_[k].val_accuracy or 0.0, k))
    for i in range(loads):
        with Controller.from_bundle(bundle, options=options) as ctrl:
            result = ctrl.run(frames[i % len(frames)], budget)
        final += result.exit_index == best and result.met_deadline
        exits.append(-1 if result.exit_index is None else result.exit_index)
    return {"loads": loads, "first_frame_final_exit": int(final), "exits": np.bincount(np.array(exits) + 1).tolist()}


def fresh_vs_settled(bundle: Bundle, frames: np.ndarray, labels: np.ndarray | None, loads: int,
                     budget: float) -> dict:
    """Per fresh load, the first FRESH_FRAMES frames and FRESH_FRAMES frames after SETTLE_FRAMES more, all at
    `budget` (default controller, inline): on time and correct, mean exit (none = -1), median time per call."""
    phases = {"fresh": [], "settled": []}
    firsts: list[tuple[float, float]] = []   # per load: the first and the second frame's time per call
    n = len(frames)
    for load in range(loads):
        with Controller.from_bundle(bundle) as ctrl:
            offset = load * 7
            for phase, start in (("fresh", 0), ("settle", FRESH_FRAMES), ("settled", FRESH_FRAMES + SETTLE_FRAMES)):
                count = SETTLE_FRAMES if phase == "settle" else FRESH_FRAMES
                for i in range(start, start + count):
                    frame = frames[(offset + i) % n]
                    t0 = time.perf_counter()
                    r = ctrl.run(frame, budget)
                    elapsed = time.perf_counter() - t0
                    if i == 1:
                        firsts.append((phases["fresh"][0][2], elapsed))
                    if phase != "settle":
                        right = labels is None or r.label == labels[(offset + i) % n]
                        phases[phase].append((elapsed <= budget and r.best is not None and right,
                                              -1 if r.exit_index is None else r.exit_index, elapsed))
    first, second = np.median(np.asarray(firsts), axis=0) * 1e3
    out = {"loads": loads, "budget_ms": budget * 1e3, "frames_each": FRESH_FRAMES,
           "first_frame_median_call_ms": round(float(first), 4), "second_frame_median_call_ms": round(float(second), 4)}
    for phase, rows in phases.items():
        ok, exits, elapsed = (np.asarray(column) for column in zip(*rows))
        out[phase] = {"on_time_correct_pct": round(100.0 * float(ok.mean()), 2),
                      "mean_exit": round(float(exits.mean()), 3),
                      "median_call_ms": round(float(np.median(elapsed)) * 1e3, 4)}
    return out


def test_set(count: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The first `count` GTSRB test frames and their labels, read once; random frames and no labels (no
    accuracy column) when the data set is not available."""
    try:
        from training.data import load_split

        x, y = load_split("gtsrb32", "test")
        return x[:count], y[:count]
    except Exception:  # noqa: BLE001 - lateness only
        return test_frames(count), None


def soak(bundle: Bundle, frames: np.ndarray, count: int, low: float, high: float, seed: int,
         labels: np.ndarray | None = None) -> dict:
    """`labels`: the frames' classes, to count results on time and correct."""
    rng = np.random.default_rng(seed)
    controllers = {"inline": Controller.from_bundle(bundle),
                   "threaded": Controller.from_bundle(bundle, options=ControllerOptions(threaded=True))}
    late = {name: [] for name in controllers}
    correct = {name: 0 for name in controllers}   # results on time and right
    exits = {name: np.zeros(len(bundle.program.exits) + 1, int) for name in controllers}
    budgets = rng.uniform(low, high, count)
    started = time.perf_counter()
    try:
        for start in range(0, count, BLOCK):
            for name, ctrl in controllers.items():
                for i in range(start, min(count, start + BLOCK)):
                    r = ctrl.run(frames[i % len(frames)], float(budgets[i]))
                    late[name].append(r.delivered_s - r.deadline_s)
                    if labels is not None and r.met_deadline and r.label == labels[i % len(labels)]:
                        correct[name] += 1
                    exits[name][-1 if r.exit_index is None else r.exit_index] += 1
        out = {}
        for name, ctrl in controllers.items():
            lateness = np.asarray(late[name])
            out[name] = {"frames": count, "later_than_deadline_plus_1ms": int((lateness > 1e-3).sum()),
                         "late": int((lateness > 0).sum()), "lateness_ms": percentiles(lateness),
                         "on_time_correct_pct": None if labels is None else round(100.0 * correct[name] / count, 2),
                         "exit_histogram": {**{f"exit{k}": int(n) for k, n in enumerate(exits[name][:-1])},
                                            "none": int(exits[name][-1])},
                         "stats": dataclasses.asdict(ctrl.stats())}
    finally:
        for ctrl in controllers.values():
            ctrl.close()
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def print_soak(title: str, result: dict) -> None:
    for name in ("inline", "threaded"):
        r = result[name]
        print(f"{title} {name:8s}: {r['frames']} frames, {r['later_than_deadline_plus_1ms']} later than deadline + 1 ms, "
              f"{r['late']} late at all; on time and correct {r['on_time_correct_pct']}%; lateness ms {r['lateness_ms']}; exits {r['exit_histogram']}; "
              f"late steps {r['stats']['late_steps']}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="deploy/bundles/gtsrb-resann")
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=100)
    parser.add_argument("--fresh-loads", type=int, default=20, help="fresh loads for fresh vs settled (0: skip)")
    parser.add_argument("--cpu-load", type=float, default=1.0, help="busy fraction of each core for the loaded soak")
    parser.add_argument("--skip-loaded", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    bundle = Bundle.load(args.bundle)
    frames, labels = test_set(2000)
    report = {"bundle": args.bundle, "load_average_start": os.getloadavg()}
    median, p99 = full_plan_latency(bundle, frames)
    report["full_plan_ms"] = {"median": median * 1e3, "p99": p99 * 1e3}
    print(f"full plan (bare chain): median {median * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms; load {os.getloadavg()}")
    cold = {}
    for name, options in (("inline", ControllerOptions()), ("threaded", ControllerOptions(threaded=True))):
        cold[name] = cold_starts(bundle, frames, args.loads, 3 * p99, options)
        print(f"cold starts {name:8s}: first frame at 3x p99 ({3 * p99 * 1e3:.3f} ms) got the full plan's answer in "
              f"{cold[name]['first_frame_final_exit']} of {args.loads} fresh loads (exits -1..: {cold[name]['exits']})")
    report["cold_starts"] = cold
    if args.fresh_loads:
        fresh = report["fresh_vs_settled"] = fresh_vs_settled(bundle, frames, labels, args.fresh_loads, median)
        print(f"fresh vs settled, {args.fresh_loads} loads, {FRESH_FRAMES} frames each at {median * 1e3:.3f} ms: "
              + "; ".join(f"{phase}: on time and correct {fresh[phase]['on_time_correct_pct']}%, mean exit "
                          f"{fresh[phase]['mean_exit']}, median call {fresh[phase]['median_call_ms']} ms"
                          for phase in ("fresh", "settled"))
              + f"; first frame {fresh['first_frame_median_call_ms']} ms, second {fresh['second_frame_median_call_ms']} ms")
    if args.frames:   # 0: cold starts and fresh vs settled only
        report["soak_quiet"] = soak(bundle, frames, args.frames, median, 3 * median, args.seed, labels)
        print_soak("soak quiet ", report["soak_quiet"])
        if not args.skip_loaded:
            from edge_anytime.realtime import RealtimeOptions, apply_realtime
            from simulator.load import BackgroundLoad

            with ExitStack() as stack:
                for _ in range(os.cpu_count() or 1):
                    stack.enter_context(BackgroundLoad(args.cpu_load, max_seconds=1800))
                report["soak_loaded"] = soak(bundle, frames, args.frames, median, 3 * median, args.seed + 1, labels)
                print_soak("soak loaded", report["soak_loaded"])
                cpu = max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
                rt = apply_realtime(RealtimeOptions(cpus=None if cpu is None else (cpu,), fifo_priority=50,
                                                    lock_memory=True, freeze_gc=True))
                report["realtime"] = str(rt)
                print(f"real-time settings: {rt}")
                report["soak_loaded_realtime"] = soak(bundle, frames, args.frames, median, 3 * median, args.seed + 2, labels)
                print_soak("soak loaded+rt", report["soak_loaded_realtime"])
    report["load_average_end"] = os.getloadavg()
    print(f"load average at the end {report['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
