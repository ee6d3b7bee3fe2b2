"""Typed, frozen options of the controller and its counters.

>>> opts = ControllerOptions(mode="apriori", margin_s=0.0005)
>>> opts.estimator.quantile
0.999
>>> ControllerOptions(mode="fast")
Traceback (most recent call last):
...
ValueError: mode must be 'anytime' or 'apriori', got 'fast'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Union

from .latency import EstimatorOptions

MODES = ("anytime", "apriori")


@dataclass(frozen=True)
class ControllerOptions:
    """How the controller runs frames.

    mode: 'anytime' (refine until the deadline, a confidence target or interrupt())
          or 'apriori' (budget known up front: run only the slice of the best exit that fits).
    confidence_target: stop refining once the calibrated confidence reaches it (anytime mode).
    margin_s: safety margin added to a step's pWCET when admitting it.
    first_exit_quantile: while a frame has no result yet, admit a segment when this lower quantile of
          its steps' latencies (plus margin) fits, instead of the pWCET: refusing the first segment
          means no result at all, while trying it risks nothing the watchdog does not cover.
          None: the pWCET rule for every segment.
    watchdog_guard_s: the watchdog hands over the best result this long before the deadline,
          so delivery (thread wake-up, queueing) still lands by the deadline. Must be <= margin_s.
    estimator: how pWCET is estimated from latency samples (see latency.py).
    warmup_runs: plan passes at load to seed the latency estimates (unless a profile seeds them); on a
          real clock warm-up continues until each graph has 1/(1-quantile) samples or
          `warmup_seconds` have passed.
    profile_target: seed latency estimates from the bundle's profile for this target (e.g. 'x86-64').
    precision: 'fp32' | 'fp16' | 'int8', or a mapping {graph: precision, '*': default}.
    num_threads: interpreter threads per graph (1 is best on small boards, see docs/toolchain.md).
    top_k: how many classes each Prediction lists.
    coarse_below: with hierarchical labels, mark a prediction 'coarse' when the fine confidence is below this.
    validate_frames: check shape, dtype and finiteness of every frame (about 5 us).
    threaded: None (default) = inference thread + watchdog on a real clock, inline on a simulated one.
          False = run frames inline in the caller's thread with no watchdog thread: cheapest, but a
          stuck step delays `run()` until it returns (its result is still dropped as late).
    """

    mode: str = "anytime"
    confidence_target: float | None = None
    margin_s: float = 0.0003
    first_exit_quantile: float | None = 0.9
    watchdog_guard_s: float = 0.0002
    estimator: EstimatorOptions = field(default_factory=EstimatorOptions)
    warmup_runs: int = 100
    warmup_seconds: float = 1.0
    profile_target: str | None = None
    precision: Union[str, Mapping[str, str]] = "fp32"
    num_threads: int = 1
    top_k: int = 5
    coarse_below: float | None = None
    validate_frames: bool = True
    threaded: bool | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'anytime' or 'apriori', got {self.mode!r}")
        if self.margin_s < 0 or self.watchdog_guard_s < 0:
            raise ValueError("margin_s and watchdog_guard_s must be >= 0")
        if self.watchdog_guard_s > self.margin_s:
            raise ValueError(f"watchdog_guard_s ({self.watchdog_guard_s}) must be <= margin_s ({self.margin_s}): "
                             f"otherwise an admitted step could be cut off by the watchdog")
        if self.confidence_target is not None and not 0 < self.confidence_target <= 1:
            raise ValueError(f"confidence_target must be in (0, 1], got {self.confidence_target}")
        if self.first_exit_quantile is not None and not 0.5 <= self.first_exit_quantile < 1:
            raise ValueError(f"first_exit_quantile must be in [0.5, 1) or None, got {self.first_exit_quantile}")
        if self.warmup_runs < 0:
            raise ValueError("warmup_runs must be >= 0")


@dataclass(frozen=True)
class ControllerStats:
    """A snapshot of the controller's counters (`Controller.stats()`)."""

    frames: int = 0
    final: int = 0
    deadline: int = 0
    confidence: int = 0
    interrupted: int = 0
    degraded: int = 0
    no_result: int = 0
    rejected_frames: int = 0
    steps_admitted: int = 0
    steps_skipped: int = 0
    steps_overrun: int = 0        # a step took longer than the pWCET it was admitted with
    late_steps: int = 0           # a step finished after the watchdog delivered; its output was dropped
    missed_deadlines: int = 0     # frames with no result by the deadline, or handed over after it
    backend_errors: int = 0
    callback_errors: int = 0
