"""Experiments `eann` (adaloss-hu-2019.md Sec. 4 / 5.3) and `resnext` (is-resnext-lee-shin-2018.md Sec. 4.1).

- `eann`: an EANN (ResANNs of 1, 2, 4 ... units per section, run in order) against a
  single ANN of the same family whose total FLOPs are closest to the EANN's. Each
  model keeps only the exits that beat every earlier one on validation (EANN Fig. 4,
  `select_exits`, applied to both), and we read off the anytime accuracy at budgets of
  1/16 .. 1 of the EANN's total FLOPs (the last kept exit done by then).
- `resnext`: IS-ResNeXt (thin sub-networks of full depth) against the ResANN of
  `weighting` trained with const weights (shallow exits), at equal FLOPs: for each
  IS-ResNeXt exit, the best ResANN exit that costs no more. With `ResNeXtSpec.i_resnext`
  (the default) also I-ResNeXt (dense branches, independent BN per sub-network, one
  forward pass per sub-network: not interruptible), whose sub-networks are compared at
  their own (a-priori) FLOPs with the ResANN's exits and IS-ResNeXt's sub-networks.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from .budgets import expected_accuracy
from .common import ExperimentConfig, RunSpec, column, markdown_table, pct, schedule_note, total_train_seconds, \
    train_run, write_result
from .weightings import WeightingSpec, anytime_run_spec

BUDGET_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0)


@dataclass(frozen=True)
class EannSpec:
    """EANN members (width, base, units of the first member, exit every `exit_period` units) and
    the weighting of every member's exits; the single ANN's units per section are chosen to
    match the EANN's total FLOPs unless `ann_units` is given."""

    num_anns: int = 3
    base: float = 2.0
    base_units: int = 1
    width: int = 8
    exit_period: int = 1
    weighting: str = "adaloss"
    ann_units: int | None = None

    def eann_kwargs(self) -> dict:
        return {"num_anns": self.num_anns, "base": self.base, "base_units": self.base_units, "width": self.width,
                "exit_period": self.exit_period}

    def ann_kwargs(self, units: int) -> dict:
        return {"num_anns": 1, "base_units": units, "width": self.width, "exit_period": self.exit_period}


def total_flops(arch: str, kwargs: dict, num_classes: int) -> int:
    from ..evaluate import exit_costs
    from ..models import create_model

    return int(exit_costs(create_model(arch, num_classes=num_classes, **kwargs))[0][-1])


