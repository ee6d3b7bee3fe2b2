"""`python -m simulator.replay`: replay a sensor stream with a budget per frame through the Controller.

Simulated clock (default): every exit's logits are computed once per frame with
the bundle's LiteRT graphs and cached; budget scenarios then replay on the
simulated clock with step latencies drawn from the bundle's profile for
`--target` (or `--profile FILE`, or `--measure-profile` on this host).

    python -m simulator.replay --bundle deploy/bundles/gtsrb-resann --stream gtsrb-tracks \\
        --budget uniform:0.5:3 --json out.json --plot out.png
    python -m simulator.replay --bundle B --stream gtsrb-test --sweep constant:0.25:4:0.25

Real clock: the same frames through `Controller.from_bundle` (LiteRT) on the
wall clock, next to the simulator's prediction for them:

    python -m simulator.replay --bundle B --stream gtsrb-test --frames 500 \\
        --sweep constant:0.25:3:0.25 --clock real

See docs/simulator.md for every option and the JSON schema.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge_anytime.errors import EdgeAnytimeError
from edge_anytime.options import ControllerOptions
from edge_anytime.runners import fallback_exits, fallback_graphs

from .budgets import BudgetError, parse_budget, parse_sweep
from .cache import CacheError, PredictionCache, cached_predictions
from .fallback import fallback_replay
from .fast import FROZEN, ReplaySetup
from .sources import SerialStream, Stream, StreamError, open_stream
from .sweep import (Scenario, SweepConfig, exit_table, format_exits, format_real_table, format_table,
                    policy_metrics, run_sweep,
                    scenario_json, simulate_policies)
from .timing import draw_latencies, profile_summary, resolve_profile, scaled_profile

REPORT_SCHEMA = "edge-anytime-sim-report"
REPORT_VERSION = 1
DEMO_FRAMES = 12630  # the whole GTSRB test set


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulator.replay", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Budgets are in milliseconds: constant:MS, uniform:LO:HI, normal:MEAN:STD, "
                                       "large:LO:HI[:K], small:LO:HI[:K], speed:DIST_M:VMIN_KMH:VMAX_KMH, "
                                       "trace:FILE.csv|.json (options: ?jitter=MS). Streams: gtsrb-tracks[?fps=30], "
                                       "gtsrb-test, gtsrb-val, cifar10-test, npz:PATH, serial:URL.")
    src = p.add_argument_group("model and stream")
    src.add_argument("--bundle", help="bundle folder (holds manifest.json)")
    src.add_argument("--cache", help="replay a saved prediction cache (.npz) instead of --bundle/--stream (sim clock)")
    src.add_argument("--stream", help="stream spec (default: gtsrb-tracks; gtsrb-test with --demo)")
    src.add_argument("--frames", type=int, help="use the first N frames (default: all; 300 on the real clock)")
    src.add_argument("--data-dir", help="folder holding gtsrb32/ and cifar10/ (default: EDGE_ANYTIME_DATA or ../shared/data)")
    src.add_argument("--precision", default="fp32", help="graph precision: fp32, fp16 or int8 (default fp32)")
    src.add_argument("--cache-dir", help="where prediction caches live (default: EDGE_ANYTIME_CACHE or ~/.cache/edge_anytime/simulator)")
    src.add_argument("--rebuild-cache", action="store_true", help="recompute the cached predictions")
    bud = p.add_argument_group("budgets")
    bud.add_argument("--budget", action="append", default=[], help="budget spec in ms; repeat for several scenarios")
    bud.add_argument("--sweep", help="constant budgets START:STOP:STEP in ms, e.g. constant:0.5:5:0.25")
    bud.add_argument("--jitter", type=float, default=0.0, help="Gaussian jitter (ms std) added to every budget")
    bud.add_argument("--seed", type=int, default=0, help="seed of budgets and latency draws (default 0)")
    clk = p.add_argument_group("clock and controller")
    clk.add_argument("--clock", choices=("sim", "real"), default="sim")
    clk.add_argument("--engine", choices=("fast", "live"),
                     help="sim clock: 'live' runs the Controller with a FakeBackend, 'fast' the vectorised replay "
                          "(default: live for one budget, fast for several)")
    clk.add_argument("--verify", action="store_true", help="sim clock: run both engines and check they agree")
    clk.add_argument("--target", default="x86-64", help="latency profile of the bundle to draw from (default x86-64)")
    clk.add_argument("--profile", help="latency profile file (profiles/<target>.json format)")
    clk.add_argument("--measure-profile", action="store_true", help="measure the graphs on this host now (LiteRT)")
    clk.add_argument("--slowdown", type=float, default=1.0,
                     help="sim clock: scale the whole profile (estimates and draws), e.g. 10 for a board 10x slower "
                          "than the profiled host")
    clk.add_argument("--latency-scale", type=float, default=1.0,
                     help="sim clock: drawn step latencies times this, estimates unchanged (e.g. 1.3: the target runs "
                          "30%% slower than its profile says; steps overrun)")
    clk.add_argument("--dispatch-ms", type=float, default=0.0,
                     help="sim clock: delay from capture to the controller (transfer, queueing, thread hand-off); "
                          "deadlines stay relative to capture (default 0)")
    clk.add_argument("--mode", choices=("anytime", "apriori"), default="anytime")
    clk.add_argument("--fallback-precision", default="auto", choices=("auto", "none", "fp16", "int8"),
                     help="the controller's precision fallback (ControllerOptions.fallback_precision): 'auto' holds "
                          "the int8 graphs of each exit that agrees with the primary ones on >= 99%% of the parity "
                          "images, on the simulated clock as on a real one (needs --bundle); 'none' turns it off")
    clk.add_argument("--margin-ms", type=float,
                     help="admission margin (default: measured delivery path; 0 on the simulated clock)")
    clk.add_argument("--guard-ms", type=float,
                     help="watchdog guard before the deadline (default: measured wake-up lateness; 0 on the sim clock)")
    clk.add_argument("--confidence-target", type=float, help="controller stops refining at this confidence")
    clk.add_argument("--coarse-below", type=float, help="report the coarse class below this fine confidence")
    clk.add_argument("--threshold", type=float, default=0.9, help="confidence of the threshold baseline (0.9)")
    clk.add_argument("--threads", type=int, default=1, help="LiteRT threads per graph (default 1)")
    clk.add_argument("--cpu-load", type=float, help="real clock: a background process busy this fraction of a core")
    clk.add_argument("--pace", action="store_true", help="real clock: wait for each frame's timestamp like a camera")
    clk.add_argument("--realtime", type=int, metavar="PRIORITY",
                     help="real clock: run the replay process under SCHED_FIFO with this priority (1-99; needs root or "
                          "CAP_SYS_NICE), as on a device (edge_anytime.realtime); latency spikes from other processes vanish")
    clk.add_argument("--settle", type=int, default=1000,
                     help="real clock: frames served with a generous budget before the scenarios, so the controller's "
                          "online estimates reach steady state (default 1000; 0 to skip)")
    clk.add_argument("--demo", action="store_true",
                     help="the project demo: real GTSRB test images through the bundle on real LiteRT (wall clock) "
                          "under a sweep of constant budgets spanning its exits, beside the simulator's prediction "
                          f"(= --clock real --stream gtsrb-test --frames {DEMO_FRAMES} and an automatic --sweep)")
    out = p.add_argument_group("output")
    out.add_argument("--json", help="write the report here")
    out.add_argument("--plot", help="write accuracy/timeline/histogram plots here (.png)")
    out.add_argument("--timeline", action="store_true", help="add per-frame records to the JSON report")
    out.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def budget_models(args) -> list:
    specs = list(args.budget)
    models = [parse_budget(s) for s in specs]
    if args.sweep:
        models += parse_sweep(args.sweep)
    if not models:
        raise BudgetError("give --budget SPEC (ms, e.g. uniform:0.5:3) or --sweep constant:START:STOP:STEP")
    if args.jitter:
        if args.jitter < 0:
            raise BudgetError("--jitter must be >= 0 milliseconds")
        models = [parse_budget(m.spec + ("&" if "?" in m.spec else "?") + f"jitter={args.jitter:g}") for m in models]
    return models


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1e3


def controller_options(args, online: bool) -> ControllerOptions:
    return ControllerOptions(mode=args.mode, confidence_target=args.confidence_target,
                             margin_s=_seconds(args.margin_ms), watchdog_guard_s=_seconds(args.guard_ms),
                             coarse_below=args.coarse_below, estimator=replace(FROZEN, online=online),
                             warmup_runs=ControllerOptions.warmup_runs if online else 0,
                             precision=args.precision, num_threads=args.threads,
                             fallback_precision=_fallback_option(args))


def _fallback_option(args) -> str | None:
    return None if args.fallback_precision == "none" else args.fallback_precision


def _load_bundle(args):
    from edge_anytime.bundle import Bundle

    if not args.bundle:
        raise CacheError("give --bundle B (a bundle folder), or --cache FILE to replay a saved cache on the sim clock")
    return Bundle.load(args.bundle)


def _measure(bundle, precisions: dict, args):
    """The project's profiler (edge_anytime.profiling) on this host, for these precisions and the fallback
    precision's graphs (`--fallback-precision`)."""
    from edge_anytime.profiling import ProfileOptions, profile_bundle

    options = ProfileOptions(warmup=20, samples=300)
    profile = profile_bundle(bundle, "this-host", "litert", args.threads, dict(precisions), options)
    precision, exits = fallback_exits(bundle, _fallback_option(args), precisions, simulated=False)
    if exits:
        at_fallback = profile_bundle(bundle, "this-host", "litert", args.threads,
                                     dict.fromkeys(fallback_graphs(bundle.program, exits), precision), options)
        profile = at_fallback.merged_into(profile)
    return profile


