"""Compare the runs of one experiment across seeds (or any result files that share run tags).

    python -m training.experiments.seeds runs/claims-gtsrb/weighting.json runs/claims-gtsrb-seed1/weighting.json \
        --against resann6-const

Reads each OUT/NAME.json, keeps the run tags present in every file (with that exit), and prints a markdown
table of one exit's test accuracy (%) per file (the final exit by default), the mean and
the spread (max - min), and, with --against TAG, every run's difference to that run in
each file: a difference with the same sign in every seed, and larger than the spread of
either run, is a reading a second seed supports.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .common import markdown_table, result_runs


def load_runs(path: str | Path) -> tuple[str, dict[str, dict]]:
    """(label, {tag: run summary}) of one result file; the label names its seed and schedule."""
    result = json.loads(Path(path).read_text())
    config = result.get("config", {})
    label = f"seed {config.get('seed', '?')}, {config.get('epochs', '?')} ep"
    return label, {r["tag"]: r for r in result_runs(result)}


def seed_table(paths: Sequence[str | Path], exit_index: int = -1, against: str | None = None) -> dict:
    """Markdown table (see the module doc) over the tags common to every file."""
    loaded = [load_runs(p) for p in paths]
    if len(loaded) < 2:
        raise ValueError("give at least two result files")
    first = loaded[0][1]
    tags = [t for t in first if all(t in runs and -len(runs[t]["exits"]) <= exit_index < len(runs[t]["exits"])
                                    for _, runs in loaded)]
    if not tags:
        raise ValueError(f"the files share no run tag with an exit {exit_index}")
    if against is not None and against not in tags:
        raise ValueError(f"--against {against!r} is not a run of every file; common runs: {', '.join(tags)}")

    def acc(runs: dict, tag: str) -> float:
        return 100.0 * runs[tag]["exits"][exit_index]["test_accuracy"]

    labels = [label for label, _ in loaded]
    headers = ["run"] + [f"{lb} (%)" for lb in labels] + ["mean", "spread"]
    if against is not None:
        headers += [f"- {against}, {lb} (pp)" for lb in labels]
    rows = []
    for tag in tags:
        values = [acc(runs, tag) for _, runs in loaded]
        row = [tag] + values + [sum(values) / len(values), max(values) - min(values)]
        if against is not None:
            row += [v - acc(runs, against) for v, (_, runs) in zip(values, loaded)]
        rows.append(row)
    which = "final exit" if exit_index == -1 else f"exit {exit_index + 1 if exit_index >= 0 else exit_index}"
    note = (f"Test accuracy of each run's {which} in {len(paths)} result files "
            f"({', '.join(str(p) for p in paths)}); spread = max - min over the files.")
    return markdown_table(f"Test accuracy (%) across seeds, {which}", headers, rows, note)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.experiments.seeds", description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", help="OUT/NAME.json files of the same experiment (e.g. two seeds)")
    p.add_argument("--exit", type=int, default=-1, help="0-based exit index (default -1: the final exit)")
    p.add_argument("--against", default=None, help="also print every run's difference to this run tag")
    args = p.parse_args(argv)
    try:
        table = seed_table(args.results, args.exit, args.against)
    except (ValueError, OSError) as e:
        p.error(str(e))
    print(table["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
