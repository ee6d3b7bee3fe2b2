"""The precision fallback side by side: static fp32 exit 0, the default controller (fallback_precision="auto")
and the same controller without the fallback, on the same frames, interleaved.

    .venv/bin/python bench/bench_fallback.py [--frames 1000] [--scenarios 0.5x,0.7x,cruise,...] [--threaded] [--json OUT]

Every frame runs through the three policies in a shuffled order, each timed around its call with its label
read (as `bench/bench_ab.py` times them). Scenarios: `bench_budgets.py`'s constant budgets (x the full
model's median) and speed traces (seed 0), selected by substring. Columns: on time and correct, calls returned
late (%), and the frames the default controller gave to the fallback (`stats().fallback_frames`).
`--threaded`: both controllers with `threaded=True`.
Run it alone on the machine: it measures differences of microseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_budgets import interleaved, scenarios, side_by_side  # noqa: E402
from edge_anytime import Bundle, Controller, ControllerOptions  # noqa: E402

DEFAULT_SCENARIOS = "0.5x,0.7x,0.9x,1.0x,1.1x,1.3x,cruise,sweep,stop,random"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(ROOT / "deploy/bundles/gtsrb-resann"))
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--scenarios", default=DEFAULT_SCENARIOS, help="comma-separated substrings of scenario names")
    parser.add_argument("--threaded", action="store_true", help="both controllers with threaded=True")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()}")
    bundle = Bundle.load(args.bundle)
    setup = side_by_side(bundle, args.frames)
    frames, stamps = setup.frames, setup.stamps
    n, full, first = len(frames), setup.full_s, setup.first_s
    default = Controller.from_bundle(bundle, options=ControllerOptions(threaded=args.threaded))
    without = Controller.from_bundle(bundle, options=ControllerOptions(threaded=args.threaded, fallback_precision=None))
    names = ["static:0", "default", "no fallback"]
    wanted = args.scenarios.split(",")
    report = {}
    try:
        for ctrl in (default, without):
            for i in range(min(n, 300)):
                ctrl.run(frames[i], 10 * full)
        for scenario, budgets in scenarios(stamps, full, first, 1, n).items():
            if not any(w in scenario for w in wanted):
                continue
            before = default.stats().fallback_frames
            good, late = interleaved(setup, budgets, {"default": default, "no fallback": without})
            used = default.stats().fallback_frames - before
            report[scenario] = {"fallback_frames": used, **{name: {"on_time_correct": good[name] / n,
                                                                   "late": late[name] / n} for name in names}}
            print(f"{scenario:<22}" + "".join(f"  {name}: {good[name] / n * 100:5.1f} (late {late[name] / n * 100:4.1f})"
                                              for name in names) + f"  fallback frames {used}", flush=True)
    finally:
        default.close()
        without.close()
    print(f"on time and correct % (calls returned late %); load average at the end {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
