"""Throughput of the simulator's replays: vectorised (cached) vs live Controller, simulated frames per second.

    .venv/bin/python bench/bench_replay.py [--frames 10000] [--budgets 100] [--exits 4] [--json OUT]
    .venv/bin/python bench/bench_replay.py --cache ~/.cache/edge_anytime/simulator/<file>.npz --profile P.json

1. The controller's admission replay alone (`replay_fast`, anytime mode): one scenario of --frames
   frames, best of 5 runs. Target: >= 50,000 simulated frames/s per core.
2. A full sweep (`run_sweep`: anytime + apriori + every baseline + metrics) over --budgets constant
   budgets: wall time, and frames x scenarios per second.
3. The live replay (Controller + FakeBackend on the simulated clock) on 2,000 frames, for scale; it
   gives the same outcomes frame by frame (tests/test_sim_replay.py).

Runs on one core (numpy is single-threaded here). Without --cache it uses a synthetic model
(simulator/synthetic.py) shaped like a --exits exit chain; the replay cost does not depend on the
network, only on frames, steps and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_anytime.profile import load_profile  # noqa: E402
from simulator.budgets import parse_budget, parse_sweep  # noqa: E402
from simulator.cache import PredictionCache  # noqa: E402
from simulator.fast import ReplaySetup, exit_predictions, replay_fast  # noqa: E402
from simulator.live import replay_live_sim  # noqa: E402
from simulator.sweep import SweepConfig, run_sweep  # noqa: E402
from simulator.synthetic import synthetic_cache, synthetic_profile  # noqa: E402
from simulator.timing import draw_latencies  # noqa: E402


def best_of(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--budgets", type=int, default=100)
    parser.add_argument("--exits", type=int, default=4)
    parser.add_argument("--cache", help="a prediction cache to replay instead of the synthetic model")
    parser.add_argument("--profile", help="latency profile file (default: the cache's first profile)")
    parser.add_argument("--live-frames", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    if args.cache:
        cache = PredictionCache.load(args.cache)
        profile = load_profile(args.profile) if args.profile else next(iter(cache.profiles.values()))
    else:
        profile = synthetic_profile(spread=0.5)
        cache = synthetic_cache(frames=args.frames, num_exits=args.exits, accuracies=np.linspace(0.5, 0.95, args.exits),
                                profiles=[profile])
    print(f"cache: {len(cache)} frames, {len(cache.program.exits)} exits, {len(cache.program.steps)} steps "
          f"(prepared in {time.perf_counter() - t0:.1f} s)")
    setup = ReplaySetup.create(cache.program, profile, cache.precisions)
    preds = exit_predictions(cache)
    draws = draw_latencies(setup.plan, profile, cache.precisions, len(cache))
    total_ms = sum(setup.segment_typical) * 1e3   # the anytime plan's typical latency
    budgets = parse_budget(f"uniform:{total_ms / 10:.3f}:{total_ms * 1.2:.3f}").sample(len(cache))

    single = best_of(lambda: replay_fast(setup, preds, budgets, cache.timestamps, draws, cache.valid, cache.bad_steps))
    fast_fps = len(cache) / single
    print(f"vectorised replay (anytime): {single * 1e3:.2f} ms for {len(cache)} frames = {fast_fps:,.0f} frames/s")

    step = total_ms * 1.2 / args.budgets
    models = parse_sweep(f"constant:{step:.4f}:{step * args.budgets:.4f}:{step:.4f}")[:args.budgets]
    t0 = time.perf_counter()
    run_sweep(cache, setup, profile, models, SweepConfig(show_progress=False))
    sweep_s = time.perf_counter() - t0
    sweep_fps = len(cache) * len(models) / sweep_s
    print(f"full sweep ({len(models)} budgets x {len(cache)} frames, controller modes + baselines + metrics): "
          f"{sweep_s:.2f} s = {sweep_fps:,.0f} frame-scenarios/s")

    sub = cache.subset(min(args.live_frames, len(cache)))
    sub_draws = draw_latencies(setup.plan, profile, cache.precisions, len(sub))
    t0 = time.perf_counter()
    replay_live_sim(sub, setup, profile, budgets[:len(sub)], sub_draws)
    live_fps = len(sub) / (time.perf_counter() - t0)
    print(f"live replay (Controller + FakeBackend, simulated clock): {live_fps:,.0f} frames/s "
          f"({fast_fps / live_fps:,.0f}x slower than vectorised)")
    report = {"frames": len(cache), "exits": len(cache.program.exits), "steps": len(cache.program.steps),
              "fast_frames_per_s": fast_fps, "sweep_budgets": len(models), "sweep_s": sweep_s,
              "sweep_frame_scenarios_per_s": sweep_fps, "live_frames_per_s": live_fps,
              "target_frames_per_s": 50_000, "meets_target": fast_fps >= 50_000}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
