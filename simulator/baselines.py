"""Baselines on the same frames, budgets and latency draws as the controller's replay.

>>> outs = baseline_outcomes(setup, preds, budgets_s, starts_s, draws, threshold=0.9)   # doctest: +SKIP
>>> sorted(outs)                                                                        # doctest: +SKIP
['best-static', 'static:0', 'static:1', 'static:2', 'threshold:0.9']

* `static:K` - exit K as a stand-alone static model: it always runs its a-priori
  slice (no deadline monitor); no result if it does not finish by the deadline.
* `best-static` - the best-ranked static model whose slice fits the scenario's
  worst-case (smallest) budget by its tail latency (+ margin), chosen offline; no
  policy if none fits (every frame is then a miss).
* `threshold:T` - early exit by confidence with no deadline awareness: run the
  anytime plan until an exit's calibrated confidence reaches T (or the last
  exit), deliver that; a result after the deadline counts as a miss.
* `router` (bench/bench_budgets.py) - the same with one threshold per exit,
  calibrated on the validation split the way early-exit libraries do it
  (`calibrate_thresholds`: the lowest threshold per exit that keeps the
  accuracy of the frames leaving there within `drop` of the final exit's).
"""

from __future__ import annotations

import numpy as np

from .fast import ExitPredictions, ReplaySetup
from .metrics import STATUS, Outcomes
from .timing import LatencyDraws


def _outcomes(exit_: np.ndarray, status: np.ndarray, preds: ExitPredictions, start: np.ndarray,
              deadline: np.ndarray, delivered: np.ndarray, error: np.ndarray) -> Outcomes:
    rows = np.arange(len(exit_))
    col = np.maximum(exit_, 0)
    none = exit_ < 0
    return Outcomes(exit_, status, np.where(none, -1, preds.label[rows, col]),
                    np.where(none, -1, preds.coarse_label[rows, col]), ~none & preds.coarse_level[rows, col],
                    start, deadline, delivered, error, np.zeros(len(exit_), np.int64), np.zeros(len(exit_), bool))


def static_exit(setup: ReplaySetup, preds: ExitPredictions, budgets_s, starts_s, draws: LatencyDraws, k: int,
                valid=None, bad_steps=None, dispatch_s: float = 0.0) -> Outcomes:
    """Exit `k` as a stand-alone model (see the module docstring)."""
    n = len(budgets_s)
    start = np.asarray(starts_s, np.float64)
    deadline = start + np.asarray(budgets_s, np.float64)
    finish = start + dispatch_s + draws.cumulative(k)[:, -1]
    error = np.zeros(n, bool) if valid is None else ~np.asarray(valid, bool)
    if bad_steps is not None:
        error |= np.asarray(bad_steps)[:, list(setup.plan.slices[k])].any(axis=1)
    exit_ = np.where(error, -1, k)
    status = np.where(error, STATUS["no_result"], STATUS["final"])
    return _outcomes(exit_, status, preds, start, deadline, np.where(error, start, finish), error)


def best_static_exit(setup: ReplaySetup, budgets_s) -> int | None:
    """The best-ranked exit whose slice tail latency + margin fits the smallest budget, or None."""
    worst = float(np.min(budgets_s))
    for k in setup.plan.apriori_order:
        if setup.slice_tail[k] + setup.margin_s <= worst:
            return k
    return None


def confidence_threshold(setup: ReplaySetup, preds: ExitPredictions, budgets_s, starts_s, draws: LatencyDraws,
                         threshold, valid=None, bad_steps=None, dispatch_s: float = 0.0) -> Outcomes:
    """Run until confident, ignoring the deadline (see the module docstring). `threshold` is one number or
    one per exit."""
    per_exit = np.broadcast_to(np.asarray(threshold, np.float64), (len(setup.plan.segments),))
    n = len(budgets_s)
    start = np.asarray(starts_s, np.float64)
    deadline = start + np.asarray(budgets_s, np.float64)
    lat = dispatch_s + draws.cumulative()
    bad = np.zeros((n, lat.shape[1]), bool) if bad_steps is None else np.asarray(bad_steps, bool)
    failed_before = np.cumsum(bad, axis=1) > 0
    exit_ = np.full(n, -1)
    status = np.full(n, STATUS["final"])
    delivered = start.copy()
    error = np.zeros(n, bool) if valid is None else ~np.asarray(valid, bool)
    running = ~error
    for k, steps in setup.plan.segments:
        end = steps[-1]
        broke = running & failed_before[:, end]
        status[broke] = STATUS["degraded"]
        error |= broke
        running &= ~broke
        exit_[running] = k
        delivered[running] = start[running] + lat[running, end]
        stop = running & (preds.confidence[:, k] >= per_exit[k])
        status[stop] = STATUS["confidence"]
        running &= ~stop
    status[exit_ < 0] = STATUS["no_result"]
    return _outcomes(exit_, status, preds, start, deadline, delivered, error)


def baseline_outcomes(setup: ReplaySetup, preds: ExitPredictions, budgets_s, starts_s, draws: LatencyDraws,
                      threshold: float = 0.9, valid=None, bad_steps=None,
                      dispatch_s: float = 0.0) -> tuple[dict[str, Outcomes], int | None]:
    """All baselines for one scenario, and the exit `best-static` chose (None: none fits)."""
    out = {}
    for k in range(len(setup.plan.slices)):
        out[f"static:{k}"] = static_exit(setup, preds, budgets_s, starts_s, draws, k, valid, bad_steps, dispatch_s)
    best = best_static_exit(setup, np.asarray(budgets_s) - dispatch_s)
    if best is not None:
        out["best-static"] = out[f"static:{best}"]
    else:
        n = len(budgets_s)
        start = np.asarray(starts_s, np.float64)
        out["best-static"] = _outcomes(np.full(n, -1), np.full(n, STATUS["no_result"]), preds, start,
                                       start + np.asarray(budgets_s), start, np.zeros(n, bool))
    out[f"threshold:{threshold:g}"] = confidence_threshold(setup, preds, budgets_s, starts_s, draws, threshold,
                                                           valid, bad_steps, dispatch_s)
    return out, best


def calibrate_thresholds(confidence: np.ndarray, correct: np.ndarray, drop: float = 0.01) -> tuple[float, ...]:
    """Per-exit confidence thresholds from validation frames, as early-exit libraries calibrate them.

    `confidence` and `correct` are (frames, exits). For each exit but the last, the lowest threshold whose
    exiting frames (confidence >= threshold, among those that reached the exit) are correct at least as
    often as the final exit minus `drop`; the last exit takes every frame (threshold 0).
    """
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, bool)
    target = float(correct[:, -1].mean()) - drop
    remaining = np.ones(len(confidence), bool)
    thresholds = []
    for k in range(confidence.shape[1] - 1):
        chosen = 1.0 + 1e-9                      # nobody exits here unless a threshold qualifies
        for t in np.unique(np.round(confidence[remaining, k], 4)):
            leave = remaining & (confidence[:, k] >= t)
            if leave.any() and correct[leave, k].mean() >= target:
                chosen = float(t)
                break
        thresholds.append(chosen)
        remaining &= confidence[:, k] < chosen
    return tuple(thresholds) + (0.0,)
