"""Run every benchmark once and keep their JSON reports in bench/results/.

    .venv/bin/python bench/run_all.py [--quick]      (make bench)

Each benchmark prints ratios measured side by side in one run (these machines are noisy: compare
ratios, not absolute times). --quick shortens the runs (smaller frame counts) for a smoke check.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def benches(quick: bool) -> list[tuple[str, list[str]]]:
    frames = "300" if quick else "2000"
    soak = ["--frames", "5000", "--loads", "10", "--skip-loaded"] if quick else []
    return [
        ("controller", ["bench/bench_controller.py", "--frames", frames, "--json", str(RESULTS / "controller.json")]),
        ("staged_vs_monolithic", ["bench/bench_staged_vs_monolithic.py", "--frames", "300" if quick else "1000",
                                  "--json"]),
        ("deadline", ["bench/bench_deadline.py", *soak, "--json", str(RESULTS / "deadline.json")]),
        ("budgets", ["bench/bench_budgets.py", *(["--real-frames", "300", "--seeds", "1"] if quick else []),
                     "--json", str(RESULTS / "budgets.json")]),
        ("replay", ["bench/bench_replay.py", "--json", str(RESULTS / "replay.json")]),
        ("footprint", ["bench/bench_footprint.py", "--json"]),
        ("preprocess", ["bench/bench_preprocess.py", "--frames", "300" if quick else "2000"]),
        ("stuck_step", ["bench/bench_stuck_step.py", "--frames", "30" if quick else "300",
                        "--json", str(RESULTS / "stuck_step.json")]),
        ("fallback", ["bench/bench_fallback.py", "--frames", "300" if quick else "1000",
                      "--json", str(RESULTS / "fallback.json")]),
        ("paced", ["bench/bench_paced.py", "--frames", "40" if quick else "200", "--json", str(RESULTS / "paced.json")]),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", help="run only these benchmarks")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = []
    for name, command in benches(args.quick):
        if args.only and name not in args.only:
            continue
        print(f"\n=== {name}: {' '.join(command)}", flush=True)
        proc = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if not line.startswith("INFO:")]
        if command[-1] == "--json":   # this benchmark prints its JSON report on stdout
            text = "\n".join(lines)
            start = text.find("{")
            try:
                report = json.loads(text[start:]) if start >= 0 else None
            except json.JSONDecodeError:
                report = None
            if report is not None:
                (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
                lines = [line for line in text[:start].splitlines()] + [json.dumps(report)]
        print("\n".join(lines))
        if proc.returncode != 0:
            failed.append(name)
            print(proc.stderr[-2000:], file=sys.stderr)
    print(f"\nreports in {RESULTS.relative_to(REPO)}/" + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
