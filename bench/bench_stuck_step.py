"""Threaded run() while a step is stuck burning the CPU: does the caller still return by its deadline?

    .venv/bin/python bench/bench_stuck_step.py [--bundle deploy/bundles/gtsrb-resann] [--frames 300] [--json OUT]

Two threaded controllers on the shipped bundle, the default (`share_caller_cpu=False`) and
`share_caller_cpu=True`, alternating frame by frame on the real clock. On every third frame the bundle's
first step (admitted whenever its typical latency fits, so every such frame is stuck) first burns the CPU
for about 5 ms (SHA-256 over 8 MB: C code that releases the interpreter lock, as LiteRT's invoke does)
against a budget of 2 ms, so `run()` can only return on time if its timed wait wakes while the step's
thread holds a CPU. Prints, per controller, how late `run()` returned after the deadline on
the stuck frames (median, max, how many > 0.2 ms and > 1 ms), with 50 ms of idle time between frames.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_anytime import Controller, ControllerOptions  # noqa: E402

BLOB = bytes(8 << 20)       # hashing it takes about 5 ms here
BUDGET_S = 0.002
STUCK_EVERY = 3


def stick(ctrl: Controller, index: int, stuck: list[bool]) -> None:
    """Make step `index` burn the CPU first while `stuck[0]` is set."""
    step = ctrl.interpreter.steps[index]
    run = step.run

    def burning(inputs):
        if stuck[0]:
            hashlib.sha256(BLOB).digest()
        return run(inputs)
    step.run = burning


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="deploy/bundles/gtsrb-resann")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    hashlib.sha256(BLOB).digest()
    burn_ms = (time.perf_counter() - started) * 1e3
    frame = np.full((32, 32, 3), 128, np.uint8)
    stuck = [False]
    controllers = {name: Controller.from_bundle(args.bundle,
                                                options=ControllerOptions(threaded=True, share_caller_cpu=share))
                   for name, share in (("default", False), ("share_caller_cpu", True))}
    for ctrl in controllers.values():
        stick(ctrl, 0, stuck)
    lateness = {name: [] for name in controllers}
    try:
        for i in range(args.frames):
            stuck[0] = i % STUCK_EVERY == 0
            for name, ctrl in (controllers.items() if i % 2 == 0 else reversed(controllers.items())):
                result = ctrl.run(frame, budget_s=BUDGET_S)
                returned = time.perf_counter()
                if stuck[0]:
                    lateness[name].append((returned - result.deadline_s) * 1e3)
                time.sleep(0.05)     # the stuck step ends; the next frame finds the inference thread free
    finally:
        for ctrl in controllers.values():
            ctrl.close()
    report = {"burn_ms": round(burn_ms, 2), "budget_ms": BUDGET_S * 1e3, "load_average": os.getloadavg(),
              "controllers": {}}
    print(f"stuck step burns {burn_ms:.1f} ms against a {BUDGET_S * 1e3:.0f} ms budget; run() returned after the "
          f"deadline on the stuck frames (ms):")
    for name, values in lateness.items():
        v = np.array(values)
        entry = {"frames": int(v.size), "median": round(float(np.median(v)), 3), "max": round(float(v.max()), 3),
                 "over_0.2ms": int((v > 0.2).sum()), "over_1ms": int((v > 1.0).sum())}
        report["controllers"][name] = entry
        print(f"  {name:17s} {entry}")
    print(f"load average {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
