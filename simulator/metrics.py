"""Per-frame outcomes of a replay (any engine, any policy) and the metrics computed from them.

>>> out = outcomes_from_results(results)                 # FrameResults of a live replay   # doctest: +SKIP
>>> m = compute_metrics(out, truth=cache.labels, num_exits=4)                              # doctest: +SKIP
>>> m.accuracy, m.miss_rate, m.exit_histogram                                              # doctest: +SKIP
(0.93, 0.01, (12, 80, 300, 600, 8))

A frame counts as correct when a result was delivered by its deadline and its
label is the ground truth; frames without a result count as wrong. A *miss* is
a frame with no result by the deadline (none at all, or one handed over late),
as the controller counts `missed_deadlines`; frames rejected as corrupt and
backend faults are counted as `errors` instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from edge_anytime.results import FrameResult, StopReason

STATUS_NAMES = tuple(s.value for s in StopReason)
STATUS = {name: code for code, name in enumerate(STATUS_NAMES)}


@dataclass(frozen=True, eq=False)
class Outcomes:
    """What happened to each frame (arrays of equal length)."""

    exit: np.ndarray          # int: exit index of the delivered result, -1 for none
    status: np.ndarray        # int: code into STATUS_NAMES
    label: np.ndarray         # int: delivered label, -1 for none
    coarse_label: np.ndarray  # int: delivered coarse label, -1 for none
    coarse_level: np.ndarray  # bool: the result was reported at the coarse level
    start_s: np.ndarray
    deadline_s: np.ndarray
    delivered_s: np.ndarray
    error: np.ndarray         # bool: rejected frame or backend fault
    late_steps: np.ndarray    # int: steps whose output came after the watchdog delivered
    fallback: np.ndarray      # bool: the fallback precision's graphs computed the result

    def __len__(self) -> int:
        return len(self.exit)

    @property
    def on_time(self) -> np.ndarray:
        return (self.exit >= 0) & (self.delivered_s <= self.deadline_s)

    def status_names(self) -> list[str]:
        return [STATUS_NAMES[c] for c in self.status]


def outcomes_from_results(results: Sequence[FrameResult]) -> Outcomes:
    """Outcomes of a live replay, from the controller's FrameResults."""
    n = len(results)
    exit_ = np.full(n, -1, np.int64)
    label = np.full(n, -1, np.int64)
    coarse = np.full(n, -1, np.int64)
    level = np.zeros(n, bool)
    for i, r in enumerate(results):
        if r.best is not None:
            exit_[i] = r.best.exit_index
            label[i] = r.best.prediction.label
            p = r.best.prediction
            coarse[i] = -1 if p.coarse_label is None else p.coarse_label
            level[i] = p.level == "coarse"
    return Outcomes(exit_, np.array([STATUS[r.status.value] for r in results], np.int64), label, coarse, level,
                    np.array([r.start_s for r in results]), np.array([r.deadline_s for r in results]),
                    np.array([r.delivered_s for r in results]), np.array([r.error is not None for r in results]),
                    np.array([r.late_steps for r in results], np.int64),
                    np.array([r.fallback for r in results], bool))


def concat(parts: Iterable[Outcomes]) -> Outcomes:
    parts = list(parts)
    return Outcomes(*(np.concatenate([getattr(p, f) for p in parts]) for f in Outcomes.__dataclass_fields__))


@dataclass(frozen=True)
class Metrics:
    """Quality and timeliness of one policy on one budget scenario."""

    frames: int
    labelled: int                 # frames with ground truth (accuracies are over these)
    accuracy: float | None        # expected accuracy: correct on time / labelled
    accuracy_delivered: float | None  # correct / labelled frames that got a result on time
    deadline_met: float           # fraction of frames with a result by the deadline
    missed: int                   # frames with no result by the deadline (not counting errors)
    miss_rate: float
    errors: int                   # rejected (corrupt) frames and backend faults
    exit_histogram: tuple[int, ...]   # on-time results per exit; the last entry counts frames with none
    mean_exit: float | None       # mean exit index of on-time results
    latency_ms: dict              # delivery latency (start -> result) of on-time results: p50, p90, p99, max
    coarse_accuracy: float | None     # coarse label right (needs a model with coarse labels)
    reported_accuracy: float | None   # fine results judged fine, coarse-level results judged coarse
    status: dict                  # frames per controller status
    late_steps: int
    fallback_results: int = 0     # on-time results from the fallback precision's graphs

    def to_json(self) -> dict:
        return asdict(self)


def compute_metrics(out: Outcomes, truth: np.ndarray, num_exits: int,
                    fine_to_coarse: Sequence[int] = ()) -> Metrics:
    """Metrics of `out` against ground-truth labels `truth` (-1: unknown)."""
    truth = np.asarray(truth)
    n = len(out)
    on_time = out.on_time
    labelled = truth >= 0
    n_lab = int(labelled.sum())
    correct = on_time & labelled & (out.label == truth)
    hist = np.bincount(np.where(on_time, out.exit, num_exits), minlength=num_exits + 1)
    lat = (out.delivered_s - out.start_s)[on_time] * 1e3
    pct = {"p50": None, "p90": None, "p99": None, "max": None}
    if lat.size:
        p50, p90, p99 = np.percentile(lat, [50, 90, 99])
        pct = {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(lat.max())}
    coarse_acc = reported = None
    if len(fine_to_coarse) and n_lab:
        table = np.asarray(fine_to_coarse)
        truth_coarse = np.where(labelled, table[np.clip(truth, 0, len(table) - 1)], -2)
        coarse_ok = on_time & labelled & (out.coarse_label == truth_coarse)
        coarse_acc = float(coarse_ok.sum() / n_lab)
        reported = float(np.where(out.coarse_level, coarse_ok, correct).sum() / n_lab)
    delivered_lab = int((on_time & labelled).sum())
    missed = int((~on_time & ~out.error).sum())
    status = {name: int((out.status == code).sum()) for code, name in enumerate(STATUS_NAMES)}
    return Metrics(
        frames=n, labelled=n_lab,
        accuracy=float(correct.sum() / n_lab) if n_lab else None,
        accuracy_delivered=float(correct.sum() / delivered_lab) if delivered_lab else None,
        deadline_met=float(on_time.mean()) if n else 0.0,
        missed=missed, miss_rate=missed / n if n else 0.0, errors=int(out.error.sum()),
        exit_histogram=tuple(int(v) for v in hist),
        mean_exit=float(out.exit[on_time].mean()) if on_time.any() else None,
        latency_ms=pct, coarse_accuracy=coarse_acc, reported_accuracy=reported,
        status={k: v for k, v in status.items() if v}, late_steps=int(out.late_steps.sum()),
        fallback_results=int((on_time & out.fallback).sum()))
