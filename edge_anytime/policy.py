"""The deadline policy: latency estimates, margins measured on this host, admission, and counters.

One `DeadlinePolicy` belongs to one controller. It owns an estimator per anytime
segment, per a-priori slice, for the delivery path and for the watchdog's
wake-up, and the controller's counters. The admission rule (docs/runtime.md):

* the first segment of a frame runs if `now + typical(segment) <= deadline - margin`
  (refusing it means no result at all);
* every later segment runs if `now + tail(segment) <= deadline - margin`
  (an overrun loses only the refinement, but keeps the interpreter busy);
* in a-priori mode, the best-ranked exit whose slice tail fits, else the
  best-ranked whose slice typical latency fits.

`margin` is the measured delivery path: the tail of the time from the last
step's end to the result being in the caller's hands (thread hand-back, result
assembly), sampled at warm-up and on every frame; 0 on a simulated clock. The
watchdog fires `guard` before the deadline, where `guard` is the tail of its own
measured wake-up lateness. Explicit `margin_s` / `watchdog_guard_s` options
override both.

>>> from edge_anytime.program import Exit, GraphSignature, Port, Program, Step
>>> x, y = Port("x", (1, 2)), Port("y", (1, 2))
>>> program = Program("image", {"g": GraphSignature("g", (x,), (y,))},
...                   (Step("s0", "g", {"x": "image"}, {"y": "l0"}), Step("s1", "g", {"x": "l0"}, {"y": "l1"})),
...                   (Exit(0, "l0"), Exit(1, "l1")))
>>> policy = DeadlinePolicy(program, ControllerOptions(), simulated=True, threaded=False)
>>> policy.seed_segment(0, [1e-3] * 20); policy.seed_segment(1, [2e-3] * 20)
>>> policy.admits(0, now=0.0, limit=1.5e-3, has_result=False), policy.admits(1, now=1e-3, limit=2.5e-3, has_result=True)
(True, False)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

from .latency import make_estimator
from .options import ControllerOptions, ControllerStats
from .profile import LatencyProfile
from .program import Program, exit_ranks

DELIVERY_QUANTILE = 0.999   # margins protect every frame's delivery, not one segment in a hundred
SEED_DRAWS = 1000           # samples drawn per segment when a profile's per-graph samples seed it


class DeadlinePolicy:
    """Estimates, margins, admission and counters of one controller; see the module docstring."""

    def __init__(self, program: Program, options: ControllerOptions, *, simulated: bool, threaded: bool) -> None:
        self.options = options
        self.simulated = simulated
        self.threaded = threaded
        typical_q = options.first_exit_quantile if options.first_exit_quantile is not None else options.estimator.quantile
        self.segments = program.anytime_segments()
        self.segment_estimators = [make_estimator(options.estimator, typical_q) for _ in self.segments]
        self.slice_estimators = {e.index: make_estimator(options.estimator, typical_q) for e in program.exits}
        delivery_options = dataclasses.replace(options.estimator, quantile=DELIVERY_QUANTILE, kind="quantile")
        self.delivery = make_estimator(delivery_options, 0.5)
        self.wakeup = make_estimator(delivery_options, 0.5)
        ranks = exit_ranks(program)
        self.apriori_order = sorted(range(len(program.exits)), key=lambda i: -ranks[i])
        self.counts = {name: 0 for name in ControllerStats.__dataclass_fields__}
        self._first_typical = options.first_exit_quantile is not None

    # ----------------------------------------------------------------- margins
    def margin(self) -> float:
        """Time reserved after the last step for the result to reach the caller (seconds)."""
        if self.options.margin_s is not None:
            return self.options.margin_s
        if self.simulated:
            return 0.0
        delivery = self.delivery.tail()
        return max(delivery if math.isfinite(delivery) else 0.0, self.guard())

    def guard(self) -> float:
        """How long before the deadline the watchdog hands the best result over (seconds)."""
        if self.options.watchdog_guard_s is not None:
            return self.options.watchdog_guard_s
        if self.simulated or not self.threaded:
            return 0.0
        wakeup = self.wakeup.tail()
        return wakeup if math.isfinite(wakeup) else 0.0

    # ----------------------------------------------------------------- admission
    def segment_cost(self, position: int, has_result: bool) -> float:
        estimator = self.segment_estimators[position]
        return estimator.typical() if (not has_result and self._first_typical) else estimator.tail()

    def admits(self, position: int, now: float, limit: float, has_result: bool) -> bool:
        """May anytime segment `position` start at `now`, given the frame must be done by `limit`?"""
        if now + self.segment_cost(position, has_result) <= limit:
            return True
        self.segment_estimators[position].refused()
        return False

    def choose_apriori(self, now: float, limit: float) -> int | None:
        """The best-ranked exit whose slice fits by its tail, else by its typical latency; None if none fits."""
        for use_tail in (True, False) if self._first_typical else (True,):
            for index in self.apriori_order:
                estimator = self.slice_estimators[index]
                if now + (estimator.tail() if use_tail else estimator.typical()) <= limit:
                    return index
        for estimator in self.slice_estimators.values():
            estimator.refused()
        return None

    # ----------------------------------------------------------------- measurements
    def seed_segment(self, position: int, samples) -> None:
        self.segment_estimators[position].seed(samples)

    def seed_slice(self, exit_index: int, samples) -> None:
        self.slice_estimators[exit_index].seed(samples)

    def seed_from_profile(self, program: Program, profile: LatencyProfile, precisions: Mapping[str, str]) -> None:
        """Seed every segment and slice with sums of the profile's per-graph samples (see `plan_samples`)."""
        for position, samples in enumerate(plan_samples(program, profile, precisions)):
            self.seed_segment(position, samples)
        for exit_index, samples in slice_samples(program, profile, precisions).items():
            self.seed_slice(exit_index, samples)

    def estimates(self) -> dict[str, float]:
        """Current estimates in seconds, by name (segment<k>.typical/.tail, slice<k>.tail, delivery, guard)."""
        out = {}
        for position, est in enumerate(self.segment_estimators):
            out[f"segment{position}.typical"] = est.typical()
            out[f"segment{position}.tail"] = est.tail()
        for index, est in self.slice_estimators.items():
            out[f"slice{index}.typical"] = est.typical()
            out[f"slice{index}.tail"] = est.tail()
        out["margin"] = self.margin()
        out["guard"] = self.guard()
        return out

    def stats(self) -> ControllerStats:
        return ControllerStats(**self.counts)


