"""Reproduce the papers' claims at the scale the machine allows (issue 3).

    python -m training.experiments anytimenet --epochs 3 --limit-train 8000 --figures docs/figures
    python -m training.experiments weighting --json

Experiments (each trains a few small models through `training.train`, prints its
tables as markdown, and writes OUT/NAME.json and OUT/NAME.md):

- `anytimenet`: AnytimeNet vs BASELINE, Fig. 3 / Table I / Table II (anytimenet.py)
- `anytimenet-bn`: AnytimeNet with shared vs per-iteration BatchNorm (statistics, or statistics
  and scale/shift) against BASELINE (anytimenet_bn.py)
- `weighting`: const, linear, half_end, sieve, anytimenet, adaloss, impatient-uniform
  on one ResANN, relative error increase vs OPT as in AdaLoss Table 1 (weightings.py)
- `eann`: EANN vs a single ANN of equal total FLOPs (ensembles.py)
- `resnext`: IS-ResNeXt (thin) vs ResANN (shallow) exits at equal FLOPs (ensembles.py)
- `budgets`: expected accuracy per budget distribution, Impatient DNNs Table 1 (budgets.py)
- `resnext-solo`: I-ResNeXt's sub-networks and the ResANN's exits trained alone vs jointly,
  IS-ResNeXt Fig. 3c (resnext_solo.py; `--reference` takes runs from earlier result JSONs)

Runs are cached in OUT/runs/<tag>/ and shared between experiments (see common.py).
"""

from __future__ import annotations

from typing import Callable

from . import anytimenet, anytimenet_bn, budgets, ensembles, resnext_solo, weightings
from .common import ExperimentConfig, RunSpec, schedule_note, train_run

#: name -> function(config) -> result dict (with "tables"); in the order `all` runs them.
EXPERIMENTS: dict[str, Callable[[ExperimentConfig], dict]] = {
    "anytimenet": anytimenet.run,
    "anytimenet-bn": anytimenet_bn.run,
    "weighting": weightings.run,
    "budgets": budgets.run,
    "resnext": ensembles.run_resnext,
    "eann": ensembles.run_eann,
    "resnext-solo": resnext_solo.run,
}

__all__ = ["EXPERIMENTS", "ExperimentConfig", "RunSpec", "run_experiment", "schedule_note", "train_run"]


def run_experiment(name: str, config: ExperimentConfig) -> dict:
    """Run one experiment by name with its default (small) architecture spec."""
    try:
        function = EXPERIMENTS[name]
    except KeyError:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}") from None
    return function(config)
