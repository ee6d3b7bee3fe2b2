"""Experiment `resnext-solo`: solely vs jointly trained thin and shallow sub-networks (is-resnext-lee-shin-2018.md
Sec. 4.1, "Shallow versus thin sub-networks", Fig. 3c).

Thin side: I-ResNeXt (the `resnext` experiment's, const weights) trained jointly, and each of
its sub-networks k trained alone. Sub-network k of I-ResNeXt (K sub-networks, C branches in K
groups of G = C/K) is the stem, branch groups 1..k of every block, its own BN layers and head
k; that is exactly an I-ResNeXt with one sub-network of kG branches (`solo_kwargs`): same
parameters and FLOPs (the convolutions of k groups of G branches, concatenated, are one
k-group convolution of kG branches; their summed outputs are one conv over the
concatenation). Shallow side: the ResANN of `weighting` with const weights (joint) and the
OPT networks of `budgets` (solo: the blocks below exit k with one exit, one network per exit).

Tables: the cost of joint training (joint - solo) per thin sub-network and per shallow exit,
with the 95% band of a difference of two accuracies on the test set; and, solo against solo
and joint against joint, each thin sub-network against the best shallow network or exit that
costs no more than its own FLOPs (chosen on validation, `best_within`).

Runs are trained (or reused from OUT/runs) like every experiment's, or taken from earlier
result JSONs with `--reference` (e.g. the committed budgets.json for the const ResANN and
the OPT networks, resnext.json for I-ResNeXt), so only the solo thin networks need training.

>>> solo_kwargs({"blocks": 6, "width": 24, "num_subnets": 3, "bottleneck": 2, "cardinality": 3}, 2)
{'blocks': 6, 'width': 24, 'num_subnets': 1, 'bottleneck': 2, 'cardinality': 2}
>>> round(difference_band(0.9, 0.8, 10000), 3)
0.98
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .common import ExperimentConfig, RunSpec, column, markdown_table, pct, reference_runs, schedule_note, \
    total_train_seconds, train_or_reference, write_result
from .ensembles import ResNeXtSpec, apriori_flops, best_within
from .weightings import WeightingSpec, anytime_run_spec, opt_run_spec


@dataclass(frozen=True)
class SoloSpec:
    """The jointly trained I-ResNeXt (its sub-networks are also trained alone), the ResANN whose
    exits are the shallow sub-networks (joint: `weighting`; solo: one OPT network per exit) and
    the weighting of both joint models."""

    i_resnext: dict = field(default_factory=lambda: dict(ResNeXtSpec().i_resnext))
    shallow: WeightingSpec = field(default_factory=WeightingSpec)
    weighting: str = "const"


def solo_kwargs(i_resnext: dict, k: int) -> dict:
    """I-ResNeXt kwargs of sub-network k (1-based) alone: one sub-network of k groups' branches."""
    from ..models.resnext import IResNeXt

    groups = IResNeXt(num_classes=2, **i_resnext).G  # branches per group (cardinality may be left to default)
    return {**i_resnext, "num_subnets": 1, "cardinality": k * groups}


def solo_run_spec(spec: SoloSpec, k: int) -> RunSpec:
    return RunSpec(f"i-resnext-solo{k}", "i-resnext", solo_kwargs(spec.i_resnext, k), spec.weighting)


def difference_band(p1: float, p2: float, n: int) -> float:
    """Half-width (points) of the 95% band of the difference of two accuracies on n test images."""
    return 196.0 * math.sqrt(max(p1 * (1 - p1) + p2 * (1 - p2), 0.0) / max(n, 1))


def run(config: ExperimentConfig, spec: SoloSpec = SoloSpec()) -> dict:
    """Train (or reuse) I-ResNeXt, its sub-networks alone, the const ResANN and its OPT networks; tables."""
    from ..data import dataset_info

    references = reference_runs(config.references, config)
    K, L = spec.i_resnext["num_subnets"], spec.shallow.num_exits
    total = 2 + K + L
    joint = train_or_reference(RunSpec("i-resnext", "i-resnext", dict(spec.i_resnext), spec.weighting), config,
                               references, f"[1/{total}] ")
    solos = [train_or_reference(solo_run_spec(spec, k), config, references, f"[{k + 1}/{total}] ")
             for k in range(1, K + 1)]
    const = train_or_reference(anytime_run_spec(spec.shallow, spec.weighting), config, references,
                               f"[{K + 2}/{total}] ")
    opts = [train_or_reference(opt_run_spec(spec.shallow, k), config, references, f"[{K + 3 + k}/{total}] ")
            for k in range(L)]
    own = apriori_flops("i-resnext", spec.i_resnext, dataset_info(config.dataset).num_classes)
    for k, solo in enumerate(solos):
        if solo["exits"][0]["flops"] != own[k]:
            raise ValueError(f"{solo['tag']} costs {solo['exits'][0]['flops']} FLOPs, sub-network {k + 1} of "
                             f"I-ResNeXt {own[k]}: not the same network")
    tables, summary = solo_tables(config, spec, joint, solos, const, opts, own)
    runs = {"i-resnext": joint, **{s["tag"]: s for s in solos}, "resann": const}
    result = {"spec": dataclasses.asdict(spec), "own_flops": own, "runs": runs,
              "opt": {str(k): o for k, o in enumerate(opts)}, **summary, "tables": tables,
              "train_seconds": total_train_seconds(list(runs.values()) + opts)}
    write_result("resnext-solo", config, result)
    return result


