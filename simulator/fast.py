"""Vectorised cached replay: the controller's admission rule over all frames at once (numpy).

>>> setup = ReplaySetup.create(cache.program, profile, cache.precisions)        # doctest: +SKIP
>>> preds = exit_predictions(cache)                                              # doctest: +SKIP
>>> draws = draw_latencies(setup.plan, profile, cache.precisions, len(cache))    # doctest: +SKIP
>>> out = replay_fast(setup, preds, budgets_s, cache.timestamps, draws)           # doctest: +SKIP

This is `CompiledPlan.execute` (edge_anytime/plan.py) on a simulated clock with
frozen pWCET estimates (EstimatorOptions(online=False)), written over frame
arrays: each segment (the steps up to the next exit) is admitted only if
`now + sum(pWCET) + margin <= deadline` (while a frame has no result yet, the
typical latency at `first_exit_quantile` replaces the pWCET); each step advances the frame's clock
by its drawn latency; a step that fails ends the frame as `degraded`; a step
that ends after `deadline - watchdog_guard` is dropped and the best result goes
out at that time; exits are ranked as the controller ranks them; a confidence
target stops refining. The arithmetic is the controller's, operation for
operation, so outcomes match the live Controller replay exactly
(tests/test_sim_replay.py checks it frame by frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge_anytime.latency import EstimatorOptions
from edge_anytime.options import ControllerOptions
from edge_anytime.profile import LatencyProfile
from edge_anytime.program import Program

from .metrics import STATUS, Outcomes
from .timing import LatencyDraws, PlanInfo, frozen_estimates

FROZEN = EstimatorOptions(online=False)


@dataclass(frozen=True)
class ReplaySetup:
    """The controller configuration a replay emulates: plan, frozen pWCETs and options."""

    program: Program
    plan: PlanInfo
    estimates: dict            # graph -> pWCET seconds (frozen)
    options: ControllerOptions = field(default_factory=lambda: ControllerOptions(estimator=FROZEN))
    typical: dict | None = None  # graph -> latency at options.first_exit_quantile (frozen); None: not used

    @classmethod
    def create(cls, program: Program, profile: LatencyProfile, precisions: dict,
               options: ControllerOptions | None = None) -> "ReplaySetup":
        options = options or ControllerOptions(estimator=FROZEN, warmup_runs=0)
        if options.estimator.online:
            raise ValueError("the cached replay emulates frozen estimates: use "
                             "ControllerOptions(estimator=EstimatorOptions(online=False))")
        typical = None
        if options.first_exit_quantile is not None:
            typical = frozen_estimates(program, profile, precisions, options.estimator, options.first_exit_quantile)
        return cls(program, PlanInfo.from_program(program), frozen_estimates(program, profile, precisions,
                                                                              options.estimator), options, typical)

    def cost(self, steps) -> float:
        """sum(pWCET) of `steps`, summed in the controller's order."""
        return sum([self.estimates[self.plan.step_graphs[s]] for s in steps])

    def first_cost(self, steps) -> float | None:
        """What the controller charges a frame's first segment: the typical latency (None: pWCET)."""
        if self.typical is None or self.options.first_exit_quantile is None:
            return None
        return sum([self.typical[self.plan.step_graphs[s]] for s in steps])


@dataclass(frozen=True, eq=False)
class ExitPredictions:
    """Each exit's calibrated reading of each frame (as confidence.calibrated_prediction computes it)."""

    label: np.ndarray          # (N, K) int, -1 where the exit was not computed
    confidence: np.ndarray     # (N, K) float64, NaN where not computed
    coarse_label: np.ndarray   # (N, K) int, -1 without coarse labels
    coarse_level: np.ndarray   # (N, K) bool: reported at the coarse level (ControllerOptions.coarse_below)


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def exit_predictions(cache, coarse_below: float | None = None) -> ExitPredictions:
    """Labels and confidences of every exit from the cached logits."""
    program, model = cache.program, cache.model
    n, k = cache.logits.shape[:2]
    label = np.full((n, k), -1, np.int64)
    conf = np.full((n, k), np.nan)
    coarse = np.full((n, k), -1, np.int64)
    table = np.asarray(model.fine_to_coarse)
    for e in program.exits:
        logits = cache.logits[:, e.index]
        ok = np.isfinite(logits).all(axis=1)
        probs = _softmax(np.where(ok[:, None], logits, 0.0), e.temperature)
        label[ok, e.index] = probs.argmax(axis=1)[ok]
        conf[ok, e.index] = probs.max(axis=1)[ok]
        if e.coarse_tensor is not None:
            coarse_probs = _softmax(np.nan_to_num(cache.coarse_logits[:, e.index]), e.temperature)
            coarse[ok, e.index] = coarse_probs.argmax(axis=1)[ok]
        elif len(table) == probs.shape[1] and model.coarse_labels:
            onehot = np.eye(len(model.coarse_labels))[table]
            coarse[ok, e.index] = (probs @ onehot).argmax(axis=1)[ok]
    level = np.zeros((n, k), bool)
    if coarse_below is not None:
        level = (coarse >= 0) & (conf < coarse_below)
    return ExitPredictions(label, conf, coarse, level)


