"""Vectorised cached replay: the controller's admission rule over all frames at once (numpy).

>>> setup = ReplaySetup.create(cache.program, profile, cache.precisions)        # doctest: +SKIP
>>> preds = exit_predictions(cache)                                              # doctest: +SKIP
>>> draws = draw_latencies(setup.plan, profile, cache.precisions, len(cache))    # doctest: +SKIP
>>> out = replay_fast(setup, preds, budgets_s, cache.timestamps, draws)           # doctest: +SKIP

This is the controller's `DeadlinePolicy` + `FramePlan` (edge_anytime/policy.py,
plan.py) on a simulated clock with frozen estimates (the controller's own,
seeded from the same profile by the same code), written over frame arrays:
segment p is admitted only if its chance of ending by `deadline - margin`
(the fraction of its latency samples at most that far) reaches what the
policy requires for the gain it offers over the frame's current best result
(`DeadlinePolicy.required_probability`); each step advances the frame's clock by its drawn latency; a
step that fails ends the frame as `degraded`; a step that ends after
`deadline - guard` is dropped and the best result goes out at that time; exits
are ranked as the controller ranks them; a confidence target stops refining.
With a precision fallback (simulator/fallback.py) its a-priori slices are planning candidates as in
`DeadlinePolicy.plan_frame` and `choose_apriori`, and run on its own draws and cached predictions.
With frozen estimates the outcomes match the live Controller replay exactly;
with the controller's estimators updating online they agree on nearly every
frame (tests/test_sim_replay.py checks both, frame by frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from edge_anytime.latency import TYPICAL_QUANTILE, EstimatorOptions, sorted_quantile
from edge_anytime.options import ControllerOptions
from edge_anytime.planning import TIE_ROOM
from edge_anytime.policy import DeadlinePolicy, fallback_key
from edge_anytime.profile import LatencyProfile
from edge_anytime.program import Program

from .metrics import STATUS, Outcomes
from .timing import LatencyDraws, PlanInfo

FROZEN = EstimatorOptions(online=False)


@dataclass(frozen=True)
class ReplaySetup:
    """The controller configuration a replay emulates: plan, frozen latency samples and estimates (seconds),
    exit values, margin and guard, and the precision fallback's slices (simulator/fallback.py)."""

    program: Program
    plan: PlanInfo
    segment_samples: tuple[np.ndarray, ...]    # sorted latency samples per anytime segment position
    slice_samples: tuple[np.ndarray, ...]      # sorted latency samples per exit's a-priori slice
    reach_samples: tuple[np.ndarray, ...]      # sorted latency from frame start to each anytime exit
    slice_savings: tuple[float, ...]           # per segment position: time its exit's slice saves (policy)
    values: tuple[float, ...]                  # what a result at each exit is worth (policy.values)
    reach_values: tuple[float, ...]            # best value each segment leads to
    margin_s: float = 0.0
    guard_s: float = 0.0
    busy: float = 0.0                          # fraction of frames arriving while the interpreter is busy
    lose_current: bool = False                 # inline on a real clock: an overrun makes the result late
    options: ControllerOptions = field(default_factory=lambda: ControllerOptions(estimator=FROZEN, warmup_runs=0))
    # the precision fallback (policy.fallback_values): (exit, value) best first, and each one's slice samples
    fallback_values: tuple[tuple[int, float], ...] = ()
    fallback_samples: Mapping[int, np.ndarray] = field(default_factory=dict)
    slice_order: tuple[int, ...] = ()          # a-priori candidates best first (policy.slice_values), as codes

    def without_fallback(self) -> "ReplaySetup":
        """This setup with no fallback slice (a twin of a controller whose fallback cannot be replayed)."""
        exits = len(self.plan.slices)
        return replace(self, fallback_values=(), fallback_samples={},
                       slice_order=tuple(code for code in self.slice_order if code < exits))

    def fallback_code(self, exit_index: int) -> int:
        """The code of exit `exit_index`'s fallback slice in `plan_choice`/`apriori_choice` (exits are 0..K-1)."""
        return len(self.plan.slices) + exit_index

    @classmethod
    def create(cls, program: Program, profile: LatencyProfile, precisions: dict,
               options: ControllerOptions | None = None, fallback=None) -> "ReplaySetup":
        """Estimates exactly as a controller seeded from `profile` on a simulated clock computes them; with
        `fallback` (a `FallbackReplay`), its fallback slices too."""
        options = options or ControllerOptions(estimator=FROZEN, warmup_runs=0)
        if options.estimator.online:
            options = replace(options, estimator=replace(options.estimator, online=False))
        policy = DeadlinePolicy(program, options, simulated=True, threaded=False,
                                fallbacks=None if fallback is None else fallback.exits)
        policy.seed_from_profile(program, profile, precisions, None if fallback is None else fallback.precision)
        return cls.from_policy(program, policy, options)

    @classmethod
    def from_policy(cls, program: Program, policy: DeadlinePolicy, options: ControllerOptions | None = None,
                    margin_s: float | None = None, guard_s: float | None = None) -> "ReplaySetup":
        """A snapshot of a policy's current samples and estimates (e.g. a real controller's, for its twin)."""
        slices = [policy.slice_estimators[e.index] for e in program.exits]
        exit_of = {fallback_key(e.index): e.index for e in program.exits}
        fallbacks = tuple((exit_of[key], value) for key, value in policy.fallback_values.items())   # best first
        order = tuple(len(program.exits) + exit_of[key] if key in exit_of else key for key in policy.slice_values)
        return cls(program, PlanInfo.from_program(program),
                   tuple(np.array(e.samples()) for e in policy.segment_estimators),
                   tuple(np.array(e.samples()) for e in slices),
                   tuple(np.array(e.samples()) for e in policy.reach_estimators), tuple(policy.slice_savings()),
                   tuple(policy.values), tuple(policy.reach_values),
                   policy.margin() if margin_s is None else margin_s, policy.guard() if guard_s is None else guard_s,
                   policy.busy, policy.lose_current, options or policy.options, fallbacks,
                   {k: np.array(policy.slice_estimators[fallback_key(k)].samples()) for k, _ in fallbacks}, order)

    def admitted(self, position: int, remaining: np.ndarray, best: np.ndarray) -> np.ndarray:
        """Which frames the policy lets start segment `position` with `remaining` seconds before their limit
        and best exit `best` (-1: none): DeadlinePolicy.admits over arrays, operation for operation."""
        samples = self.segment_samples[position]
        if samples.size == 0:
            return np.zeros(remaining.shape, bool)
        p = _fit(samples, remaining)
        gain, need = self._admission_need(position, np.where(best >= 0, np.asarray(self.values)[np.maximum(best, 0)],
                                                             0.0))
        return (gain > 0) & (p >= need) & (p > 0)

    def _admission_need(self, position: int, best_value):
        """(gain, the probability admission needs) of segment `position` with a result worth `best_value` in hand:
        DeadlinePolicy.required_probability, over arrays or for one value."""
        best_value = np.asarray(best_value, np.float64)   # numpy arithmetic: 0 / 0 is nan (gain <= 0), not an error
        gain = self.reach_values[position] - best_value
        loss = self.busy * gain + (best_value if self.lose_current else 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return gain, np.maximum(self.options.min_fit_probability, loss / (gain + loss))

    def admission_probability(self, position: int, remaining: np.ndarray, best_value: float) -> np.ndarray:
        """DeadlinePolicy.plan_frame's chance that segment `position` is admitted, with `remaining` seconds
        before the limit at the frame's start and a best result worth `best_value` when its exit before
        arrives: that exit's reach by the time left less the segment's latency at the needed probability."""
        samples, before = self.segment_samples[position], self.reach_samples[position - 1]
        gain, need = self._admission_need(position, best_value)
        if samples.size == 0 or before.size == 0 or gain <= 0:
            return np.zeros(remaining.shape)
        latest = remaining - sorted_quantile(samples, float(need))
        return np.searchsorted(before, latest, side="right") / before.size

    def apriori_choice(self, remaining: np.ndarray) -> np.ndarray:
        """DeadlinePolicy.choose_apriori over arrays: the slice per frame (an exit, or `fallback_code(exit)`),
        -1 for none."""
        chosen = np.full(remaining.shape, -1)
        score = np.zeros(remaining.shape)
        exits = len(self.plan.slices)
        fallback_values = dict(self.fallback_values)
        for code in self.slice_order or self.plan.apriori_order:
            if code < exits:
                samples, value = self.slice_samples[code], self.values[code]
            else:
                samples, value = self.fallback_samples[code - exits], fallback_values[code - exits]
            if samples.size == 0:
                continue
            p = _fit(samples, remaining)
            better = (p >= self.options.min_fit_probability) & (p > 0) & (p * value > score)
            chosen[better] = code
            score[better] = (p * value)[better]
        return chosen

    def _typical(self, samples: np.ndarray) -> float:
        """A path estimator's typical() of these samples (`make_estimator`'s TYPICAL_QUANTILE)."""
        return sorted_quantile(samples, TYPICAL_QUANTILE) if samples.size else float("inf")

    def _pick(self, items, floor: np.ndarray, remaining: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """DeadlinePolicy.pick over arrays: per frame the code of the slice chosen among `items` (code, p * value
        with NaN where it is not a candidate, p, typical latency) when the best is worth more than `floor`, with
        `remaining` seconds left (-1: none), and its p * value (-inf: none)."""
        shape = floor.shape
        chosen, chosen_worth = np.full(shape, -1), np.full(shape, -np.inf)
        chosen_p, chosen_typical = np.full(shape, -np.inf), np.full(shape, np.inf)
        for code, worth, p, typical in items:    # the best: the first with the highest p * value above the floor
            better = (worth > floor) & (worth > chosen_worth)
            chosen[better] = code
            chosen_worth = np.where(better, worth, chosen_worth)
            chosen_p = np.where(better, p, chosen_p)
            chosen_typical = np.where(better, typical, chosen_typical)
        tied = (chosen >= 0) & (remaining < TIE_ROOM * chosen_typical)   # no room to spare: near ties count
        tie = chosen_worth - self.options.value_tie
        for code, worth, p, typical in items:    # then max() by (-typical, p, worth) from the best on
            same_speed = typical == chosen_typical
            better = tied & (worth >= tie) & ((typical < chosen_typical) | (same_speed & (p > chosen_p))
                                              | (same_speed & (p == chosen_p) & (worth > chosen_worth)))
            chosen[better] = code
            chosen_p = np.where(better, p, chosen_p)
            chosen_typical = np.where(better, typical, chosen_typical)
            chosen_worth = np.where(better, worth, chosen_worth)
        return chosen, chosen_worth

    def plan_choice(self, remaining: np.ndarray) -> np.ndarray:
        """DeadlinePolicy.plan_frame over arrays: the slice that replaces the anytime plan (an exit, or
        `fallback_code(exit)`), -1 for none."""
        min_p = self.options.min_fit_probability
        reach = [_fit(s, remaining) for s in self.reach_samples]
        surely = reach[-1] >= 1.0          # the whole anytime plan surely fits (DeadlinePolicy.plan_frame)
        # the fallback slices with p >= min_fit_probability: (code, p * value or NaN where p is below it, p, typical)
        fallbacks = []
        for k, value in self.fallback_values:
            samples = self.fallback_samples[k]
            p = _fit(samples, remaining)
            fallbacks.append((self.fallback_code(k), np.where(p >= min_p, p * value, np.nan), p,
                              self._typical(samples)))
        quick = np.full(remaining.shape, -1)   # too tight for the primary first exit: the best fallback slice
        if fallbacks:
            quick, best_score = self._pick(fallbacks, np.full(remaining.shape, -np.inf), remaining)
            first = reach[0]
            fast = np.isfinite(best_score) & (first < min_p) & \
                (best_score > first * self.values[self.plan.segments[0][0]])
            quick = np.where(fast, quick, -1)
        for position in range(1, len(reach)):   # a later exit counts for the frames whose segment is admitted:
            best = max((self.plan.segments[j][0] for j in range(position)), key=lambda k: self.values[k])
            admitted = self.admission_probability(position, remaining, self.values[best])   # its exit before early
            for later in range(position, len(reach)):
                reach[later] = np.minimum(reach[later], admitted)
        anytime = np.zeros(remaining.shape)
        best = 0.0
        for k, p in enumerate(reach):
            best = max(best, self.values[self.plan.segments[k][0]])
            anytime += best * (p - (reach[k + 1] if k + 1 < len(reach) else 0.0))
        items = []
        order = sorted(range(len(self.plan.segments)), key=lambda p: -self.values[self.plan.segments[p][0]])
        for position in order:
            k = self.plan.segments[position][0]
            samples = self.reach_samples[position]
            if self.slice_savings[position] <= 0 or samples.size == 0:
                continue
            p = _fit(samples, remaining + self.slice_savings[position])
            items.append((k, np.where(p >= min_p, p * self.values[k], np.nan), p,
                          self._typical(samples) - self.slice_savings[position]))
        chosen = self._pick(items + fallbacks, anytime, remaining)[0]   # NaN (p below min_fit_probability): never
        return np.where(surely, -1, np.where(quick >= 0, quick, chosen))

    @property
    def segment_typical(self) -> tuple[float, ...]:
        return tuple(sorted_quantile(s, 0.5) for s in self.segment_samples)

    @property
    def segment_tail(self) -> tuple[float, ...]:
        return tuple(sorted_quantile(s, self.options.estimator.quantile) for s in self.segment_samples)

    @property
    def slice_tail(self) -> tuple[float, ...]:
        return tuple(sorted_quantile(s, self.options.estimator.quantile) for s in self.slice_samples)

    def estimates_ms(self) -> dict:
        """JSON-ready estimates in milliseconds."""
        return {"segment_typical": [v * 1e3 for v in self.segment_typical],
                "segment_tail": [v * 1e3 for v in self.segment_tail],
                "slice_tail": [v * 1e3 for v in self.slice_tail], "margin": self.margin_s * 1e3,
                "guard": self.guard_s * 1e3, "busy_arrivals": self.busy}


@dataclass(frozen=True, eq=False)
class ExitPredictions:
    """Each exit's calibrated reading of each frame (as confidence.calibrated_prediction computes it)."""

    label: np.ndarray          # (N, K) int, -1 where the exit was not computed
    confidence: np.ndarray     # (N, K) float64, NaN where not computed
    coarse_label: np.ndarray   # (N, K) int, -1 without coarse labels
    coarse_level: np.ndarray   # (N, K) bool: reported at the coarse level (ControllerOptions.coarse_below)


def _fit(samples: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """QuantileEstimator.fit_probability over arrays: the share of `samples` (sorted) at most `seconds`."""
    if samples.size == 0:
        return np.zeros(np.shape(seconds))
    return np.searchsorted(samples, seconds, side="right") / samples.size


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
                mode: str | None = None, dispatch_s: float = 0.0, fallback=None) -> Outcomes:
    """Outcomes of every frame under the controller's rules; see the module docstring.

    Frame i is captured at `starts_s[i]` and its deadline is `starts_s[i] + budgets_s[i]`; the
    controller takes it `dispatch_s` later (transfer, queueing, thread hand-off; 0 by default).
    `fallback` (a `FallbackReplay` with draws): the fallback precision's predictions and step latencies, which
    a setup with fallback slices needs.
    """
    if setup.fallback_values and (fallback is None or fallback.draws is None):
        raise ValueError("this setup plans fallback slices: pass fallback=FallbackReplay(...).drawn(...) "
                         "(simulator/fallback.py), or build the setup without one")
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
    chosen = np.full(n, -1)
    if mode == "anytime" and opts.plan_frames and opts.confidence_target is None:
        chosen = np.where(accepted, setup.plan_choice(limit - admitted), -1)
    if mode == "anytime":
        lat = draws.anytime()
        state.run(setup, preds, bad, accepted & (chosen < 0), limit,
                  [(position, k, steps, lat[:, list(steps)]) for position, (k, steps) in enumerate(setup.plan.segments)])
    else:
        chosen = np.where(accepted, setup.apriori_choice(limit - admitted), -1)
        state.stop(accepted & (chosen < 0), STATUS["deadline"])
    for k in range(len(setup.plan.slices)):
        group = chosen == k
        if group.any():
            state.run(setup, preds, bad, group, limit, [(None, k, setup.plan.slices[k], draws.slice(k))])
    for k, _ in setup.fallback_values:
        group = chosen == setup.fallback_code(k)
        if group.any():
            state.fallback |= group
            state.run(setup, fallback.preds, np.asarray(fallback.cache.bad_steps, bool), group, limit,
                      [(None, k, setup.plan.slices[k], fallback.draws.slice(k))])
    return state.finish(preds, accepted, None if fallback is None else fallback.preds)


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
        self.fallback = np.zeros(n, bool)   # the frame ran a fallback slice
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
                best_value = np.where(self.best >= 0, np.asarray(setup.values)[np.maximum(self.best, 0)], -np.inf)
                done = alive & (setup.reach_values[position] <= best_value)   # nothing ahead beats the result
                self.stop(done, STATUS["final"])
                alive = alive & ~done
                refused = alive & ~setup.admitted(position, limit - now, self.best)
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
                if over.any():   # a watchdog hands the best result over at its fire time; inline it comes late
                    self.stop(over, STATUS["deadline"], at=None if setup.lose_current else self.fire)
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

    def finish(self, preds: ExitPredictions, accepted: np.ndarray,
               fallback_preds: ExitPredictions | None = None) -> Outcomes:
        none = self.best < 0
        self.status[none] = STATUS["no_result"]
        rows = np.arange(len(self.best))
        col = np.maximum(self.best, 0)
        fallback = self.fallback & ~none
        label, coarse, level = _readings(preds, rows, col)
        if fallback.any():
            fb_label, fb_coarse, fb_level = _readings(fallback_preds, rows, col)
            label, coarse, level = (np.where(fallback, a, b) for a, b in ((fb_label, label), (fb_coarse, coarse),
                                                                           (fb_level, level)))
        return Outcomes(self.best.copy(), self.status, np.where(none, -1, label), np.where(none, -1, coarse),
                        ~none & level, self.start, self.deadline, self.delivered, self.errored, self.late, fallback)


def _readings(preds: ExitPredictions, rows: np.ndarray, col: np.ndarray) -> tuple:
    """(label, coarse label, coarse level) of exit `col[i]` for frame `rows[i]`."""
    return preds.label[rows, col], preds.coarse_label[rows, col], preds.coarse_level[rows, col]
