"""A control loop's pace: every policy served one frame per sensor period, idling in between.

    .venv/bin/python bench/bench_paced.py [--bundle deploy/bundles/gtsrb-resann] [--period-ms 33]
        [--budgets 0.5,0.7,1.0,1.5,2.0] [--frames 200] [--block 50] [--lead-ms 1.0] [--against COMMIT] [--json OUT]

The other benchmarks serve frames back to back, so the code, tables and weights a frame touches are always in
the CPU's caches. A control loop calls `run()` once per period (33 ms for a 30 Hz camera) and idles between
calls; after a few milliseconds idle they are not. This benchmark paces every policy like that, on the same
GTSRB test frames, budgets in units of the full model's back-to-back median (`bench_budgets.side_by_side`):

* `anytime`            - the controller with its defaults (`prime="auto"`: a dry frame `prime_lead_s` before
                         each expected call, priming.py);
* `anytime prime=off`  - the same without priming;
* `ref COMMIT`         - with `--against COMMIT`: that commit's controller with its defaults (bench_ab.py's
                         `import_reference`), to judge a change in this regime;
* `static:k`, `static:0/int8`, `threshold` - deadline-unaware policies (bench_budgets.Unaware), timed alike.

Policies take turns in blocks of `--block` frames (a shuffled order per block), each frame `--period-ms` after
the previous one; the first `SETTLE` frames of each block are served but not counted (a primer needs a few
calls to learn the period; every policy loses them alike). Prints the deadline-unaware policies' median call
with frames back to back (what warm caches are worth), then per budget on time and correct, the calls returned
late and the median call; `--json` keeps them with the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_budgets import THRESHOLD, Unaware, shuffled_orders, side_by_side  # noqa: E402
from edge_anytime import Bundle, Controller, ControllerOptions  # noqa: E402
from edge_anytime.priming import MIN_GAPS  # noqa: E402
from edge_anytime.runners import close_runners, load_runners  # noqa: E402

SETTLE = MIN_GAPS + 2   # frames of each block served but not counted


def paced_block(serve, indices, period_s: float) -> list[tuple[float, bool, bool]]:
    """Serve frame i at a steady period (sleeping in between, as a loop waiting for its sensor does): per frame
    (seconds of the call, a result, correct)."""
    out = []
    next_call = time.perf_counter()
    for i in indices:
        next_call += period_s
        while (left := next_call - time.perf_counter()) > 0:
            time.sleep(max(0.0, left - 2e-4))      # the last 0.2 ms in short sleeps: calls on time
        t0 = time.perf_counter()
        answered, correct = serve(i)
        out.append((time.perf_counter() - t0, answered, correct))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="deploy/bundles/gtsrb-resann")
    parser.add_argument("--period-ms", type=float, default=33.0)
    parser.add_argument("--budgets", default="0.5,0.7,1.0,1.5,2.0", help="in units of the full model's median")
    parser.add_argument("--frames", type=int, default=200, help="counted frames per policy and budget")
    parser.add_argument("--block", type=int, default=50)
    parser.add_argument("--lead-ms", type=float, default=None, help="prime_lead_s of the primed controller")
    parser.add_argument("--against", help="also a git commit's controller, with its defaults")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.block <= SETTLE:
        parser.error(f"--block must be more than {SETTLE} frames")

    bundle = Bundle.load(args.bundle)
    counted = args.block - SETTLE
    blocks = -(-args.frames // counted)
    setup = side_by_side(bundle, blocks * args.block)
    fractions = [float(x) for x in args.budgets.split(",")]
    options = ControllerOptions() if args.lead_ms is None else ControllerOptions(prime_lead_s=args.lead_ms / 1e3)
    controllers = {"anytime": Controller.from_bundle(bundle, options=options),
                   "anytime prime=off": Controller.from_bundle(bundle, options=dataclasses.replace(options,
                                                                                                  prime="off"))}
    folder = tempfile.TemporaryDirectory()
    if args.against:
        from bench.bench_ab import import_reference

        reference = import_reference(args.against, Path(folder.name))
        controllers[f"ref {args.against}"] = reference.Controller.from_bundle(args.bundle)
    runner_sets = [load_runners(bundle, bundle.resolve_precisions("fp32"))]
    fp32 = Unaware(bundle, runner_sets[0])
    unaware = {f"static:{k}": (fp32, k) for k in range(len(bundle.program.exits))}
    if "int8" in bundle.precisions():
        runner_sets.append(load_runners(bundle, bundle.resolve_precisions("int8")))
        unaware["static:0/int8"] = (Unaware(bundle, runner_sets[-1]), 0)
    names = [*controllers, *unaware, "threshold"]
    labels, frames = setup.labels, setup.frames
    load_start = os.getloadavg()
    table = {}
    try:
        for ctrl in controllers.values():      # settle: online estimates of this host
            for i in range(min(len(frames), 300)):
                ctrl.run(frames[i], 10 * setup.full_s)
        back_to_back = {}                      # the deadline-unaware policies' median call, frames back to back
        for name in [*unaware, "threshold"]:
            seconds = []
            for i in range(min(len(frames), 300)):
                t0 = time.perf_counter()
                (fp32.early_exit(frames[i], (THRESHOLD,) * len(bundle.program.exits)) if name == "threshold"
                 else unaware[name][0].static(frames[i], unaware[name][1]))
                seconds.append(time.perf_counter() - t0)
            back_to_back[name] = float(np.median(seconds) * 1e6)
        print("back to back, median call us: " + ", ".join(f"{n} {v:.0f}" for n, v in back_to_back.items()))
        for fraction in fractions:
            budget = fraction * setup.full_s

            def serve(name: str, i: int) -> tuple[bool, bool]:
                if name in controllers:
                    result = controllers[name].run(frames[i], budget)
                    return result.best is not None, result.best is not None and result.label == labels[i]
                if name == "threshold":
                    label = fp32.early_exit(frames[i], (THRESHOLD,) * len(bundle.program.exits))[0]
                else:
                    policy, k = unaware[name]
                    label = policy.static(frames[i], k)[0]
                return True, label == labels[i]

            runs = {name: [] for name in names}
            for b, order in enumerate(shuffled_orders(names, blocks, seed=int(fraction * 100))):
                indices = range(b * args.block, (b + 1) * args.block)
                for name in order:
                    runs[name] += paced_block(lambda i, n=name: serve(n, i), indices, args.period_ms / 1e3)[SETTLE:]
            rows = {}
            for name, values in runs.items():
                a = np.array(values, float)
                on_time = a[:, 0] <= budget
                rows[name] = {"on_time_correct": float((on_time & (a[:, 2] > 0)).mean()),
                              "returned_late": float((~on_time).mean()),
                              "median_call_us": float(np.median(a[:, 0]) * 1e6)}
            table[f"{fraction}x"] = rows
            print(f"budget {fraction}x the full model's median ({budget * 1e6:.0f} us), one call every "
                  f"{args.period_ms:g} ms: on time and correct % (calls late %) [median call us]")
            for name, r in rows.items():
                print(f"  {name:18s} {100 * r['on_time_correct']:5.1f} ({100 * r['returned_late']:5.1f}) "
                      f"[{r['median_call_us']:6.0f}]")
        primed = {name: c._primer.primed if getattr(c, "_primer", None) else 0 for name, c in controllers.items()}
    finally:
        for ctrl in controllers.values():
            ctrl.close()
        for runners in runner_sets:
            close_runners(runners)
        folder.cleanup()
    report = {"bundle": args.bundle, "period_ms": args.period_ms, "frames_per_budget": blocks * counted,
              "full_median_us": setup.full_s * 1e6, "dry_frames": primed, "scenarios": table,
              "back_to_back_median_call_us": back_to_back,
              "load_average_start": load_start, "load_average_end": os.getloadavg()}
    print(f"dry frames run: {primed}; load average {load_start} -> {report['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
