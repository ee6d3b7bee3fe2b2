"""Experiment `budgets`: expected accuracy under budget distributions (impatient-dnns-amthor-2016.md Table 1).

A budget T (in FLOPs) is drawn from one of the four distributions of
`training.weighting.impatient_weights` on [0, t_max]; the prediction delivered is
that of the last exit whose cost is <= T, and a budget below the first exit's cost
delivers nothing (counted as wrong). So with exit costs c_1 < ... < c_L

    E[accuracy] = sum_k P(c_k <= T < c_{k+1}) * accuracy_k      (c_{L+1} = t_max)

These probabilities are exactly what `impatient_weights` trains with, before it
scales the largest to 1. t_max defaults, as there, to c_L (L + 1) / L of the anytime
model, and the same t_max is used for every model in a table.

Compared: the anytime ResANN trained with each impatient-* weighting (and const),
and the same exits trained as independent networks (OPT), either with the budget
known a priori (run only the largest network that fits: cost c_k of its own) or
interruptible (run the networks in order: cost sum_{j<=k} c_j).

>>> p_none, probs = budget_probabilities("uniform", [1, 2, 3], t_max=4)
>>> p_none, probs
(0.25, [0.25, 0.25, 0.25])
>>> expected_accuracy([0.5, 0.7, 0.9], [1, 2, 3], "uniform", t_max=4)
0.525
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..weighting import BUDGET_DISTRIBUTIONS
from .common import ExperimentConfig, column, markdown_table, pct, schedule_note, total_train_seconds, train_run, \
    write_result
from .weightings import SCHEMES, WeightingSpec, anytime_run_spec, train_opts

LABELS = {"uniform": "uniformly distributed budgets", "large": "large budgets likely",
          "small": "small budgets likely", "normal": "normally distributed budgets"}


def budget_cdf(distribution: str, t_max: float, mean: float | None = None,
               std: float | None = None) -> Callable[[float], float]:
    """CDF of the budget on [0, t_max], as in `training.weighting.impatient_weights`."""
    if distribution == "uniform":
        return lambda t: t / t_max
    if distribution == "large":
        return lambda t: (t / t_max) ** 2
    if distribution == "small":
        return lambda t: 1 - (1 - t / t_max) ** 2
    if distribution == "normal":
        mu = t_max / 2 if mean is None else float(mean)
        sigma = t_max / 6 if std is None else float(std)
        phi = lambda t: 0.5 * (1 + math.erf((t - mu) / (sigma * math.sqrt(2))))  # noqa: E731
        lo, hi = phi(0.0), phi(t_max)
        return lambda t: (phi(t) - lo) / (hi - lo)
    raise ValueError(f"unknown budget distribution {distribution!r}; choose one of {BUDGET_DISTRIBUTIONS}")


def default_t_max(costs: Sequence[float]) -> float:
    """c_L (L + 1) / L, the default support of `impatient_weights`."""
    return float(costs[-1]) * (len(costs) + 1) / len(costs)


def budget_probabilities(distribution: str, costs: Sequence[float], t_max: float | None = None,
                         mean: float | None = None, std: float | None = None) -> tuple[float, list[float]]:
    """(P(T < c_1), [P(exit k is the last one done)]) for non-decreasing cumulative `costs`;
    costs beyond t_max get probability 0."""
    costs = [float(c) for c in costs]
    if not costs or costs[0] <= 0 or any(b < a for a, b in zip(costs, costs[1:])):
        raise ValueError(f"costs must be positive and non-decreasing, got {costs}")
    t_max = default_t_max(costs) if t_max is None else float(t_max)
    cdf = budget_cdf(distribution, t_max, mean, std)
    edges = [min(c, t_max) for c in costs] + [t_max]
    return cdf(edges[0]), [max(0.0, cdf(b) - cdf(a)) for a, b in zip(edges, edges[1:])]


def expected_accuracy(accuracies: Sequence[float], costs: Sequence[float], distribution: str,
                      t_max: float | None = None) -> float:
    """Expected accuracy over budgets T ~ `distribution`; T < c_1 counts as a wrong answer."""
    _, probs = budget_probabilities(distribution, costs, t_max)
    return float(sum(p * a for p, a in zip(probs, accuracies)))


def expected_cost(costs: Sequence[float], distribution: str, t_max: float | None = None) -> float:
    """Expected cost of the exit delivered (0 when none is), e.g. FLOPs when the budget is known a priori."""
    _, probs = budget_probabilities(distribution, costs, t_max)
    return float(sum(p * c for p, c in zip(probs, costs)))


@dataclass(frozen=True)
class BudgetSpec:
    """The ResANN (shared with `weighting`), the distributions, the anytime weightings shown next to
    impatient-* in the main table (`baselines`) and only in the cross table (`others`; `weighting`
    has trained them when both experiments share OUT)."""

    model: WeightingSpec = field(default_factory=WeightingSpec)
    distributions: tuple[str, ...] = BUDGET_DISTRIBUTIONS
    baselines: tuple[str, ...] = ("const",)
    others: tuple[str, ...] = ("linear", "half_end", "sieve", "anytimenet", "adaloss")


def restrict(spec: BudgetSpec, config: ExperimentConfig) -> BudgetSpec:
    """`spec` with the cross table's other weightings limited to those `--schemes` names, if any
    (const and the impatient-* models are always trained).

    >>> restrict(BudgetSpec(), ExperimentConfig(schemes=("half_end", "sieve"))).others
    ('half_end', 'sieve')
    """
    if config.schemes is None:
        return spec
    unknown = [s for s in config.schemes if s not in SCHEMES]
    if unknown or not config.schemes:
        raise ValueError(f"unknown or no weighting schemes {list(config.schemes)}; choose from {', '.join(SCHEMES)}")
    return dataclasses.replace(spec, others=tuple(config.schemes))


def run(config: ExperimentConfig, spec: BudgetSpec = BudgetSpec()) -> dict:
    """Train impatient-* anytime models and every exit as OPT; expected accuracy per distribution."""
    spec = restrict(spec, config)
    weightings = list(spec.baselines) + [f"impatient-{d}" for d in spec.distributions]
    weightings += [w for w in spec.others if w not in weightings]
    exits = tuple(range(spec.model.num_exits))
    total = len(weightings) + len(exits)
    runs = {w: train_run(anytime_run_spec(spec.model, w), config, f"[{i + 1}/{total}] ")
            for i, w in enumerate(weightings)}
    opts = train_opts(spec.model, config, exits, f"[{len(weightings) + 1}..{total}/{total}] ")

    costs = column(runs[weightings[0]], "flops")   # cumulative anytime FLOPs
    t_max = default_t_max(costs)
    opt_acc = [opts[k]["exits"][-1]["test_accuracy"] for k in exits]
    opt_cost = [opts[k]["exits"][-1]["flops"] for k in exits]
    opt_sequential = [sum(opt_cost[:k + 1]) for k in exits]

    def anytime(w: str, d: str) -> float:
        return expected_accuracy(column(runs[w], "test_accuracy"), costs, d, t_max)

    headers = ["budget scheme", "independent, a priori", "independent, in sequence"]
    headers += [f"anytime, {b}" for b in spec.baselines] + ["anytime, impatient-<scheme>",
                                                             "E[MFLOPs] a priori", "E[MFLOPs] anytime"]
    rows, values = [], {}
    for d in spec.distributions:
        row = {"independent_apriori": expected_accuracy(opt_acc, opt_cost, d, t_max),
               "independent_sequence": expected_accuracy(opt_acc, opt_sequential, d, t_max),
               **{f"anytime_{b}": anytime(b, d) for b in spec.baselines},
               "anytime_impatient": anytime(f"impatient-{d}", d)}
        values[d] = row
        rows.append([LABELS.get(d, d)] + [pct(v) for v in row.values()]
                    + [expected_cost(opt_cost, d, t_max) / 1e6, expected_cost(costs, d, t_max) / 1e6])
    note = (f"{schedule_note(config)}. Expected test accuracy (%) for budgets T ~ scheme on [0, {t_max / 1e6:.2f}] "
            f"MFLOPs; no exit done by T counts as wrong. Anytime = ResANN {spec.model.arch_kwargs()} "
            f"interrupted at T; independent = each exit's OPT network, with T known a priori or run in order. "
            f"Last columns: expected FLOPs of the delivered exit (independent nets a priori; anytime model).")
    table = markdown_table(f"Expected accuracy per budget distribution, {config.dataset} "
                           f"(impatient-dnns Table 1 format)", headers, rows, note)

    cross_headers = ["trained with \\ evaluated under"] + [LABELS.get(d, d) for d in spec.distributions]
    cross_rows = [[w] + [pct(anytime(w, d)) for d in spec.distributions] for w in weightings]
    cross_rows.append(["independent, a priori"] + [pct(expected_accuracy(opt_acc, opt_cost, d, t_max))
                                                   for d in spec.distributions])
    cross = markdown_table("Expected accuracy (%): training weighting vs evaluation distribution", cross_headers,
                           cross_rows, f"{schedule_note(config)}. Does training for a distribution win under it?")
    per_exit = markdown_table(
        "Per-exit test accuracy (%) of the models above", ["model"] + [f"exit {k + 1}" for k in exits],
        [[w] + [pct(a) for a in column(runs[w], "test_accuracy")] for w in weightings]
        + [["independent (OPT)"] + [pct(a) for a in opt_acc]],
        f"{schedule_note(config)}. Cumulative anytime MFLOPs: {[round(c / 1e6, 2) for c in costs]}; "
        f"OPT networks' MFLOPs: {[round(c / 1e6, 2) for c in opt_cost]}.")
    result = {"spec": dataclasses.asdict(spec), "t_max": t_max, "costs": costs, "opt_costs": opt_cost,
              "expected_accuracy": values, "runs": runs, "opt": {str(k): v for k, v in opts.items()},
              "tables": [table, cross, per_exit],
              "train_seconds": total_train_seconds(list(runs.values()) + list(opts.values()))}
    write_result("budgets", config, result)
    return result
