"""Experiment `weighting`: loss-weighting schemes on one small ResANN, vs OPT (adaloss-hu-2019.md Table 1).

Every scheme of training/weighting.py trains the same ResANN (exit after every block,
6 exits by default). OPT for exit k is a network of exactly the blocks below exit k
with a single exit, trained on its own ("each exit trained as its own network",
adaloss Sec. 3); at this scale only some exits get one (`opt_exits`). Reported:
test error per exit, and AdaLoss Table 1's "relative percentage increase in error
from the OPT", 100 * (err_scheme - err_OPT) / err_OPT, at the exits that have an OPT.

>>> opt_arch_kwargs((8, 16, 32), 2, 2)
{'widths': [8, 16], 'blocks_per_section': [2, 1], 'exit_every': 3}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .common import ExperimentConfig, RunSpec, column, markdown_table, pct, schedule_note, total_train_seconds, \
    train_run, write_result

SCHEMES = ("const", "linear", "half_end", "sieve", "anytimenet", "adaloss", "impatient-uniform")


@dataclass(frozen=True)
class WeightingSpec:
    """The ResANN all schemes share (widths per section, blocks per section, one exit per block),
    the schemes, and which exits (0-based) get an OPT network."""

    widths: tuple[int, ...] = (8, 16, 32)
    blocks_per_section: int = 2
    schemes: tuple[str, ...] = SCHEMES
    opt_exits: tuple[int, ...] = (0, 1, 3, 5)

    @property
    def num_exits(self) -> int:
        return len(self.widths) * self.blocks_per_section

    def arch_kwargs(self) -> dict:
        return {"widths": list(self.widths), "blocks_per_section": self.blocks_per_section, "exit_every": 1}

    def label(self) -> str:
        return f"resann{self.num_exits}"


def opt_arch_kwargs(widths, blocks_per_section: int, exit_index: int) -> dict:
    """ResANN kwargs of OPT for `exit_index`: the first exit_index + 1 blocks of the anytime ResANN
    (same widths, strides and block types) with one exit at the end."""
    blocks, left = [], exit_index + 1
    for _ in widths:
        if left <= 0:
            break
        blocks.append(min(blocks_per_section, left))
        left -= blocks[-1]
    if left > 0:
        raise ValueError(f"exit {exit_index} is beyond the {len(widths) * blocks_per_section} blocks of the model")
    return {"widths": [int(w) for w in widths[:len(blocks)]], "blocks_per_section": blocks,
            "exit_every": exit_index + 1}


def anytime_run_spec(spec: WeightingSpec, weighting: str) -> RunSpec:
    return RunSpec(f"{spec.label()}-{weighting}", "resann", spec.arch_kwargs(), weighting)


def opt_run_spec(spec: WeightingSpec, exit_index: int) -> RunSpec:
    return RunSpec(f"{spec.label()}-opt{exit_index}", "resann",
                   opt_arch_kwargs(spec.widths, spec.blocks_per_section, exit_index), "const")


def train_opts(spec: WeightingSpec, config: ExperimentConfig, exits, progress: str = "") -> dict[int, dict]:
    """OPT runs for `exits`: {exit index: run summary}."""
    return {k: train_run(opt_run_spec(spec, k), config, progress) for k in exits}


def relative_increase(error: float, opt_error: float) -> float | None:
    """AdaLoss Table 1: 100 * (error - OPT error) / OPT error (None when OPT makes no error)."""
    return None if opt_error <= 0 else 100.0 * (error - opt_error) / opt_error


def restrict(spec: WeightingSpec, config: ExperimentConfig) -> WeightingSpec:
    """`spec` with the schemes and OPT exits the config names (`--schemes`, `--opt-exits`), if any.

    >>> restrict(WeightingSpec(), ExperimentConfig(schemes=("const", "adaloss"), opt_exits=(5,))).opt_exits
    (5,)
    """
    if config.schemes is not None:
        unknown = [s for s in config.schemes if s not in SCHEMES]
        if unknown or not config.schemes:
            raise ValueError(f"unknown or no weighting schemes {list(config.schemes)}; choose from {', '.join(SCHEMES)}")
        spec = dataclasses.replace(spec, schemes=tuple(config.schemes))
    if config.opt_exits is not None:
        bad = [k for k in config.opt_exits if not 0 <= k < spec.num_exits]
        if bad:
            raise ValueError(f"OPT exits {[k + 1 for k in bad]} are not exits 1..{spec.num_exits} of the model")
        spec = dataclasses.replace(spec, opt_exits=tuple(sorted(set(config.opt_exits))))
    return spec


def run(config: ExperimentConfig, spec: WeightingSpec = WeightingSpec()) -> dict:
    """Train every scheme and the OPT exits; tables of errors and relative increase vs OPT."""
    spec = restrict(spec, config)
    total = len(spec.schemes) + len(spec.opt_exits)
    runs = {}
    for i, scheme in enumerate(spec.schemes):
        runs[scheme] = train_run(anytime_run_spec(spec, scheme), config, f"[{i + 1}/{total}] ")
    opts = {}
    for j, k in enumerate(spec.opt_exits):
        opts[k] = train_run(opt_run_spec(spec, k), config, f"[{len(spec.schemes) + j + 1}/{total}] ")

    flops = column(next(iter(runs.values())), "flops")
    final = flops[-1]
    headers = ["scheme"] + [f"exit {k + 1} ({flops[k] / 1e6:.1f} MFLOPs)" for k in range(len(flops))]
    rows = [[scheme] + [pct(1 - a) for a in column(r, "test_accuracy")] for scheme, r in runs.items()]
    opt_error = {k: 1 - o["exits"][-1]["test_accuracy"] for k, o in opts.items()}
    rows.append(["OPT (own network)"] + [pct(opt_error.get(k)) for k in range(len(flops))])
    note = (f"{schedule_note(config)}. ResANN {spec.arch_kwargs()}; OPT = the blocks up to that exit trained "
            f"alone with one exit (const weighting); '-' = no OPT trained at this scale.")
    errors = markdown_table(f"Test error (%) per exit, {config.dataset}", headers, rows, note)

    opt_cols = sorted(opts)
    rel_headers = ["scheme"] + [f"exit {k + 1} ({flops[k] / final:.2f} of cost)" for k in opt_cols] + ["mean"]
    rel_rows = [["OPT"] + [0.0] * len(opt_cols) + [0.0]]
    relative = {}
    for scheme, r in runs.items():
        acc = column(r, "test_accuracy")
        values = [relative_increase(1 - acc[k], opt_error[k]) for k in opt_cols]
        relative[scheme] = dict(zip(opt_cols, values))
        known = [v for v in values if v is not None]
        rel_rows.append([scheme] + values + [sum(known) / len(known) if known else None])
    rel_note = (f"{schedule_note(config)}. Format of adaloss-hu-2019.md Table 1: 100 * (error - OPT error) / "
                f"OPT error at the exits that have an OPT; lower is better, negative = better than OPT.")
    rel = markdown_table(f"Relative % increase in test error vs OPT, {config.dataset}", rel_headers, rel_rows,
                         rel_note, digits=1)
    all_runs = list(runs.values()) + list(opts.values())
    result = {"spec": dataclasses.asdict(spec), "runs": runs, "opt": {str(k): v for k, v in opts.items()},
              "flops": flops, "relative_increase": {s: {str(k): v for k, v in d.items()} for s, d in relative.items()},
              "tables": [errors, rel], "train_seconds": total_train_seconds(all_runs)}
    write_result("weighting", config, result)
    return result