def matching_units(spec: EannSpec, num_classes: int, limit: int = 64) -> int:
    """Units per section of the single ANN whose total FLOPs are closest to the EANN's."""
    target = total_flops("eann", spec.eann_kwargs(), num_classes)
    best, best_gap, units = 1, None, 1
    while units <= limit:
        gap = abs(total_flops("eann", spec.ann_kwargs(units), num_classes) - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = units, gap
        elif gap > best_gap:
            break
        units += 1
    return best


def kept_exit_costs(run_folder: Path, kept: list[int]) -> list[int]:
    """Cumulative anytime FLOPs of the kept exits when only they are built (dropped heads cost nothing)."""
    from ..train import load_checkpoint

    model, _ = load_checkpoint(run_folder / "checkpoint.pt")
    return [e.flops for e in model.stage_program(keep=kept).program.exits]


def accuracy_at_budget(accuracies, costs, budget: float) -> float | None:
    """Accuracy of the last exit with cost <= budget (None: no exit done yet)."""
    done = [a for a, c in zip(accuracies, costs) if c <= budget]
    return done[-1] if done else None


def run_eann(config: ExperimentConfig, spec: EannSpec = EannSpec()) -> dict:
    """Train the EANN and the single ANN; anytime accuracy at budget fractions of the EANN's cost."""
    from ..data import dataset_info
    from ..models.eann import select_exits

    num_classes = dataset_info(config.dataset).num_classes
    units = spec.ann_units or matching_units(spec, num_classes)
    specs = {"EANN": RunSpec("eann", "eann", spec.eann_kwargs(), spec.weighting),
             "EANN, one weighting over all exits": RunSpec("eann-flat", "eann", spec.eann_kwargs(), spec.weighting,
                                                           weighting_scope="all"),
             "ANN": RunSpec(f"ann-{units}units", "eann", spec.ann_kwargs(units), spec.weighting)}
    runs = {name: train_run(s, config, f"[{i + 1}/{len(specs)}] ") for i, (name, s) in enumerate(specs.items())}
    curves = {}
    for name, r in runs.items():
        kept = select_exits(column(r, "val_accuracy"))
        acc = [r["exits"][k]["test_accuracy"] for k in kept]
        costs = kept_exit_costs(Path(config.out) / "runs" / specs[name].tag, kept)
        curves[name] = {"kept": kept, "test_accuracy": acc, "flops": costs, "total_flops": r["exits"][-1]["flops"]}
    total = curves["EANN"]["total_flops"]
    t_max = 1.1 * max(c["flops"][-1] for c in curves.values())
    headers = ["model", "units per section", "exits kept / all", "total MFLOPs"]
    headers += [f"acc @ {f:.3g} ({f * total / 1e6:.1f} MF)" for f in BUDGET_FRACTIONS] + ["E[acc] uniform"]
    rows = []
    for name, c in curves.items():
        members = ("+".join(str(u) for u in _eann_units(spec)) if name.startswith("EANN") else str(units))
        rows.append([name, members, f"{len(c['kept'])}/{len(runs[name]['exits'])}", c["total_flops"] / 1e6]
                    + [pct(accuracy_at_budget(c["test_accuracy"], c["flops"], f * total)) for f in BUDGET_FRACTIONS]
                    + [pct(expected_accuracy(c["test_accuracy"], c["flops"], "uniform", t_max))])
    note = (f"{schedule_note(config)}. EANN {spec.eann_kwargs()} vs one ANN of the same family with the closest "
            f"total FLOPs; all with {spec.weighting} weights, each EANN member weighted on its own (its final "
            f"exit at 1, adaloss Sec. 4) unless 'one weighting over all exits'; exits kept by validation accuracy "
            f"(select_exits). "
            f"acc @ B: test accuracy (%) of the last kept exit done within B FLOPs (anytime mode); '-': none yet. "
            f"E[acc] uniform: expected accuracy for budgets uniform on [0, {t_max / 1e6:.1f}] MFLOPs.")
    table = markdown_table(f"EANN vs a single ANN of equal total FLOPs, {config.dataset}", headers, rows, note)
    result = {"spec": dataclasses.asdict(spec), "ann_units": units, "runs": runs, "curves": curves,
              "tables": [table], "train_seconds": total_train_seconds(list(runs.values()))}
    write_result("eann", config, result)
    return result


def _eann_units(spec: EannSpec) -> list[int]:
    """Units per section of each member, as `EANN.__init__` computes them."""
    return [max(1, math.floor(spec.base_units * spec.base ** i + 0.5)) for i in range(spec.num_anns)]


@dataclass(frozen=True)
class ResNeXtSpec:
    """IS-ResNeXt constructor arguments, the shallow-exit ResANN (the `weighting` model, const) and
    I-ResNeXt's constructor arguments (None: no I-ResNeXt). The default I-ResNeXt has IS-ResNeXt's
    depth, width and branches but a bottleneck of 2, so that its sub-networks' own FLOPs (3.4, 5.3,
    7.1 M at 32x32) sit next to IS-ResNeXt's first two sub-networks and the ResANN's exit 2."""

    is_resnext: dict = field(default_factory=lambda: {"blocks": 6, "width": 24, "num_subnets": 3, "bottleneck": 4,
                                                      "cardinality": 3})
    shallow: WeightingSpec = field(default_factory=WeightingSpec)
    weighting: str = "const"
    i_resnext: dict | None = field(default_factory=lambda: {"blocks": 6, "width": 24, "num_subnets": 3,
                                                             "bottleneck": 2, "cardinality": 3})


def apriori_flops(arch: str, kwargs: dict, num_classes: int) -> list[int]:
    """FLOPs of each exit's a-priori slice (only the steps that exit needs): for I-ResNeXt sub-network
    k alone, for interruptible models the same as the cumulative anytime FLOPs."""
    import torch

    from ..models import create_model

    program = create_model(arch, num_classes=num_classes, **kwargs).stage_program(torch.zeros(1, 3, 32, 32)).program
    return [int(sum(program.graphs[program.steps[i].graph].flops for i in program.apriori_plan(k)))
            for k in range(len(program.exits))]


def best_within(flops: list, val: list, budget: float) -> int | None:
    """Index of the exit with the best validation accuracy among those costing <= budget (None: none)."""
    fits = [k for k, f in enumerate(flops) if f <= budget]
    return max(fits, key=lambda i: val[i]) if fits else None


def run_resnext(config: ExperimentConfig, spec: ResNeXtSpec = ResNeXtSpec()) -> dict:
    """Train IS-ResNeXt (and the ResANN unless `weighting` already did, and I-ResNeXt if the spec has
    one); compare at equal FLOPs."""
    total = 3 if spec.i_resnext is not None else 2
    thin = train_run(RunSpec("is-resnext", "is-resnext", dict(spec.is_resnext), spec.weighting), config,
                     f"[1/{total}] ")
    shallow = train_run(anytime_run_spec(spec.shallow, spec.weighting), config, f"[2/{total}] ")
    s_acc, s_flops, s_val = column(shallow, "test_accuracy"), column(shallow, "flops"), column(shallow, "val_accuracy")
    headers = ["IS-ResNeXt exit", "MFLOPs", "params", "accuracy %", "confidence %",
               "ResANN exit <= FLOPs (best on val)", "its MFLOPs", "its accuracy %", "thin - shallow (pp)"]
    rows = []
    for e in thin["exits"]:
        k = best_within(s_flops, s_val, e["flops"])  # chosen on validation
        diff = None if k is None else pct(e["test_accuracy"] - s_acc[k])
        rows.append([e["index"] + 1, e["flops"] / 1e6, e["params"], pct(e["test_accuracy"]),
                     pct(e["test_confidence"]), None if k is None else k + 1,
                     None if k is None else s_flops[k] / 1e6, None if k is None else pct(s_acc[k]), diff])
    t_max = 1.1 * max(s_flops[-1], thin["exits"][-1]["flops"])
    exp = {"IS-ResNeXt": expected_accuracy(column(thin, "test_accuracy"), column(thin, "flops"), "uniform", t_max),
           "ResANN": expected_accuracy(s_acc, s_flops, "uniform", t_max)}
    note = (f"{schedule_note(config)}. IS-ResNeXt {spec.is_resnext} (thin sub-networks, full depth) vs ResANN "
            f"{spec.shallow.arch_kwargs()} (shallow exits, MFLOPs {[round(f / 1e6, 2) for f in s_flops]}, "
            f"accuracy % {[round(100 * a, 1) for a in s_acc]}); both {spec.weighting} weights. Expected accuracy "
            f"for budgets uniform on [0, {t_max / 1e6:.1f}] MFLOPs: IS-ResNeXt {100 * exp['IS-ResNeXt']:.1f}%, "
            f"ResANN {100 * exp['ResANN']:.1f}%.")
    table = markdown_table(f"Thin (IS-ResNeXt) vs shallow (ResANN) sub-networks at equal FLOPs, {config.dataset}",
                           headers, rows, note)
    runs, tables = {"is-resnext": thin, "resann": shallow}, [table]
    if spec.i_resnext is not None:
        dense = train_run(RunSpec("i-resnext", "i-resnext", dict(spec.i_resnext), spec.weighting), config,
                          f"[3/{total}] ")
        runs["i-resnext"] = dense
        tables.append(_i_resnext_table(config, spec, dense, thin, shallow, exp, t_max))
    result = {"spec": dataclasses.asdict(spec), "runs": runs, "expected_accuracy_uniform": exp, "tables": tables,
              "train_seconds": total_train_seconds(list(runs.values()))}
    write_result("resnext", config, result)
    return result


def _i_resnext_table(config: ExperimentConfig, spec: ResNeXtSpec, dense: dict, thin: dict, shallow: dict,
                     exp: dict, t_max: float) -> dict:
    """I-ResNeXt's sub-networks at their own FLOPs against the best ResANN exit and IS-ResNeXt
    sub-network that cost no more (chosen on validation); adds I-ResNeXt to `exp`."""
    from ..data import dataset_info

    own = apriori_flops("i-resnext", spec.i_resnext, dataset_info(config.dataset).num_classes)
    d_acc, d_cum = column(dense, "test_accuracy"), column(dense, "flops")
    s_acc, s_flops, s_val = column(shallow, "test_accuracy"), column(shallow, "flops"), column(shallow, "val_accuracy")
    t_acc, t_flops, t_val = column(thin, "test_accuracy"), column(thin, "flops"), column(thin, "val_accuracy")
    headers = ["I-ResNeXt sub-network", "own MFLOPs (a priori)", "cumulative MFLOPs (anytime)", "params",
               "accuracy %", "ResANN exit <= own FLOPs", "its accuracy %", "I - ResANN (pp)",
               "IS-ResNeXt exit <= own FLOPs", "its accuracy %", "I - IS (pp)"]
    rows = []
    for k, e in enumerate(dense["exits"]):
        s = best_within(s_flops, s_val, own[k])
        t = best_within(t_flops, t_val, own[k])
        rows.append([k + 1, own[k] / 1e6, d_cum[k] / 1e6, e["params"], pct(e["test_accuracy"]),
                     None if s is None else f"{s + 1} ({s_flops[s] / 1e6:.2f} MF)",
                     None if s is None else pct(s_acc[s]), None if s is None else pct(d_acc[k] - s_acc[s]),
                     None if t is None else f"{t + 1} ({t_flops[t] / 1e6:.2f} MF)",
                     None if t is None else pct(t_acc[t]), None if t is None else pct(d_acc[k] - t_acc[t])])
    t_max = max(t_max, 1.1 * d_cum[-1])
    exp["I-ResNeXt, a priori"] = expected_accuracy(d_acc, own, "uniform", t_max)
    exp["I-ResNeXt, anytime"] = expected_accuracy(d_acc, d_cum, "uniform", t_max)
    others = {name: expected_accuracy(column(r, "test_accuracy"), column(r, "flops"), "uniform", t_max)
              for name, r in (("IS-ResNeXt", thin), ("ResANN", shallow))}
    note = (f"{schedule_note(config)}. I-ResNeXt {spec.i_resnext} ({spec.weighting} weights): sub-network k runs "
            f"alone (its own forward pass, independent BN), so with the budget known a priori it costs its own "
            f"FLOPs; run in order (anytime) it costs the sum. Compared with the best ResANN exit and IS-ResNeXt "
            f"sub-network (both interruptible) that cost no more than its own FLOPs, chosen on validation. "
            f"Expected accuracy for budgets uniform on [0, {t_max / 1e6:.1f}] MFLOPs: I-ResNeXt "
            f"{100 * exp['I-ResNeXt, a priori']:.1f}% a priori, {100 * exp['I-ResNeXt, anytime']:.1f}% anytime; "
            f"IS-ResNeXt {100 * others['IS-ResNeXt']:.1f}%, ResANN {100 * others['ResANN']:.1f}%.")
    return markdown_table(f"I-ResNeXt sub-networks at their own FLOPs vs ResANN exits and IS-ResNeXt, "
                          f"{config.dataset}", headers, rows, note)
