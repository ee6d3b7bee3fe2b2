"""Latency estimators of the deadline monitor: a typical latency and a tail latency per segment.

The controller admits a segment on the probability, read from its measured
latency distribution, that it ends in time (`fit_probability`; the rule that
weighs it is in policy.py); `typical()` and `tail()` summarise the same
distribution. One `QuantileEstimator` per segment (and per exit reach, per
a-priori slice, for the delivery path), measured as a whole: tails of
consecutive small graphs rarely coincide, so summing per-graph tails overstates
a segment's.

* Samples come from two sources. *Seeds* (the bundle's profile when the host
  matches, or warm-up passes) give estimates from the first frame; once
  `min_online` samples were measured while serving, the seeds are dropped and
  only the sliding window of online samples counts. A warm-up taken while the
  machine was busy therefore stops mattering after a few dozen frames.
* The samples are kept sorted as they come (a binary-search insert and delete
  per sample; the one sort on the frame's path is of the `min_online` online
  samples, once, when the seeds give way); the typical and tail quantiles are
  re-read at every sample while seeds count, then every `refresh_every`.
* A shift resets the window: every SHIFT_CHECK_EVERY online samples, when the
  median of the latest SHIFT_SAMPLES is above (or below) SHIFT_SHARE of the older ones, the
  older ones describe another regime (a warm-up served back to back before a
  control loop that idles between frames and finds the caches cold, a machine
  that became busy or quiet) and only the latest are kept (from the first one
  past the older samples' SHIFT_SHARE quantile on, at least 8). A steady stream
  almost never does that (half of 32 samples above the 90th percentile by
  chance: about 1e-9), and a shifted one is followed within 40 frames, not the
  few hundred it takes a window of 512 to turn over.
* A burst guard: two consecutive samples above the tail raise it at once to
  their maximum (thermal throttling, another process); it decays by
  `burst_release` at each admission check, so nothing starves. It guards
  refinements (a result in hand is at risk), not a frame's first segment.
* Exploration: a refused segment gets no new samples, so stale slow samples (a
  warm-up on a busy machine, 50x slow; a slow spell that is over) could keep it
  refused forever. After `explore_after` refusals in a row it runs once anyway.
  An exploration faster than 90% of the samples it was judged by (the samples
  look stale) halves the wait for the next one, down to every refusal, so a
  faster host refills the window within a few dozen frames and drops the seeds;
  any other outcome (the estimate was right) doubles it, up to `explore_max`.
  Where a segment is refused on a good estimate, a stream of N frames pays
  about log2(N / explore_after) explorations, not one every few frames.
  Some estimators wait longer for the first one (`delay_exploration`): seeds
  confirmed on this host (a profile the warm-up agrees with), and a rarely
  chosen slice whose every exploration costs a frame's result.

>>> est = QuantileEstimator(quantile=0.99, typical_quantile=0.5, min_online=4, refresh_every=1)
>>> est.seed([5e-3] * 10)               # a warm-up on a busy machine
>>> est.tail()
0.005
>>> for v in [1.0e-3, 1.1e-3, 0.9e-3, 1.0e-3]:
...     est.observe(v)
>>> round(est.tail() * 1e3, 3), round(est.typical() * 1e3, 3)
(1.1, 1.0)
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass

import numpy as np

STALE_QUANTILE = 0.1   # an exploration faster than this quantile of the samples says they are stale
SHIFT_SAMPLES = 32     # the latest this many online samples are checked against the older ones ...
SHIFT_CHECK_EVERY = 8  # ... every this many samples
SHIFT_SHARE = 0.9      # ... and when their median is above (below) this share of the older samples, the latency
                       # has shifted (a loop that idles between frames, a machine that became busy): the window
                       # keeps only the latest samples, from the first one past the older ones' 90th percentile
TYPICAL_QUANTILE = 0.5   # what a path estimator's `typical()` reports by default (make_estimator): the median


@dataclass(frozen=True)
class EstimatorOptions:
    """How latency samples become estimates (see the module docstring).

    quantile: the tail used to admit a segment once the frame has a result (0.99: one
        admitted segment in a hundred may overrun its estimate).
    window: online samples kept per estimator.
    min_online: online samples after which seeds (profile, warm-up) are dropped.
    refresh_every: recompute the quantiles after this many new samples.
    burst_release: decay of the burst guard per admission check.
    explore_after: refusals in a row before a refused segment runs once anyway (exploration).
    explore_max: the longest wait between explorations, reached after overruns.
    kind: 'quantile' (default) or 'gaussian' (mean + `sigmas` sigma; a baseline only).
    online: False freezes the estimates at their seeds (the simulator's cached replay).
    """

    quantile: float = 0.99
    window: int = 512
    min_online: int = 32
    refresh_every: int = 16
    burst_release: float = 0.95
    explore_after: int = 8
    explore_max: int = 4096
    kind: str = "quantile"
    sigmas: float = 3.0
    online: bool = True

    def __post_init__(self) -> None:
        if not 0.5 <= self.quantile < 1.0:
            raise ValueError(f"quantile must be in [0.5, 1), got {self.quantile}")
        if self.window < 8:
            raise ValueError(f"window must be >= 8 samples, got {self.window}")
        if not 1 <= self.min_online <= self.window:
            raise ValueError(f"min_online must be in [1, window], got {self.min_online}")
        if self.refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1, got {self.refresh_every}")
        if not 0 < self.burst_release <= 1:
            raise ValueError(f"burst_release must be in (0, 1], got {self.burst_release}")
        if not 1 <= self.explore_after <= self.explore_max:
            raise ValueError(f"need 1 <= explore_after <= explore_max, got {self.explore_after}, {self.explore_max}")
        if self.kind not in ("quantile", "gaussian"):
            raise ValueError(f"unknown estimator kind {self.kind!r}; use 'quantile' or 'gaussian'")


def sorted_quantile(data, q: float) -> float:
    """The empirical q-quantile of sorted `data` (the sample at rank ceil(q * n)); inf when empty."""
    m = len(data)
    return float(data[min(m - 1, max(0, math.ceil(q * m) - 1))]) if m else math.inf


HICCUP_FACTOR = 4.0    # a warm-up sample above this multiple of the median is a stall, not the segment


def without_hiccups(samples, factor: float = HICCUP_FACTOR) -> list[float]:
    """Warm-up samples without isolated stalls: values above `factor` x the median are dropped unless they
    are more than a tenth of the samples (then the host really is that slow, and they stay).

    >>> without_hiccups([1.0, 1.1, 0.9] * 4 + [9.0])       # one stall in 13 passes
    [1.0, 1.1, 0.9, 1.0, 1.1, 0.9, 1.0, 1.1, 0.9, 1.0, 1.1, 0.9]
    >>> len(without_hiccups([1.0] * 8 + [9.0] * 4))       # a third of them: the host is that slow
    12
    """
    values = [float(v) for v in samples]
    if len(values) < 3:
        return values
    limit = factor * float(np.median(values))
    kept = [v for v in values if v <= limit]
    return kept if len(values) - len(kept) <= 0.1 * len(values) else values


class QuantileEstimator:
    """Typical and tail latency of one segment from seeds and a sliding window; see the module docstring."""

    def __init__(self, quantile: float = 0.99, typical_quantile: float = 0.5, window: int = 512,
                 min_online: int = 32, refresh_every: int = 16, burst_release: float = 0.95,
                 explore_after: int = 8, explore_max: int = 4096, online: bool = True) -> None:
        self.online = online
        self.quantile = quantile
        self.typical_quantile = typical_quantile
        self.min_online = min_online
        self.refresh_every = refresh_every
        self.burst_release = burst_release
        self.explore_max = explore_max
        self._window = [0.0] * window          # a list: a scalar read or write is 5x numpy's
        self._seeds = np.zeros(0, np.float64)
        self._online = 0                        # online samples in the window's ring (reset by a shift)
        self._measured = 0                      # online samples ever observed
        self._pending = 0
        self._typical = math.inf
        self._tail = math.inf
        self._sorted_list: list[float] = []    # the samples the estimates rest on, sorted (bisect per check)
        self._burst = 0.0
        self._last_above = False
        self._refusals = 0                      # in a row, since the last sample
        self._explore_after = explore_after
        self._explore_fast: float | None = None    # an exploration faster than this says the samples are stale
        self.shifts = 0                         # windows reset to their latest samples (see the module docstring)
        self.shift_factor = 1.0                 # the typical latency after the last shift over the one before

    @property
    def count(self) -> int:
        """Samples the estimates rest on (seeds while online samples are fewer than min_online)."""
        n = min(self._online, len(self._window))
        return n if self._online >= self.min_online else n + self._seeds.size

    @property
    def online_count(self) -> int:
        """Samples measured while serving, all of them (a shift may have left fewer in the window)."""
        return self._measured

    def seed(self, samples) -> None:
        """Add seed samples (profile, warm-up); they count until `min_online` online samples exist."""
        values = np.asarray([float(v) for v in samples], np.float64)
        values = values[np.isfinite(values) & (values >= 0)]
        if values.size:
            self._seeds = np.concatenate([self._seeds, values])[-len(self._window):]
            self._refresh()

    def scale_seeds(self, factor: float) -> bool:
        """Multiply the seed samples by `factor` (a profile brought to this host's speed now; see
        `DeadlinePolicy.calibrate_seeds`); online samples are left as measured. False: no seeds left."""
        if not (self._seeds.size and 0.0 < factor < math.inf):
            return False
        self._seeds = self._seeds * float(factor)
        self._refresh()
        return True

    def delay_exploration(self, explore_after: int) -> None:
        """Wait at least `explore_after` refusals in a row before the next exploration instead of the configured
        few: the seeds were confirmed on this host (a profile the warm-up agrees with), or exploring costs more
        than a refinement (a fallback slice: DeadlinePolicy._explore_fallbacks)."""
        self._explore_after = min(self.explore_max, max(self._explore_after, int(explore_after)))

    def observe(self, seconds: float) -> None:
        """Record a latency measured while serving (ignored when frozen, or not a finite number >= 0)."""
        if not (self.online and 0.0 <= seconds < math.inf):    # NaN fails the comparison too
            return
        above = seconds > self._tail
        self._refusals = 0
        if self._explore_fast is not None:
            self._explored(stale=seconds < self._explore_fast)
        if above and self._last_above:
            self._burst = max(self._burst, seconds)
        self._last_above = above
        window, online = self._window, self._online
        slot = online % len(window)
        evicted = window[slot] if online >= len(window) else None
        seconds = float(seconds)
        window[slot] = seconds
        self._online = online = online + 1
        self._measured += 1
        if online < self.min_online:           # seeds still count: the sample joins them (one insert, no rebuild:
            insort(self._sorted_list, seconds)  # a window of seeds re-sorted per sample: 25 us, six times a frame)
            self._read_quantiles()
            return
        if online == self.min_online:          # measured on this host now: the seeds give way
            self._refresh()
            return
        ordered = self._sorted_list               # keep it sorted: one delete and one insert by bisection
        if evicted is not None:
            del ordered[bisect_left(ordered, evicted)]
        insort(ordered, seconds)
        if not online % SHIFT_CHECK_EVERY and len(ordered) >= 2 * SHIFT_SAMPLES:
            shift = self._shift()
            if shift is not None:
                self._keep_latest(*shift)
                return
        self._pending += 1
        if self._pending >= self.refresh_every:
            self._read_quantiles()

    def _latest(self) -> list[float]:
        """The latest SHIFT_SAMPLES online samples, oldest first."""
        window, online = self._window, self._online
        return [window[(online - k) % len(window)] for k in range(SHIFT_SAMPLES, 0, -1)]

    def _shift(self) -> tuple[float, bool] | None:
        """(the older samples' bound the latest crossed, True if upwards) when the median of the latest samples is
        above (below) SHIFT_SHARE of the older ones; else None."""
        latest = sorted(self._latest())
        median = latest[SHIFT_SAMPLES // 2]
        ordered = self._sorted_list
        older = len(ordered) - SHIFT_SAMPLES
        below = bisect_left(ordered, median) - bisect_left(latest, median)    # older samples under the median
        above = len(ordered) - bisect_right(ordered, median) - (SHIFT_SAMPLES - bisect_right(latest, median))
        if below < SHIFT_SHARE * older and above < SHIFT_SHARE * older:
            return None
        older_sorted = list(ordered)
        for value in latest:
            del older_sorted[bisect_left(older_sorted, value)]
        upwards = below >= SHIFT_SHARE * older
        return sorted_quantile(older_sorted, SHIFT_SHARE if upwards else 1.0 - SHIFT_SHARE), upwards

    def _keep_latest(self, bound: float, upwards: bool) -> None:
        """Only the latest samples from the first one past `bound` on stay (see the module docstring)."""
        latest = self._latest()
        first = next((i for i, v in enumerate(latest) if (v > bound if upwards else v < bound)), 0)
        kept = latest[min(first, SHIFT_SAMPLES - SHIFT_CHECK_EVERY):]
        before = sorted_quantile(self._sorted_list, self.typical_quantile)
        self._window[:len(kept)] = kept
        self._online = len(kept)
        self._sorted_list = sorted(kept)
        self.shifts += 1
        self._read_quantiles()
        self.shift_factor = self._typical / before if 0.0 < before < math.inf else 1.0

    def scale_samples(self, factor: float) -> None:
        """Multiply every sample by `factor`: another estimator of the same path measured a shift this one,
        seldom run, has not seen yet (`DeadlinePolicy.follow_shifts`)."""
        if not 0.0 < factor < math.inf:
            return
        size = min(self._online, len(self._window))
        self._window[:size] = [v * factor for v in self._window[:size]]
        self._seeds = self._seeds * factor
        self._sorted_list = [v * factor for v in self._sorted_list]
        self._read_quantiles()

    def observe_stopped(self, seconds: float) -> None:
        """A run stopped by a late step, which would have taken about `seconds` (the steps it ran, plus the
        typical time of those it skipped): it enters the window like any sample. Whatever the admission
        threshold below it, it says what a complete run would (the segment did not fit); dropping it would
        leave only the runs that fitted, a window biased fast exactly at the budgets where runs overrun (and,
        after a slowdown, one that never learns). It is never taken as a sign of stale samples."""
        if not (self.online and 0.0 <= seconds < math.inf):
            return
        if self._explore_fast is not None:
            self._explored(stale=False)
        self.observe(seconds)

    def _explored(self, stale: bool) -> None:
        """An exploration's outcome sets the wait for the next one."""
        self._explore_after = max(1, self._explore_after // 2) if stale else \
            min(self.explore_max, self._explore_after * 2)
        self._explore_fast = None

    def _refresh(self) -> None:
        """Rebuild the sorted samples: seeds and online samples, or online samples only once there are
        `min_online` of them."""
        n = min(self._online, len(self._window))
        if self._online >= self.min_online:
            data = self._window[:n]
            if self._seeds.size:       # measured on this host now: the seeds go
                self._seeds = self._seeds[:0]
        else:
            data = self._seeds.tolist() + self._window[:n]
        self._sorted_list = sorted(data)
        self._read_quantiles()

    def _read_quantiles(self) -> None:
        self._pending = 0
        self._typical = sorted_quantile(self._sorted_list, self.typical_quantile)
        self._tail = sorted_quantile(self._sorted_list, self.quantile)

    def samples(self) -> np.ndarray:
        """The sorted samples the estimates rest on (a read-only copy)."""
        view = np.array(self._sorted_list, np.float64)
        view.flags.writeable = False
        return view

    def fit_probability(self, seconds: float, guarded: bool = True) -> float:
        """P(latency <= seconds) from the samples: an admission check. While a burst is on (see the module
        docstring), 0 unless `seconds` covers the burst level; each such check releases the burst guard.
        `guarded=False`: the samples alone (the burst guard protects a result in hand; a frame's first segment
        has none, and refusing it would give no result for sure)."""
        burst = self._burst
        if guarded and burst > self._tail:
            self._burst = burst * self.burst_release
            if seconds < burst:
                return 0.0
        data = self._sorted_list
        if not data:
            return 0.0
        return bisect_right(data, seconds) / len(data)

    def lower_bound(self, probability: float) -> float:
        """The least `seconds` at which `fit_probability(seconds)` can reach `probability` (inf: no samples)."""
        data = self._sorted_list
        if not data:
            return math.inf
        return data[min(len(data), max(1, math.ceil(probability * len(data)))) - 1]

    def typical(self) -> float:
        """Latency at `typical_quantile` (inf when nothing is known)."""
        return self._typical

    def tail(self) -> float:
        """Latency at `quantile`, raised by the burst guard (inf when nothing is known). An admission check:
        it releases the burst guard by `burst_release`."""
        burst = self._burst
        if burst > self._tail:
            self._burst = burst * self.burst_release
            return burst
        return self._tail

    def admission_state(self) -> tuple:
        """What admission checks change (refusals, exploration, burst guard): `restore_admission_state` puts
        it back after a dry frame (`Controller.prime`), whose checks must leave no trace."""
        return (self._refusals, self._explore_after, self._explore_fast, self._burst, self._last_above)

    def restore_admission_state(self, state: tuple) -> None:
        (self._refusals, self._explore_after, self._explore_fast, self._burst, self._last_above) = state

    def refuse_unchecked(self) -> bool:
        """A refusal decided without an admission check (`DeadlinePolicy.first_exit_only`): counted like one,
        unless it would be the refusal that starts an exploration; then False, and the caller lets admission
        check the segment (and explore it)."""
        if self.online and math.isfinite(self._tail):
            if self._refusals + 1 >= self._explore_after:
                return False
            self._refusals += 1
        return True

    def refused(self) -> bool:
        """Admission refused the segment. True: explore it, i.e. run it once anyway (see the module docstring)."""
        if not self.online or not math.isfinite(self._tail):
            return False
        self._refusals += 1
        if self._refusals < self._explore_after:
            return False
        self._refusals = 0
        self._explore_fast = sorted_quantile(self._sorted_list, STALE_QUANTILE)
        return True


class GaussianEstimator:
    """mean + k sigma over a window: a baseline for bench/bench_deadline.py; it misses heavy tails."""

    def __init__(self, sigmas: float = 3.0, typical_quantile: float = 0.5, window: int = 1024,
                 online: bool = True) -> None:
        from statistics import NormalDist

        self.online = online
        self.sigmas = sigmas
        self._z = NormalDist().inv_cdf(typical_quantile)
        self._samples = np.zeros(window, np.float64)
        self._count = 0

    @property
    def count(self) -> int:
        return min(self._count, self._samples.size)

    def seed(self, samples) -> None:
        for value in samples:
            self._samples[self._count % self._samples.size] = float(value)
            self._count += 1

    def observe(self, seconds: float) -> None:
        if self.online and math.isfinite(seconds) and seconds >= 0:
            self.seed([seconds])

    def delay_exploration(self, explore_after: int) -> None:
        """No exploration here (see QuantileEstimator.delay_exploration)."""

    def scale_seeds(self, factor: float) -> bool:
        """Multiply the samples by `factor` (called before serving, when all of them are seeds)."""
        if not (self.count and 0.0 < factor < math.inf):
            return False
        self._samples *= float(factor)
        return True

    observe_stopped = observe   # a stopped run is a sample like any other (see QuantileEstimator.observe_stopped)

    def _moments(self) -> tuple[float, float]:
        data = self._samples[:self.count]
        return (math.inf, 0.0) if data.size == 0 else (float(data.mean()), float(data.std()))

    def typical(self) -> float:
        mean, std = self._moments()
        return mean + self._z * std

    def fit_probability(self, seconds: float, guarded: bool = True) -> float:
        from statistics import NormalDist

        mean, std = self._moments()
        if not math.isfinite(mean):
            return 0.0
        if std <= 0:
            return 1.0 if seconds >= mean else 0.0
        return NormalDist(mean, std).cdf(seconds)

    def lower_bound(self, probability: float) -> float:
        from statistics import NormalDist

        mean, std = self._moments()
        if not math.isfinite(mean) or std <= 0:
            return mean
        return NormalDist(mean, std).inv_cdf(min(max(probability, 1e-9), 1 - 1e-9))

    def tail(self) -> float:
        mean, std = self._moments()
        return mean + self.sigmas * std

    def refused(self) -> bool:
        return False

    def refuse_unchecked(self) -> bool:
        return True

    shifts = 0                    # no shift detection here (see QuantileEstimator)
    shift_factor = 1.0

    def scale_samples(self, factor: float) -> None:
        """Multiply every sample by `factor` (see QuantileEstimator.scale_samples)."""
        if 0.0 < factor < math.inf:
            self._samples *= float(factor)

    def admission_state(self) -> tuple:
        """Admission checks change nothing here (see QuantileEstimator.admission_state)."""
        return ()

    def restore_admission_state(self, state: tuple) -> None:
        """Nothing to restore (see QuantileEstimator.admission_state)."""



def make_estimator(options: EstimatorOptions, typical_quantile: float = TYPICAL_QUANTILE):
    """The estimator `options` describe; `typical()` reports the latency at `typical_quantile`."""
    if options.kind == "gaussian":
        return GaussianEstimator(options.sigmas, typical_quantile, options.window, options.online)
    return QuantileEstimator(options.quantile, typical_quantile, options.window, options.min_online,
                             options.refresh_every, options.burst_release, options.explore_after,
                             options.explore_max, options.online)
