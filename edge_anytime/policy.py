"""The deadline policy: latency estimates, margins measured on this host, admission, and counters.

One `DeadlinePolicy` belongs to one controller. It owns an estimator per anytime
segment, per a-priori slice, for the delivery path and for the watchdog's
wake-up, and the controller's counters.

Admission weighs what a segment can win against what an overrun costs
(docs/runtime.md, "Admission"). With `p` the probability, from the segment's
own measured latency distribution, that it ends before `deadline - margin`:

* gain: the expected accuracy (validation accuracy of the exits; their depth
  without it) of the best exit the segment leads to, minus that of the frame's
  current best result;
* loss if it overruns: with a watchdog (threaded, or a simulated clock) the
  current result is still handed over on time, so an overrun only keeps the
  interpreter busy into the next frame: `busy * gain`, where `busy` is the
  measured fraction of frames that arrive while the interpreter still works;
  inline on a real clock the frame's result itself would be late: `best + busy * gain`;
* the segment runs if `p >= max(min_fit_probability, loss / (gain + loss))`.

So a frame's first segment runs whenever it can finish (refusing it means no
result), a refinement worth 40 points runs on an even chance, and one worth 7
points does not risk a result worth 88 (inline). In a-priori mode the exit with
the highest `p * accuracy` is chosen.

`margin` is the measured delivery path, the time from the last step's end to
the result being in the caller's hands (less the sample recording, done only
in time a frame can spare: recording.py), sampled at warm-up and on every
frame that delivers a result: with `threaded=True` the 95th percentile of the
thread hand-back; inline
the 90th percentile of result assembly (its rare outliers are preemptions that
no margin absorbs); 0 on a simulated clock. The
watchdog fires `guard` before the deadline, where `guard` is the tail of its own
measured wake-up lateness. Explicit `margin_s` / `watchdog_guard_s` options
override both.

>>> from edge_anytime.program import Exit, GraphSignature, Port, Program, Step
>>> x, y = Port("x", (1, 2)), Port("y", (1, 2))
>>> program = Program("image", {"g": GraphSignature("g", (x,), (y,))},
...                   (Step("s0", "g", {"x": "image"}, {"y": "l0"}), Step("s1", "g", {"x": "l0"}, {"y": "l1"})),
...                   (Exit(0, "l0", val_accuracy=0.5), Exit(1, "l1", val_accuracy=0.9)))
>>> policy = DeadlinePolicy(program, ControllerOptions(), simulated=True, threaded=False)
>>> policy.seed_segment(0, [1e-3] * 20); policy.seed_segment(1, [2e-3] * 20)
>>> policy.admits(0, now=0.0, limit=1.5e-3, best_value=0.0), policy.admits(1, now=1e-3, limit=2.5e-3, best_value=0.5)
(True, False)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .latency import make_estimator, without_hiccups
from .planning import PLAN_FLOOR_EVERY, STARVED_GAP, SlicePlanning
from .options import ControllerOptions, ControllerStats
from .profile import LatencyProfile
from .program import Program, exit_values
from .seeding import (HOST_SPEED_LIMITS, SEED_SCALE_LIMITS, draw_sums, plan_samples, seed_factor, slice_samples,
                      steady_host)

# The margin covers the usual delivery path; the rare preemption of a loaded host (milliseconds) is no
# margin's job: reserving for it would refuse every sub-millisecond budget. Misses it causes are reported.
DELIVERY_QUANTILE = 0.95
INLINE_DELIVERY_QUANTILE = 0.9   # inline, result assembly: its 90th percentile
BUSY_RATE = 1.0 / 64        # how fast the busy-arrival fraction follows the frame rate
STEP_RATE = 1.0 / 64        # how fast a step's mean latency follows new samples
SAVINGS_EVERY = 256         # step observations between recomputations of the slice savings
SEED_CONFIRMED = 0.1        # a warm-up within 10% of the profile confirms it: ...
TRUSTED_EXPLORE_AFTER = 64  # ... and its segments (and every fallback slice) first wait this many refusals, not 8
FALLBACK_UNKNOWN_PENALTY = 0.01   # value lost by a fallback whose agreement with the primary is not measured
# counters that planning and the frame's hooks change, under the inference lock (see admission_state)
FRAME_PATH_COUNTS = ("steps_admitted", "steps_skipped", "steps_overrun", "late_steps", "explorations", "fallback_frames",
                     "invalid_exits")


def fallback_key(exit_index: int) -> str:
    """The key of exit `exit_index`'s a-priori slice at the fallback precision (`DeadlinePolicy.slice_estimators`,
    `slice_values`, plans; `latency_estimates()` names it slicefallback<k>).

    >>> fallback_key(1)
    'fallback1'
    """
    return f"fallback{exit_index}"


def is_fallback(key) -> bool:
    """Is a slice key (an exit index, or a `fallback_key`) one of the fallback precision's?"""
    return isinstance(key, str)