def solo_tables(config: ExperimentConfig, spec: SoloSpec, joint: dict, solos: list[dict], const: dict,
                opts: list[dict], own: list[int]) -> tuple[list[dict], dict]:
    """The three tables (thin joint vs solo, shallow joint vs solo, thin vs shallow at equal FLOPs)
    and a summary: joint - solo per sub-network ("joint_cost": {"thin", "shallow"}, points)."""
    n = joint.get("num_test") or 0
    j_acc = column(joint, "test_accuracy")
    s_acc = [s["exits"][0]["test_accuracy"] for s in solos]
    thin_cost = [pct(j - s) for j, s in zip(j_acc, s_acc)]
    thin = markdown_table(
        f"Cost of joint training, thin sub-networks (I-ResNeXt), {config.dataset}",
        ["sub-network", "own MFLOPs", "params", "solo accuracy %", "joint accuracy %", "joint - solo (pp)",
         "95% band (pp)"],
        [[k + 1, own[k] / 1e6, solos[k]["exits"][0]["params"], pct(s_acc[k]), pct(j_acc[k]), thin_cost[k],
          difference_band(j_acc[k], s_acc[k], n)] for k in range(len(solos))],
        f"{schedule_note(config)}. Joint: I-ResNeXt {spec.i_resnext} ({spec.weighting} weights, all sub-networks "
        f"trained together). Solo: sub-network k trained alone (I-ResNeXt with one sub-network of k groups' "
        f"branches, same parameters and FLOPs). Band: 1.96 sqrt((p1(1-p1) + p2(1-p2)) / {n}).")
    c_acc, o_acc = column(const, "test_accuracy"), [o["exits"][0]["test_accuracy"] for o in opts]
    o_flops, o_val = [o["exits"][0]["flops"] for o in opts], [o["exits"][0]["val_accuracy"] for o in opts]
    shallow_cost = [pct(c - o) for c, o in zip(c_acc, o_acc)]
    shallow = markdown_table(
        f"Cost of joint training, shallow exits (ResANN), {config.dataset}",
        ["exit", "solo (OPT) MFLOPs", "joint cumulative MFLOPs", "solo (OPT) accuracy %", "joint accuracy %",
         "joint - solo (pp)", "95% band (pp)"],
        [[k + 1, o_flops[k] / 1e6, const["exits"][k]["flops"] / 1e6, pct(o_acc[k]), pct(c_acc[k]),
          shallow_cost[k], difference_band(c_acc[k], o_acc[k], n)] for k in range(len(opts))],
        f"{schedule_note(config)}. Joint: ResANN {spec.shallow.arch_kwargs()} with {spec.weighting} weights. "
        f"Solo: OPT, the blocks below exit k with one exit, trained alone.")
    c_flops, c_val = column(const, "flops"), column(const, "val_accuracy")
    rows = []
    for k in range(len(solos)):
        o, c = best_within(o_flops, o_val, own[k]), best_within(c_flops, c_val, own[k])
        rows.append([k + 1, own[k] / 1e6, pct(s_acc[k]),
                     None if o is None else f"{o + 1} ({o_flops[o] / 1e6:.2f} MF)",
                     None if o is None else pct(o_acc[o]), None if o is None else pct(s_acc[k] - o_acc[o]),
                     None if o is None else difference_band(s_acc[k], o_acc[o], n), pct(j_acc[k]),
                     None if c is None else f"{c + 1} ({c_flops[c] / 1e6:.2f} MF)",
                     None if c is None else pct(c_acc[c]), None if c is None else pct(j_acc[k] - c_acc[c])])
    versus = markdown_table(
        f"Thin vs shallow at equal FLOPs, solo and joint (Fig. 3c), {config.dataset}",
        ["thin sub-network", "own MFLOPs", "solo thin %", "solo shallow (OPT) <= FLOPs", "its accuracy %",
         "solo thin - solo shallow (pp)", "95% band (pp)", "joint thin %", "joint shallow exit <= FLOPs",
         "its accuracy %", "joint thin - joint shallow (pp)"],
        rows,
        f"{schedule_note(config)}. For each thin sub-network, the shallow network (OPT) or joint ResANN exit with "
        f"the best validation accuracy among those costing no more than its own FLOPs.")
    summary = {"joint_cost": {"thin": thin_cost, "shallow": shallow_cost},
               "answer": (f"Joint - solo (points): thin sub-networks {_points(thin_cost)}, shallow exits "
                          f"{_points(shallow_cost)}; largest loss from joint training: thin "
                          f"{max(0.0, -min(thin_cost)):.2f}, shallow {max(0.0, -min(shallow_cost)):.2f} "
                          f"(paper, CIFAR-10: at most 1.2 and up to 5.1).")}
    return [thin, shallow, versus], summary


def _points(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:+.2f}" for v in values) + "]"