def _open(args) -> Stream:
    stream = open_stream(args.stream, frames=args.frames, data_dir=args.data_dir)
    if isinstance(stream, SerialStream):  # read once, keep in memory: the cache and the replay both need it
        with stream:
            items = list(stream)
        if not items:
            raise StreamError(f"{args.stream}: no frame arrived")
        stream = Stream(stream.spec, [f.frame for f in items], np.array([f.timestamp_s for f in items]),
                        np.full(len(items), -1), np.full(len(items), -1))
    return stream


def _prepare(args):
    """The prediction cache (loaded or built), the opened stream and the bundle (None with --cache)."""
    if args.cache and args.clock == "sim":
        cache = PredictionCache.load(args.cache)
        if args.frames is not None and args.frames < len(cache):
            cache = cache.subset(args.frames)
        return cache, None, None
    stream = _open(args)
    bundle = _load_bundle(args)
    cache = cached_predictions(bundle, stream, frames=args.frames, precision=args.precision, num_threads=args.threads,
                               cache_dir=args.cache_dir, show_progress=not args.quiet,
                               rebuild=args.rebuild_cache or stream.spec.startswith("serial:"))
    if stream.class_names and len(stream.class_names) != len(cache.model.labels):
        print(f"warning: the stream has {len(stream.class_names)} classes but the model {len(cache.model.labels)}; "
              f"accuracies compare unrelated labels", file=sys.stderr)
    return cache, stream, bundle


