"""Vectorised cached replay: the controller's admission rule over all frames at once (numpy).

>>> setup = ReplaySetup.create(cache.program, profile, cache.precisions)        # doctest: +SKIP
>>> preds = exit_predictions(cache)                                              # doctest: +SKIP
>>> draws = draw_latencies(setup.plan, profile, cache.precisions, len(cache))    # doctest: +SKIP
>>> out = replay_fast(setup, preds, budgets_s, cache.timestamps, draws)           # doctest: +SKIP

This is the controller's `DeadlinePolicy` + `FramePlan` (edge_anytime/policy.py,
plan.py) on a simulated clock with frozen estimates (the controller's own,
seeded from the same profile by the same code), written over frame arrays:
segment p is admitted only if `now + cost <= deadline - margin`, where cost is
the segment's typical latency while the frame has no result and its tail
latency after; each step advances the frame's clock by its drawn latency; a
step that fails ends the frame as `degraded`; a step that ends after
`deadline - guard` is dropped and the best result goes out at that time; exits
are ranked as the controller ranks them; a confidence target stops refining.
With frozen estimates the outcomes match the live Controller replay exactly;
with the controller's estimators updating online they agree on nearly every
frame (tests/test_sim_replay.py checks both, frame by frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from edge_anytime.latency import EstimatorOptions
from edge_anytime.options import ControllerOptions
from edge_anytime.policy import DeadlinePolicy
from edge_anytime.profile import LatencyProfile
from edge_anytime.program import Program

from .metrics import STATUS, Outcomes
from .timing import LatencyDraws, PlanInfo

FROZEN = EstimatorOptions(online=False)


@dataclass(frozen=True)
class ReplaySetup:
    """The controller configuration a replay emulates: plan, frozen estimates (seconds), margin and guard."""

    program: Program
    plan: PlanInfo
    segment_typical: tuple[float, ...]     # per anytime segment position
    segment_tail: tuple[float, ...]
    slice_typical: tuple[float, ...]       # per exit: its a-priori slice
    slice_tail: tuple[float, ...]
    margin_s: float = 0.0
    guard_s: float = 0.0
    options: ControllerOptions = field(default_factory=lambda: ControllerOptions(estimator=FROZEN, warmup_runs=0))

    @classmethod
    def create(cls, program: Program, profile: LatencyProfile, precisions: dict,
               options: ControllerOptions | None = None) -> "ReplaySetup":
        """Estimates exactly as a controller seeded from `profile` on a simulated clock computes them."""
        options = options or ControllerOptions(estimator=FROZEN, warmup_runs=0)
        if options.estimator.online:
            options = replace(options, estimator=replace(options.estimator, online=False))
        policy = DeadlinePolicy(program, options, simulated=True, threaded=False)
        policy.seed_from_profile(program, profile, precisions)
        return cls.from_policy(program, policy, options)

    @classmethod
    def from_policy(cls, program: Program, policy: DeadlinePolicy, options: ControllerOptions | None = None,
                    margin_s: float | None = None, guard_s: float | None = None) -> "ReplaySetup":
        """A snapshot of a policy's current estimates (e.g. a real controller's, for its simulated twin)."""
        slices = [policy.slice_estimators[e.index] for e in program.exits]
        return cls(program, PlanInfo.from_program(program),
                   tuple(e.typical() for e in policy.segment_estimators),
                   tuple(e.tail() for e in policy.segment_estimators),
                   tuple(e.typical() for e in slices), tuple(e.tail() for e in slices),
                   policy.margin() if margin_s is None else margin_s, policy.guard() if guard_s is None else guard_s,
                   options or policy.options)

    def segment_cost(self, position: int, has_result: np.ndarray) -> np.ndarray:
        """What the controller charges segment `position`: typical without a result yet, tail after."""
        if self.options.first_exit_quantile is None:
            return np.full(has_result.shape, self.segment_tail[position])
        return np.where(has_result, self.segment_tail[position], self.segment_typical[position])

    def estimates_ms(self) -> dict:
        """JSON-ready estimates in milliseconds."""
        return {"segment_typical": [v * 1e3 for v in self.segment_typical],
                "segment_tail": [v * 1e3 for v in self.segment_tail],
                "slice_typical": [v * 1e3 for v in self.slice_typical],
                "slice_tail": [v * 1e3 for v in self.slice_tail], "margin": self.margin_s * 1e3,
                "guard": self.guard_s * 1e3}


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
    state = _State(start, admitted, deadline, deadline - setup.guard_s, accepted)
    limit = deadline - setup.margin_s
    if mode == "anytime":
        lat = draws.anytime()
        state.run(setup, preds, bad, accepted.copy(), limit,
                  [(position, k, steps, lat[:, list(steps)]) for position, (k, steps) in enumerate(setup.plan.segments)])
    else:
        chosen = np.full(n, -1)
        undecided = accepted.copy()
        tiers = (setup.slice_tail, setup.slice_typical) if opts.first_exit_quantile is not None else (setup.slice_tail,)
        for costs in tiers:   # by the tail first; if nothing fits, by the typical latency
            for k in setup.plan.apriori_order:
                fits = undecided & (admitted + costs[k] <= limit)
                chosen[fits] = k
                undecided &= ~fits
        state.stop(undecided, STATUS["deadline"])
        for k in range(len(setup.plan.slices)):
            group = chosen == k
            if group.any():
                state.run(setup, preds, bad, group, limit, [(None, k, setup.plan.slices[k], draws.slice(k))])
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
            limit: np.ndarray, segments) -> None:
        target = setup.options.confidence_target
        now = self.now
        for position, k, steps, lat in segments:
            if position is not None:   # anytime segment (an a-priori slice was admitted when chosen)
                refused = alive & (now + setup.segment_cost(position, self.best >= 0) > limit)
                self.stop(refused, STATUS["deadline"])
                alive = alive & ~refused
            for j, s in enumerate(steps):
                np.add(now, lat[:, j], out=now, where=alive)
                failed = alive & bad[:, s]
                if failed.any():
                    self.stop(failed, STATUS["degraded"])
                    self.errored |= failed
                    alive = alive & ~failed
                over = alive & ((now > self.fire) | (now > self.deadline))
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