def replay_fast(setup: ReplaySetup, preds: ExitPredictions, budgets_s: np.ndarray, starts_s: np.ndarray,
                draws: LatencyDraws, valid: np.ndarray | None = None, bad_steps: np.ndarray | None = None,
                mode: str | None = None, dispatch_s: float = 0.0) -> Outcomes:
    """Outcomes of every frame under the controller's rules; see the module docstring.

    Frame i is captured at `starts_s[i]` and its deadline is `starts_s[i] + budgets_s[i]`; the
    controller takes it `dispatch_s` later (transfer, queueing, thread hand-off; 0 by default).
    """
    opts = setup.options
    mode = mode or opts.mode
    n = len(budgets_s)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    bad = np.zeros((n, len(setup.plan.step_graphs)), bool) if bad_steps is None else np.asarray(bad_steps, bool)
    start = np.asarray(starts_s, np.float64)
    budgets = np.asarray(budgets_s, np.float64)
    budget_ok = np.isfinite(budgets) & (budgets >= 0)
    deadline = start + budgets
    admitted = start + dispatch_s if dispatch_s else start.copy()
    accepted = valid & budget_ok & (deadline > admitted)
    state = _State(start, admitted, deadline, deadline - opts.watchdog_guard_s, accepted)
    margin = opts.margin_s
    if mode == "anytime":
        lat = draws.anytime()
        state.run(setup, preds, bad, accepted.copy(),
                  [(k, steps, lat[:, list(steps)]) for k, steps in setup.plan.segments])
    else:
        chosen = np.full(n, -1)
        undecided = accepted.copy()
        for k in setup.plan.apriori_order:
            cost = setup.cost(setup.plan.slices[k])
            fits = undecided & ((admitted + cost) + margin <= deadline)
            chosen[fits] = k
            undecided &= ~fits
        for k in setup.plan.apriori_order:   # nothing fits by pWCET: the typical latency (first_exit_quantile)
            cost = setup.first_cost(setup.plan.slices[k])
            if cost is None:
                break
            fits = undecided & ((admitted + cost) + margin <= deadline)
            chosen[fits] = k
            undecided &= ~fits
        state.stop(undecided, STATUS["deadline"])
        for k in range(len(setup.plan.slices)):
            group = chosen == k
            if group.any():
                state.run(setup, preds, bad, group, [(k, setup.plan.slices[k], draws.slice(k))])
    return state.finish(preds, accepted)


class _State:
    """Per-frame clock and result while segments run (mirrors FrameJob + CompiledPlan.execute)."""

    def __init__(self, start, admitted, deadline, fire, accepted) -> None:
        n = len(start)
        self.start, self.deadline, self.fire = start, deadline, fire
        self.now = admitted
        self.best = np.full(n, -1, np.int64)
        self.rank = np.full(n, -1.0)
        self.status = np.full(n, STATUS["final"], np.int64)
        self.delivered = np.full(n, np.nan)
        self.late = np.zeros(n, np.int64)
        self.errored = ~accepted
        self.done = ~accepted
        self.status[~accepted] = STATUS["no_result"]
        self.delivered[~accepted] = admitted[~accepted]

    def stop(self, mask: np.ndarray, status: int, at: np.ndarray | None = None) -> None:
        self.status[mask] = status
        self.delivered[mask] = (self.now if at is None else at)[mask]
        self.done |= mask

    def run(self, setup: ReplaySetup, preds: ExitPredictions, bad: np.ndarray, alive: np.ndarray,
            segments) -> None:
        margin = setup.options.margin_s
        target = setup.options.confidence_target
        now = self.now
        for k, steps, lat in segments:
            cost = setup.cost(steps)
            first = setup.first_cost(steps)
            if first is not None:
                cost = np.where(self.best < 0, first, cost)
            refused = alive & ((now + cost) + margin > self.deadline)
            self.stop(refused, STATUS["deadline"])
            alive = alive & ~refused
            for j, s in enumerate(steps):
                np.add(now, lat[:, j], out=now, where=alive)
                failed = alive & bad[:, s]
                if failed.any():
                    self.stop(failed, STATUS["degraded"])
                    self.errored |= failed
                    alive = alive & ~failed
                over = alive & (now > self.fire)
                if over.any():
                    self.stop(over, STATUS["deadline"], at=self.fire)
                    self.late[over] += 1
                    alive = alive & ~over
            rank = setup.plan.ranks[k]
            take = alive & (rank >= self.rank)
            self.best[take] = k
            self.rank[take] = rank
            if target is not None:
                hit = alive & (preds.confidence[:, k] >= target)
                self.stop(hit, STATUS["confidence"])
                alive = alive & ~hit
        self.stop(alive, STATUS["final"])

    def finish(self, preds: ExitPredictions, accepted: np.ndarray) -> Outcomes:
        none = self.best < 0
        self.status[none] = STATUS["no_result"]
        rows = np.arange(len(self.best))
        col = np.maximum(self.best, 0)
        label = np.where(none, -1, preds.label[rows, col])
        coarse = np.where(none, -1, preds.coarse_label[rows, col])
        level = ~none & preds.coarse_level[rows, col]
        return Outcomes(self.best.copy(), self.status, label, coarse, level, self.start, self.deadline,
                        self.delivered, self.errored, self.late)