def run(args) -> dict:
    """Run the replay the parsed arguments describe; prints the tables and returns the JSON report."""
    started = time.perf_counter()
    if args.demo:
        args.clock, args.stream, args.frames = "real", args.stream or "gtsrb-test", args.frames or DEMO_FRAMES
    args.stream = args.stream or "gtsrb-tracks"
    models = budget_models(args) if (args.budget or args.sweep or not args.demo) else None
    real = args.clock == "real"
    if real and args.frames is None:
        args.frames = 300
    cache, stream, bundle = _prepare(args)
    missing = not args.profile and args.target not in cache.profiles and (bundle is not None or args.bundle)
    if (args.profile or not (real or args.measure_profile)) and not missing:
        profile, source = resolve_profile(cache.profiles, args.target, args.profile, cache.program)
    elif missing and not (real or args.measure_profile):
        print(f"note: the bundle has no latency profile for target {args.target!r} (it has "
              f"{sorted(cache.profiles)}): measuring this host instead. To keep one, run: python -m "
              f"edge_anytime.profiling --bundle {args.bundle} --target {args.target}", file=sys.stderr)
        bundle = bundle or _load_bundle(args)
        profile, source = _measure(bundle, cache.precisions, args), "measured:this-host"
    else:
        bundle = bundle or _load_bundle(args)
        profile, source = _measure(bundle, cache.precisions, args), "measured:this-host"
    if args.slowdown != 1.0:
        profile, source = scaled_profile(profile, args.slowdown), f"{source} x{args.slowdown:g}"
    fallback = _fallback(args, bundle, stream, cache, profile)
    setup = ReplaySetup.create(cache.program, profile, cache.precisions, controller_options(args, online=False),
                               fallback=fallback)
    config = SweepConfig(seed=args.seed, threshold=args.threshold, verify=args.verify, show_progress=not args.quiet,
                         latency_scale=args.latency_scale, dispatch_s=args.dispatch_ms / 1e3,
                         engine=args.engine or ("live" if len(models or ()) == 1 or args.verify else "fast"))
    replay_started = time.perf_counter()
    real_stats = None
    if real:
        scenarios, real_stats, setup = run_real(args, bundle, stream, cache, setup, profile, models, config, fallback)
        engine = "wall-clock"
    else:
        scenarios = run_sweep(cache, setup, profile, models, config, fallback)
        engine = config.engine
    replay_s = time.perf_counter() - replay_started
    exits = exit_table(cache, setup, profile, measured_scale=args.slowdown, fallback=fallback)
    print(f"stream {cache.meta.get('stream')}: {len(cache)} frames; clock {args.clock} ({engine}); "
          f"latency profile {source}")
    print(format_exits(exits))
    print()
    # real clock: the simulated twins used other estimate snapshots, so only the measured run is tabled
    real = engine == "wall-clock"
    print(format_real_table(scenarios, args.mode) if real else format_table(scenarios, args.mode, args.threshold))
    report = build_report(args, cache, setup, profile, source, exits, scenarios, engine, real_stats)
    report["timing"] = {"wall_s": time.perf_counter() - started, "replay_s": replay_s,
                        "frames_per_s": len(cache) * len(scenarios) / replay_s if replay_s > 0 else None}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        from .plots import plot_scenarios

        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot_scenarios(scenarios, args.plot, args.mode, args.threshold,
                       title=f"{cache.model.name} on {cache.meta.get('stream')} ({args.clock} clock, {source})")
    return report