@dataclass(frozen=True)
class WarmupSamples:
    """What a warm-up measured through the serving path (seconds; cold passes left out): per anytime segment
    position its latency and its exit's reach, per exit its a-priori slice, per step its latency, and the
    delivery path; threaded, also the thread hand-back (`handoff.hand_back_latency`), how late timed waits
    woke (`handoff.timer_lateness`) and the hand-over of each result after its wake-up."""

    segments: Sequence[Sequence[float]]
    reaches: Sequence[Sequence[float]]
    slices: Mapping[int, Sequence[float]]
    steps: Mapping[int, Sequence[float]] = field(default_factory=dict)
    delivery: Sequence[float] = ()
    hand_back: Sequence[float] = ()
    wake_lateness: Sequence[float] = ()
    handover: Sequence[float] = ()


class DeadlinePolicy(SlicePlanning):
    """Estimates, margins, admission and counters of one controller; see the module docstring."""

    def __init__(self, program: Program, options: ControllerOptions, *, simulated: bool, threaded: bool,
                 fallbacks: Mapping[int, float | None] | None = None) -> None:
        """`fallbacks`: the exits whose a-priori slices the controller also holds at a fallback precision
        (`ControllerOptions.fallback_precision`), each with how often its argmax agrees with this precision's
        (None: not measured, taken as 1 - FALLBACK_UNKNOWN_PENALTY)."""
        self.options = options
        self.simulated = simulated
        self.threaded = threaded
        self.segments = program.anytime_segments()
        self.segment_estimators = [make_estimator(options.estimator) for _ in self.segments]
        self.reach_estimators = [make_estimator(options.estimator) for _ in self.segments]   # frame start -> exit
        # Per step: mean latency (EMA), and for each exit the anytime steps its a-priori slice skips (heads of
        # earlier exits): a slice takes about the exit's reach latency minus those steps.
        self.step_mean = [0.0] * len(program.steps)
        self.exit_gap = 0.0                          # mean time from an exit's publication to the next admission
        self._online_steps = options.estimator.online
        self._savings: list[float] | None = None     # cached slice_savings(), recomputed every SAVINGS_EVERY steps
        self._plan_floor = 0.0          # below this time left no slice can be planned (see plan_frame), ...
        self._refine_floor = 0.0        # ... no segment can follow the first exit (first_exit_only), ...
        self._plan_floor_age = PLAN_FLOOR_EVERY     # ... recomputed every PLAN_FLOOR_EVERY frames (tick_floors)
        self._step_updates = 0
        self._skipped = []
        for seg in self.segments:
            keep = set(program.apriori_plan(seg.exit_index))
            self._skipped.append(tuple(i for i in range(seg.steps[-1] + 1) if i not in keep))
        self.slice_estimators = {e.index: make_estimator(options.estimator) for e in program.exits}
        delivery_options = dataclasses.replace(options.estimator, quantile=DELIVERY_QUANTILE, kind="quantile")
        self.delivery = make_estimator(delivery_options, INLINE_DELIVERY_QUANTILE)
        self.wakeup = make_estimator(delivery_options, 0.5)
        self.values = exit_values(program)
        self.reach_values = [max(self.values[e] for e in range(seg.exit_index, len(self.values)))
                             for seg in self.segments]
        self.apriori_order = sorted(range(len(program.exits)), key=lambda i: -self.values[i])
        self.slice_values: dict = {i: self.values[i] for i in self.apriori_order}   # per a-priori slice, best first
        # per fallback slice key: what its exit is worth at the fallback precision (see plan_frame), best first
        self.fallback_values: dict[str, float] = {}
        for index, agreement in (fallbacks or {}).items():
            agreement = 1.0 - FALLBACK_UNKNOWN_PENALTY if agreement is None else agreement
            self.fallback_values[fallback_key(index)] = self.values[index] - (1.0 - agreement)
        self.fallback_values = dict(sorted(self.fallback_values.items(), key=lambda item: -item[1]))
        for key, value in self.fallback_values.items():
            self.slice_values[key] = value
            self.slice_estimators[key] = make_estimator(options.estimator)
            self.slice_estimators[key].delay_exploration(TRUSTED_EXPLORE_AFTER)   # see _explore_fallbacks
        self.slice_values = dict(sorted(self.slice_values.items(), key=lambda item: -item[1]))   # best first
        self._fallback_candidates = list(self.fallback_values.items())
        first_fallback = fallback_key(program.exits[self.segments[0].exit_index].index)
        self._starved_key = first_fallback if first_fallback in self.fallback_values else None   # _explore_starved
        self._starved_frames = STARVED_GAP      # starved frames since its last exploration
        self.plan_order = sorted(range(len(self.segments)), key=lambda p: -self.values[self.segments[p].exit_index])
        self._early_reach = self.reach_estimators[:-1]
        self._segment_values = [self.values[seg.exit_index] for seg in self.segments]
        self._best_before = [max(self._segment_values[:p], default=0.0) for p in range(len(self.segments))]
        self._plan_candidates = [(p, self.segments[p].exit_index, self._segment_values[p]) for p in self.plan_order]
        self.lose_current = not simulated and not threaded   # inline on a real clock: an overrun is a late result
        self._first_guard_only = threaded and not simulated and options.margin_s is None   # see first_margin
        self.seed_scales: dict[str, float] = {}   # calibrate_seeds(): estimator name -> factor applied
        self._seen_shifts = [0] * len(self.reach_estimators)   # follow_shifts(): the shifts already followed
        self._slice_shifts: dict = {}
        self.busy = 0.0            # EMA: fraction of frames that arrive while the interpreter is still busy
        self.counts = {name: 0 for name in ControllerStats.__dataclass_fields__}

    # ----------------------------------------------------------------- margins
    def margin(self) -> float:
        """Time reserved after the last step for the result to reach the caller (seconds)."""
        if self.options.margin_s is not None:
            return self.options.margin_s
        if self.simulated:
            return 0.0
        # Threaded, the hand-back is a thread wake-up whose tail matters; inline, delivery is a few microseconds
        # of result assembly whose rare outliers are preemptions no margin absorbs: its p90 is reserved.
        delivery = self.delivery.tail() if self.threaded else self.delivery.typical()
        return max(delivery if math.isfinite(delivery) else 0.0, self.guard())

    def first_margin(self) -> float:
        """The margin before a frame's first segment (see `_first_of`)."""
        return self._first_of(self.margin())

    def frame_limits(self, deadline: float) -> tuple[float, float]:
        """(limit, first_limit) of a frame: its segments must end by `deadline - margin()`, its first segment
        by `deadline - first_margin()` (the margin is read once)."""
        margin = self.margin()
        return deadline - margin, deadline - self._first_of(margin)

    def _first_of(self, margin: float) -> float:
        """The first segment's share of `margin`. Threaded on a real clock, an exit published before the
        watchdog's fire time is handed over by `run()`'s own timed wait whatever the thread hand-back takes,
        so only the guard is reserved (reserving the hand-back's tail as well, a millisecond on a loaded
        host, refused every first segment at sub-millisecond budgets); otherwise all of it."""
        return self.guard() if self._first_guard_only else margin

    def guard(self) -> float:
        """How long before the deadline the watchdog hands the best result over (seconds)."""
        if self.options.watchdog_guard_s is not None:
            return self.options.watchdog_guard_s
        if self.simulated or not self.threaded:
            return 0.0
        wakeup = self.wakeup.tail()
        return wakeup if math.isfinite(wakeup) else 0.0

    # ----------------------------------------------------------------- admission
    def required_probability(self, position: int, best_value: float) -> float:
        """The chance of finishing in time that segment `position` needs (inf: nothing to gain)."""
        gain = self.reach_values[position] - best_value
        if gain <= 0:
            return math.inf
        loss = self.busy * gain + (best_value if self.lose_current else 0.0)
        return max(self.options.min_fit_probability, loss / (gain + loss))

    def admits(self, position: int, now: float, limit: float, best_value: float) -> bool:
        """May anytime segment `position` start at `now`, given the frame must be done by `limit` and its best
        result so far is worth `best_value` (0: none)? See the module docstring."""
        need = self.required_probability(position, best_value)
        if need == math.inf:
            return False           # nothing to gain
        estimator = self.segment_estimators[position]
        remaining = limit - now
        p = estimator.fit_probability(remaining, guarded=best_value > 0)   # the burst guard protects a result
        if p >= need and p > 0:
            return True
        if estimator.refused():    # a measured segment refused many times in a row: explore it once
            self.counts["explorations"] += 1
            return True
        return False

    def observe_exit_gap(self, seconds: float) -> None:
        """Serving, anytime: from an exit's publication to the next segment's admission (the slices skip it)."""
        if self._online_steps and seconds >= 0:
            self.exit_gap += (seconds - self.exit_gap) * STEP_RATE

    def observe_step(self, index: int, seconds: float) -> None:
        """A step's latency while serving: updates its mean (the slice savings, refreshed every few frames)."""
        if self._online_steps:
            self.step_mean[index] += (seconds - self.step_mean[index]) * STEP_RATE
            self._step_updates += 1
            if self._step_updates >= SAVINGS_EVERY:
                self._step_updates = 0
                self._savings = None

    def seed_steps(self, samples: Mapping[int, list]) -> None:
        """Step index -> latency samples (warm-up, profile): the mean of each seeds its estimate."""
        for index, values in samples.items():
            if len(values):
                self.step_mean[index] = float(np.mean(values))
        self._savings = None

    def follow_shifts(self) -> None:
        """After samples were recorded: where an exit's reach shifted (latency.py: its window kept only its
        latest samples), its a-priori slice, and after the first exit's every fallback slice, are scaled by the
        same factor, unless they shifted themselves meanwhile. They run only on the frames planning picks them
        for, so after a change of regime (a loop that idles between frames, a machine that became busy) their
        samples would describe the old one for hundreds of frames, and planning would pick a slice that no
        longer fits: all or nothing, it delivers nothing then."""
        for position, reach in enumerate(self.reach_estimators):
            if reach.shifts == self._seen_shifts[position]:
                continue
            self._seen_shifts[position] = reach.shifts
            keys = [self.segments[position].exit_index, *(self.fallback_values if position == 0 else ())]
            for key in keys:
                estimator = self.slice_estimators[key]
                if estimator.shifts == self._slice_shifts.get(key, 0):
                    estimator.scale_samples(reach.shift_factor)
                self._slice_shifts[key] = estimator.shifts
            self._plan_floor_age = PLAN_FLOOR_EVERY

    def admission_state(self) -> tuple:
        """What planning and admitting a frame change (each estimator's refusals, exploration and burst guard;
        the frame-path counters): a dry frame (`Controller.prime`) is planned and admitted like a served one,
        then `restore_admission_state` leaves no trace of it."""
        estimators = self._estimators()
        return [e.admission_state() for e in estimators], {name: self.counts[name] for name in FRAME_PATH_COUNTS}

    def restore_admission_state(self, state: tuple) -> None:
        estimator_states, counts = state
        for estimator, saved in zip(self._estimators(), estimator_states):
            estimator.restore_admission_state(saved)
        self.counts.update(counts)

    def _estimators(self) -> list:
        return [*self.segment_estimators, *self.reach_estimators, *self.slice_estimators.values(), self.delivery,
                self.wakeup]

    def note_arrival(self, busy: bool) -> None:
        """A frame arrived; `busy`: the interpreter was still running an earlier frame's step."""
        self.busy += ((1.0 if busy else 0.0) - self.busy) * BUSY_RATE

    # ----------------------------------------------------------------- measurements
    def seed_segment(self, position: int, samples) -> None:
        self.segment_estimators[position].seed(samples)
        self._plan_floor_age = PLAN_FLOOR_EVERY     # seeds moved: recompute the planning floor

    def seed_slice(self, exit_index: int, samples) -> None:
        self.slice_estimators[exit_index].seed(samples)
        self._plan_floor_age = PLAN_FLOOR_EVERY

    def seed_from_profile(self, program: Program, profile: LatencyProfile, precisions: Mapping[str, str],
                          fallback_precision: str | None = None) -> None:
        """Seed every segment, exit reach and slice with sums of the profile's per-graph samples
        (see `plan_samples`); with `fallback_precision`, each fallback slice too, from the profile's samples of
        its graphs at that precision (where the profile has them: a simulated clock, which has no warm-up to
        time them)."""
        reach = 0.0
        for position, samples in enumerate(plan_samples(program, profile, precisions)):
            self.seed_segment(position, samples)
            reach = reach + samples
            self.reach_estimators[position].seed(reach)
        self.seed_steps({i: profile.samples_s(step.graph, precisions.get(step.graph, "fp32"))
                         for i, step in enumerate(program.steps)})
        for exit_index, samples in slice_samples(program, profile, precisions).items():
            self.seed_slice(exit_index, samples)
        if fallback_precision is not None:
            at_fallback = dict.fromkeys(program.graphs, fallback_precision)
            for e in program.exits:
                steps = program.apriori_plan(e.index)
                if fallback_key(e.index) in self.fallback_values and all(
                        profile.has(program.steps[i].graph, fallback_precision) for i in steps):
                    self.seed_slice(fallback_key(e.index),
                                    draw_sums(program, profile, at_fallback, steps, 200 + e.index))

    def seed_from_warmup(self, warmup: WarmupSamples, record: bool) -> None:
        """Seed the estimates from a warm-up. A warm-up is a few dozen passes: one stall in it (a preemption)
        would be its 99th percentile and keep refinements refused for the first frames, so isolated hiccups are
        left out (`without_hiccups`). With `record` the warm-up seeds every segment, reach and slice; without
        it a profile seeded them, and on a real clock the warm-up brings that profile to this host's speed
        (`calibrate_seeds`); a slice the profile has no samples for (the fallback precision's) is seeded from
        the warm-up. The delivery path and the watchdog's path (timer lateness plus the hand-over after
        it: the guard) are this host's and mode's: always seeded from the warm-up."""
        segments = [without_hiccups(samples) for samples in warmup.segments]
        reaches = [without_hiccups(samples) for samples in warmup.reaches]
        slices = {index: without_hiccups(samples) for index, samples in warmup.slices.items()}
        if record:
            for position, samples in enumerate(segments):
                self.seed_segment(position, samples)
                self.reach_estimators[position].seed(reaches[position])
            for index, samples in slices.items():
                self.seed_slice(index, samples)
            self.seed_steps(warmup.steps)
        else:
            unseeded = {index for index in slices if not self.slice_estimators[index].count}
            for index in unseeded:                   # a slice the profile did not seed (the fallback's)
                self.seed_slice(index, slices[index])
            if not self.simulated:
                self.calibrate_seeds(segments, reaches, {i: v for i, v in slices.items() if i not in unseeded})
        self.delivery.seed(warmup.hand_back)
        self.delivery.seed(without_hiccups(warmup.delivery))
        if warmup.wake_lateness:
            handover = float(np.median(warmup.handover)) if len(warmup.handover) else 0.0
            self.wakeup.seed([late + handover for late in warmup.wake_lateness])

    def calibrate_seeds(self, segments, reaches, slices: Mapping[int, list]) -> None:
        """Bring a profile's seeds to this host's speed now, from a warm-up through the serving path: per
        segment, exit reach and a-priori slice, the profile's samples are multiplied by the warm-up's median
        over theirs, clipped to SEED_SCALE_LIMITS. The profile keeps the shape of each distribution (measured
        over a thousand runs); the warm-up (a few dozen runs) sets its level, and adds what the profile's bare
        graph timings leave out: the hooks between the steps and the exit's publication (5-6% of a segment
        here). The clip keeps a warm-up on a busy machine from multiplying the seeds by 50; online samples
        replace them after `min_online` frames either way.

        A host of another speed than the profile's (a VM of the same CPU model 1.8-2.4x slower here; another
        power mode or clock) is not clipped (`seeding.steady_host`): when every factor is within 0.25-4, all of
        them agree within 1.5x and every warm-up distribution has its seeds' shape, the warm-up measured a steady
        host, not stalls, and each factor is applied in full (clipped, the seeds stayed 1.5x too low here for
        the first `min_online` frames of each segment)."""
        measured = {}
        for position, samples in enumerate(segments):
            measured[f"segment{position}"] = (self.segment_estimators[position], samples)
            measured[f"reach{position}"] = (self.reach_estimators[position], reaches[position])
        for index, samples in slices.items():
            measured[f"slice{index}"] = (self.slice_estimators[index], samples)
        factors = {name: seed_factor(estimator, samples) for name, (estimator, samples) in measured.items()}
        steady = steady_host([(factors[name], estimator, samples) for name, (estimator, samples)
                              in measured.items() if factors[name] is not None])
        low, high = HOST_SPEED_LIMITS if steady else SEED_SCALE_LIMITS   # steady: trusted like a matching profile
        for name, (estimator, _) in measured.items():
            factor = factors[name]
            self.seed_scales[name] = 1.0 if factor is None else \
                _rescale(estimator, min(high, max(low, factor)), trusted=steady)
        self._plan_floor_age = PLAN_FLOOR_EVERY

    def estimates(self) -> dict[str, float]:
        """Current estimates in seconds, by name (segment<k>.typical/.tail, slice<k>.typical/.tail, margin, guard),
        the fraction of frames that arrived while the interpreter was busy, how many times an estimator's
        window kept only its latest samples (window_shifts: the latency shifted; latency.py), and the factors a warm-up applied
        to a profile's seeds (seed_scale.<estimator>; see calibrate_seeds)."""
        out = {}
        for position, est in enumerate(self.segment_estimators):
            out[f"segment{position}.typical"] = est.typical()
            out[f"segment{position}.tail"] = est.tail()
        for index, est in self.slice_estimators.items():
            out[f"slice{index}.typical"] = est.typical()
            out[f"slice{index}.tail"] = est.tail()
        out["margin"] = self.margin()
        out["guard"] = self.guard()
        out["busy_arrivals"] = self.busy
        out["window_shifts"] = float(sum(getattr(est, "shifts", 0) for est in self._estimators()))
        out.update({f"seed_scale.{name}": factor for name, factor in self.seed_scales.items()})
        return out

    def stats(self) -> ControllerStats:
        return ControllerStats(**self.counts)


def _rescale(estimator, factor: float, trusted: bool = False) -> float:
    """Scale `estimator`'s seeds by `factor`; the factor applied (1.0 when no seeds are left: online samples
    replaced them). Seeds the warm-up confirmed (`factor` within SEED_CONFIRMED of 1) or measured on a steady
    host (`trusted`) are first explored after TRUSTED_EXPLORE_AFTER refusals."""
    if not estimator.scale_seeds(factor):
        return 1.0
    if trusted or abs(factor - 1.0) <= SEED_CONFIRMED:
        estimator.delay_exploration(TRUSTED_EXPLORE_AFTER)
    return factor
