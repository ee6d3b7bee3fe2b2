"""Seeds of the latency estimators: sums drawn from a profile's per-graph samples, and how far a warm-up may
move them (a host of another speed, or a busy one).

>>> from edge_anytime.latency import QuantileEstimator
>>> seeded = QuantileEstimator(); seeded.seed([1.0, 1.02, 1.05] * 10)
>>> seed_factor(seeded, [2.0, 2.04, 2.1] * 10)
2.0
>>> steady_host([(2.0, seeded, [2.0, 2.04, 2.1] * 10)]), steady_host([(2.0, seeded, [1.0, 2.0, 9.0] * 10)])
(True, False)
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from .profile import LatencyProfile
from .program import Program

SEED_DRAWS = 1000           # samples drawn per segment when a profile's per-graph samples seed it
SEED_SCALE_LIMITS = (0.8, 1.25)   # how far a warm-up may move a profile's seeds (a busy boot must not x50 them) ...
HOST_SPEED_LIMITS = (0.25, 4.0)   # ... unless it measured a steady host of another speed (`steady_host`)
HOST_SPEED_AGREE = 1.5      # every estimator's factor within this ratio of the others': a host's speed, not a stall
HOST_SPEED_SPREAD = 1.3     # and every warm-up p90 / p50 within this factor of its seeds': no burst of preemptions


def seed_factor(estimator, measured) -> float | None:
    """median(measured) / the median of `estimator`'s seeds; None when there is nothing to compare."""
    seeded = estimator.typical()
    if len(measured) < 3 or not (0.0 < seeded < math.inf):
        return None
    return float(np.median(measured)) / seeded


def spread(samples) -> float:
    """p90 / p50 of `samples` (the shape of a latency distribution)."""
    values = np.asarray(samples, np.float64)
    median = float(np.median(values))
    return float(np.percentile(values, 90)) / median if median > 0 else math.inf


def steady_host(known: list) -> bool:
    """Did a warm-up measure a steady host of another speed than the profile's, rather than stalls? `known`:
    (factor, estimator, warm-up samples) per estimator with a factor (`seed_factor`). True when every factor is
    within HOST_SPEED_LIMITS, all of them within HOST_SPEED_AGREE of each other, and every warm-up distribution
    has its seeds' shape (p90 / p50 within HOST_SPEED_SPREAD of theirs): then the factors may apply in full
    (`DeadlinePolicy.calibrate_seeds`), else only within SEED_SCALE_LIMITS."""
    factors = [factor for factor, _, _ in known]
    low, high = HOST_SPEED_LIMITS
    return (bool(factors) and low <= min(factors) and max(factors) <= high
            and max(factors) <= HOST_SPEED_AGREE * min(factors)
            and all(spread(samples) <= HOST_SPEED_SPREAD * spread(estimator.samples())
                    for _, estimator, samples in known))


def draw_sums(program: Program, profile: LatencyProfile, precisions: Mapping[str, str], steps, seed: int):
    """SEED_DRAWS sums of one independent draw per step of `steps` from the profile's samples of its graph
    (at `precisions[graph]`, fp32 by default), deterministic in `seed`."""
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
    return [draw_sums(program, profile, precisions, seg.steps, seed + position)
            for position, seg in enumerate(program.anytime_segments())]


def slice_samples(program: Program, profile: LatencyProfile, precisions: Mapping[str, str],
                  seed: int = 0) -> dict[int, np.ndarray]:
    """Like `plan_samples`, for each exit's a-priori slice."""
    return {e.index: draw_sums(program, profile, precisions, program.apriori_plan(e.index), seed + 100 + e.index)
            for e in program.exits}