def _draw_sums(program: Program, profile: LatencyProfile, precisions: Mapping[str, str], steps, seed: int):
    rng = np.random.default_rng([seed, len(steps)])
    total = np.zeros(SEED_DRAWS)
    for index in steps:
        graph = program.steps[index].graph
        samples = np.asarray(profile.samples_s(graph, precisions.get(graph, "fp32")), np.float64)
        total += samples[rng.integers(0, samples.size, SEED_DRAWS)]
    return total


def plan_samples(program: Program, profile: LatencyProfile, precisions: Mapping[str, str],
                 seed: int = 0) -> list[np.ndarray]:
    """Latency samples of each anytime segment: sums of independent draws from its steps' profile samples
    (the distribution of the segment as the simulator draws it), SEED_DRAWS per segment, deterministic."""
    return [_draw_sums(program, profile, precisions, seg.steps, seed + position)
            for position, seg in enumerate(program.anytime_segments())]


def slice_samples(program: Program, profile: LatencyProfile, precisions: Mapping[str, str],
                  seed: int = 0) -> dict[int, np.ndarray]:
    """Like `plan_samples`, for each exit's a-priori slice."""
    return {e.index: _draw_sums(program, profile, precisions, program.apriori_plan(e.index), seed + 100 + e.index)
            for e in program.exits}