def build_report(args, cache, setup, profile, source, exits, scenarios, engine, real_stats) -> dict:
    """The JSON report (schema in docs/simulator.md), without its timing section."""
    real = args.clock == "real"
    return {
        "schema": REPORT_SCHEMA, "version": REPORT_VERSION,
        "command": "python -m simulator.replay " + shlex.join(args.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "bundle": {"path": cache.meta.get("bundle"), "sha256": cache.meta.get("bundle_sha"),
                   "model": cache.model.name, "dataset": cache.model.dataset, "precisions": cache.precisions},
        "cache": {"path": str(cache.path) if cache.path else None, "key": cache.key},
        "stream": {"spec": cache.meta.get("stream"), "frames": len(cache),
                   "labelled": int((cache.labels >= 0).sum()), "rejected_frames": int((~cache.valid).sum()),
                   "failed_frames": int((cache.bad_steps.any(axis=1) & cache.valid).sum()),
                   "tracks": int(len(np.unique(cache.track_ids[cache.track_ids >= 0])))},
        "clock": args.clock, "engine": engine, "seed": args.seed, "target": args.target,
        "slowdown": args.slowdown, "latency_scale": args.latency_scale, "dispatch_ms": args.dispatch_ms,
        "profile": {"source": source, "graphs": profile_summary(profile, cache.precisions)},
        "controller": {"mode": args.mode, "estimates_ms": setup.estimates_ms(),
                       "confidence_target": args.confidence_target, "coarse_below": args.coarse_below,
                       "estimator": "online (warm-up on this host)" if real else "frozen (profile)"},
        "baselines": {"threshold": args.threshold},
        "cpu_load": args.cpu_load, "paced": bool(args.pace), "settle_frames": args.settle if real else None,
        "real_controller": real_stats,
        "exits": exits,
        "scenarios": [scenario_json(sc, timeline=args.timeline) for sc in scenarios],
    }


DEMO_SCALE = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 12.0)


def demo_budgets(exits: list[dict], margin_ms: float) -> list:
    """Constant budgets: the controller's margin plus multiples of the full plan's median latency (measured
    on this host when the cache was built), so the sweep spans no result -> first exit -> last exit on any
    machine, and does not depend on a noisy estimate snapshot."""
    full = exits[-1]["latency_ms"]["p50"]
    return [parse_budget(f"constant:{float(f'{margin_ms + k * full:.3g}'):g}") for k in DEMO_SCALE]


def _fallback(args, bundle, stream, cache, profile):
    """The precision fallback the replayed controller holds (`--fallback-precision`; simulator/fallback.py), or
    None (printing why, where one was asked for and cannot be replayed)."""
    if args.fallback_precision == "none":
        return None
    if bundle is None:
        print("note: a replay of a saved --cache has no precision fallback (its graphs are not at hand); "
              "give --bundle and --stream to replay it", file=sys.stderr)
        return None
    fallback, why = fallback_replay(bundle, stream, cache, profile, args.fallback_precision, frames=args.frames,
                                    num_threads=args.threads, cache_dir=args.cache_dir, show_progress=not args.quiet,
                                    coarse_below=args.coarse_below,
                                    rebuild=args.rebuild_cache or stream.spec.startswith("serial:"))
    if fallback is None and (args.fallback_precision != "auto" or "profile" in why):
        print(f"note: {why}", file=sys.stderr)
    return fallback


