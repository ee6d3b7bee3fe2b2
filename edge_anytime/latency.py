"""Latency estimators for the deadline monitor: a probabilistic WCET (pWCET) per graph.

Latency tails on embedded boards are heavy and misses come in bursts, so a
Gaussian `mean + 3 sigma` under-estimates the 99.9th percentile badly (it is
kept here only as a baseline for bench/bench_deadline.py). The default
`QuantileEstimator` combines:

* an empirical high quantile over a sliding window of recent samples (no
  distribution assumed);
* with fewer samples than 1/(1-q), the sample at the 99th-percentile rank
  times `small_sample_factor` (the max of few samples under-estimates a high
  quantile; one outlier among hundreds of warm-up runs is ignored);
* a burst guard with fast attack and release per admission check: two
  consecutive samples above the estimate raise it at once, so a burst of slow steps
  (thermal throttling, a competing process) does not cause a burst of
  misses; it decays by `burst_release` at every admission check, including
  checks that refuse the graph, so a graph refused after a spike is admitted
  again after a few frames instead of starving.

>>> est = QuantileEstimator(quantile=0.99, window=200)
>>> for v in [1.0e-3] * 150 + [1.4e-3] * 3:
...     est.observe(v)
>>> est.estimate() >= 1.4e-3
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EstimatorOptions:
    kind: str = "quantile"        # "quantile" (default) or "gaussian" (mean + k sigma; a baseline only)
    quantile: float = 0.999
    window: int = 2000
    small_sample_factor: float = 1.25  # inflation while samples < 1/(1-quantile) (see _window_quantile)
    burst_release: float = 0.95    # decay of the burst guard per admission check
    sigmas: float = 3.0            # for kind="gaussian"
    online: bool = True            # False: estimates come from warm-up/profile samples only (simulator sweeps)

    def __post_init__(self) -> None:
        if not 0.5 <= self.quantile < 1.0:
            raise ValueError(f"quantile must be in [0.5, 1), got {self.quantile}")
        if self.window < 8:
            raise ValueError(f"window must be >= 8 samples, got {self.window}")


class QuantileEstimator:
    """Sliding-window empirical quantile with small-sample inflation and a burst guard."""

    def __init__(self, quantile: float = 0.999, window: int = 2000, small_sample_factor: float = 1.25,
                 burst_release: float = 0.95, online: bool = True) -> None:
        self.online = online
        self.quantile = quantile
        self.small_sample_factor = small_sample_factor
        self.burst_release = burst_release
        self._samples = np.zeros(window, dtype=np.float64)
        self._count = 0
        self._burst = 0.0
        self._quantile_value = math.inf   # last computed window quantile
        self._dirty = True
        self._stale = 0
        self._refusals = 0
        self._last_above = 0.0
        self._typical_key: tuple = ()
        self._typical_value = math.inf
        self._needed = math.ceil(1.0 / (1.0 - quantile))

    @property
    def count(self) -> int:
        return self._count

    def seed(self, samples) -> None:
        """Record samples (warm-up, a stored profile) whether or not the estimator is online.
        Seeding never arms the burst guard: one preempted warm-up run must not stick."""
        for value in samples:
            self._record(float(value))

    def observe(self, seconds: float) -> None:
        """Record a latency measured while serving frames (ignored when not online)."""
        if self.online:
            if seconds > self._quantile_value:
                # fast attack on a burst: two slow samples in a row. An isolated spike is what the
                # quantile already accounts for; arming on it would make the estimate follow noise.
                if self._last_above > 0.0:
                    self._burst = max(self._burst, seconds, self._last_above)
                self._last_above = seconds
            else:
                self._last_above = 0.0
            self._record(seconds)

    def _record(self, seconds: float) -> None:
        self._samples[self._count % self._samples.size] = seconds
        self._count += 1
        self._stale += 1
        if seconds > self._quantile_value or self._stale >= 32 or self._count <= self._needed:
            self._dirty = True                            # refresh lazily; at most every 32 samples when calm

    def typical(self, quantile: float) -> float:
        """A lower quantile of the window (e.g. 0.9): how long the graph usually takes. Used to admit the
        first segment of a frame, when refusing it would mean no result at all."""
        n = min(self._count, self._samples.size)
        if n == 0:
            return math.inf
        if self._typical_key != (self._count, quantile):
            rank = min(n - 1, max(0, int(math.ceil(quantile * n)) - 1))
            self._typical_value = float(np.partition(self._samples[:n], rank)[rank])
            self._typical_key = (self._count, quantile)
        return self._typical_value

    def refused(self) -> None:
        """An admission check refused this graph. A refused graph gets no new samples, so outliers in its
        window could keep it refused forever; every 16th refusal replaces the window's largest sample by
        its median. The estimate thus probes downwards until the graph runs and is measured again (a step
        that then overruns is dropped by the watchdog; the frame's result is still delivered on time)."""
        if not self.online or self._count == 0:
            return
        self._refusals += 1
        if self._refusals % 16 == 0:
            n = min(self._count, self._samples.size)
            data = self._samples[:n]
            data[int(np.argmax(data))] = float(np.median(data))
            self._dirty = True
            self._typical_key = ()

    def _window_quantile(self) -> float:
        n = min(self._count, self._samples.size)
        data = self._samples[:n]
        if n < self._needed:
            # Too few samples for the quantile: take the sample at the 99th percentile rank (the max
            # below 100 samples, so isolated outliers of larger warm-ups are ignored) and inflate it.
            rank = n - 1 - n // 100
            return float(np.partition(data, rank)[rank]) * self.small_sample_factor
        rank = min(n - 1, int(math.ceil(self.quantile * n)) - 1)
        return float(np.partition(data, rank)[rank])

    def estimate(self) -> float:
        """The pWCET in seconds (inf when nothing was observed).

        Each call is one admission check and releases the burst guard by `burst_release`, so
        a graph that is no longer admitted after a spike gets admitted again: nothing starves.
        """
        if self._count == 0:
            return math.inf
        if self._dirty:
            self._quantile_value = self._window_quantile()
            self._dirty = False
            self._stale = 0
        if self._burst > self._quantile_value:
            burst = self._burst
            self._burst = burst * self.burst_release
            return burst
        return self._quantile_value


class GaussianEstimator:
    """mean + k*sigma over a sliding window. A baseline: it misses heavy tails (see module doc)."""

    def __init__(self, sigmas: float = 3.0, window: int = 2000, online: bool = True) -> None:
        self.online = online
        self.sigmas = sigmas
        self._samples = np.zeros(window, dtype=np.float64)
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def seed(self, samples) -> None:
        """Record samples (warm-up, a stored profile) whether or not the estimator is online."""
        for value in samples:
            self._record(float(value))

    def observe(self, seconds: float) -> None:
        """Record a latency measured while serving frames (ignored when not online)."""
        if self.online:
            self._record(seconds)

    def _record(self, seconds: float) -> None:
        self._samples[self._count % self._samples.size] = seconds
        self._count += 1

    def refused(self) -> None:
        pass

    def typical(self, quantile: float) -> float:
        """mean + z(quantile) * sigma (normal assumption, like the estimate itself)."""
        if self._count == 0:
            return math.inf
        from statistics import NormalDist

        data = self._samples[:min(self._count, self._samples.size)]
        return float(data.mean() + NormalDist().inv_cdf(quantile) * data.std())

    def estimate(self) -> float:
        if self._count == 0:
            return math.inf
        data = self._samples[:min(self._count, self._samples.size)]
        return float(data.mean() + self.sigmas * data.std())


def make_estimator(options: EstimatorOptions):
    if options.kind == "quantile":
        return QuantileEstimator(options.quantile, options.window, options.small_sample_factor, options.burst_release,
                                 options.online)
    if options.kind == "gaussian":
        return GaussianEstimator(options.sigmas, options.window, options.online)
    raise ValueError(f"unknown estimator kind {options.kind!r}; use 'quantile' or 'gaussian'")