def run_real(args, bundle, stream, cache, setup, profile, models, config, fallback=None):
    """Each scenario through Controller.from_bundle on the wall clock, beside its simulated twin.

    Every scenario gets a fresh controller (warmed up, then settled, see `settle`), so a latency
    spike in one scenario cannot change the next. The twin replays the same frames and budgets on
    the simulated clock with step latencies drawn from `profile` and that controller's own estimates,
    margin and guard, so it predicts the real admissions. Returns (scenarios, the real controllers'
    counters and estimates, the last twin's setup). `models` None: the demo's budgets (`demo_budgets`).
    """
    from contextlib import nullcontext
    from dataclasses import asdict

    from edge_anytime.controller import Controller

    from .fast import exit_predictions
    from .live import replay_real
    from .load import BackgroundLoad

    preds = exit_predictions(cache, setup.options.coarse_below)
    draws = draw_latencies(setup.plan, profile, cache.precisions, len(cache), config.seed)
    if fallback is not None:
        fallback = fallback.drawn(setup.plan, profile, config.seed)
    options = controller_options(args, online=True)
    if args.realtime is not None:  # before the controllers start: their threads inherit the policy
        from edge_anytime.realtime import RealtimeOptions, apply_realtime

        print(apply_realtime(RealtimeOptions(fifo_priority=args.realtime)))
    scenarios, stats, pwcets = [], {}, []
    with BackgroundLoad(args.cpu_load) if args.cpu_load else nullcontext():
        if models is None:   # the demo's budgets come from the latencies measured when the cache was built
            models = demo_budgets(exit_table(cache, setup, profile, fallback=fallback), setup.margin_s * 1e3)
        for i, model in enumerate(models):
            with Controller.from_bundle(bundle, options=options) as ctrl:
                settle(ctrl, stream, args.settle)
                setup = ReplaySetup.from_policy(cache.program, ctrl.policy, setup.options)
                if fallback is None:   # the controller's fallback cannot be replayed (a note said why)
                    setup = setup.without_fallback()
                budgets = model.sample(len(cache), config.seed, cache.timestamps)
                outcomes, best = simulate_policies(cache, setup, preds, budgets, draws, config.threshold,
                                                   config.dispatch_s, fallback)
                outcomes["sim:" + args.mode] = outcomes[args.mode]
                outcomes[args.mode], _ = replay_real(bundle, stream, budgets, pace=args.pace, controller=ctrl,
                                                     show_progress=config.show_progress,
                                                     desc=f"real clock {i + 1}/{len(models)} {model.spec}")
                after = ReplaySetup.from_policy(cache.program, ctrl.policy, setup.options)
                for name, value in asdict(ctrl.stats()).items():
                    stats[name] = stats.get(name, 0) + value
            pwcets.append({"budget": model.spec, "before_ms": setup.estimates_ms(), "after_ms": after.estimates_ms()})
            simulated = tuple(name for name in outcomes if name != args.mode)
            scenarios.append(Scenario(model, budgets, outcomes, policy_metrics(outcomes, cache), best, simulated))
    grew = [p["budget"] for p in pwcets
            if sum(p["after_ms"]["segment_tail"]) > 1.5 * sum(p["before_ms"]["segment_tail"])]
    if grew:
        print(f"note: the real controller's tail estimates grew by > 50% during {', '.join(grew)} (latency spikes "
              f"on this host); see real_controller.estimates in the JSON report", file=sys.stderr)
    return scenarios, {"stats": stats, "estimates": pwcets}, setup


def settle(ctrl, stream, frames: int, budget_s: float = 0.05) -> None:
    """Serve `frames` frames (cycling the stream) with a generous budget, so the controller's estimates
    rest on online samples of this stream rather than warm-up seeds."""
    served = 0
    while served < frames:
        for item in stream:
            if served >= frames:
                break
            ctrl.run(item.frame, budget_s)
            served += 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        run(args)
    except (EdgeAnytimeError, BudgetError, StreamError, CacheError, ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
