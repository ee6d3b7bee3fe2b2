"""Typed, frozen options of the controller and its counters.

>>> opts = ControllerOptions(mode="apriori", margin_s=0.0005)
>>> opts.estimator.quantile
0.99
>>> ControllerOptions(mode="fast")
Traceback (most recent call last):
...
ValueError: mode must be 'anytime' or 'apriori', got 'fast'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Union

from .latency import EstimatorOptions
from .manifest import PRECISIONS

MODES = ("anytime", "apriori")
PRIME_MODES = ("auto", "off")


def valid_confidence(value) -> bool:
    """A confidence target: a real number in (0, 1] (bool and strings are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1


@dataclass(frozen=True)
class ControllerOptions:
    """How the controller runs frames.

    mode: 'anytime' (refine until the deadline, a confidence target or interrupt())
          or 'apriori' (budget known up front: run only the slice of the best exit that fits).
    confidence_target: stop refining once the calibrated confidence reaches it (anytime mode).
    margin_s: time kept free after the last step for the result to reach the caller. None (default):
          the measured delivery path on this host and mode (docs/runtime.md), 0 on a simulated clock.
    min_fit_probability: never start a segment with a smaller chance, from its measured latency
          distribution, of ending before the deadline (the admission rule weighs gain and loss above it;
          docs/runtime.md "Admission").
    watchdog_guard_s: the watchdog hands over the best result this long before the deadline. None
          (default): the measured tail of its own wake-up lateness (0 on a simulated clock or inline).
    plan_frames: in anytime mode, decide at each frame's start (its deadline is known) whether the a-priori
          slice of one exit is worth more than the anytime plan, and run it instead: heads whose result
          would be superseded are skipped (docs/runtime.md "Planning"). Off while a confidence target is
          set. False: always the full anytime plan (every refinement reaches on_result).
    estimator: how latency samples become typical and tail estimates (see latency.py).
    warmup_runs: frames run at load through the serving path (the first few discarded as cold) to seed
          the estimates; on a real clock warm-up continues until every estimator has `min_online`
          samples or `warmup_seconds` have passed.
    profile_target: which of the bundle's latency profiles seeds the estimates: 'auto' (default) the
          profile recorded on a host like this one, if any; a target name (warns if its host differs);
          None never.
    precision: 'fp32' | 'fp16' | 'int8', or a mapping {graph: precision, '*': default}.
    fallback_precision: a precision of the bundle ('int8') whose graphs answer an exit, as its a-priori slice,
          when planning finds them worth more than the `precision` graphs: a budget too tight for the first
          exit at `precision` gets the faster graphs' answer instead of none, and a middle budget a deeper exit
          than `precision` could reach. None: never. 'auto' (default): 'int8' on a real clock, for each exit
          whose int8 graphs the bundle holds and whose parity report shows them agreeing with the primary ones
          on >= 99% of the images at that exit (docs/runtime.md "Precision fallback"; `from_bundle`).
    num_threads: interpreter threads per graph (1 is best on small boards, see docs/toolchain.md).
    top_k: how many classes each Prediction lists.
    coarse_below: with hierarchical labels, mark a prediction 'coarse' when the fine confidence is below this.
    validate_frames: check shape, dtype and finiteness of every frame (about 5 us).
    max_pending: `submit()` keeps at most this many frames queued; a frame submitted while the queue is
          full is refused at once (`no_result`, error "queue full", `on_error`) rather than delaying every
          frame behind it: the newest frame is the one dropped, so memory stays bounded.
    threaded: False (default): steps run on the caller's thread (`run()` costs no thread hand-off; a step
          that stalls makes `run()` return late, and the result says so). True: steps run on an inference
          thread and `run()` waits with a timeout, so it hands back the best result by the deadline even
          while a step is stuck, at the price of a hand-off and a timer wake-up per frame (measured in
          docs/results.md: it loses budget on sub-millisecond models). None means False.
    share_caller_cpu: False (default): the scheduler places the caller and the inference thread. True (real
          clock, `threaded=True`): each hand-off of `run()` pins the woken thread to the waker's CPU until it
          wakes (`handoff.CpuSharing`), so hand-in and hand-back are context switches on one core, not
          cross-CPU wake-ups: a lower median (1.20-1.25x the bare chain against 1.30-1.38x here) but a worse tail at
          tight budgets (measured in docs/results.md, "Controller overhead"). Choose it for throughput with
          loose budgets; the caller's own affinity is the same after every call. `submit()` pins nothing.
    record_in_background: False (default): a frame's latency samples are fed to the estimators on the
          caller's thread, before its result is stamped. True (real clock, `threaded=False`): a background
          thread (`edge-anytime-recorder`, waking every 2 ms) does it, which takes that work (5-10 us a frame
          here) off the frame's path when the loop has idle time between frames, but competes for the
          interpreter lock when frames run back to back (measured in docs/results.md).
    prime: 'auto' (default): when calls come at a steady period of 2 ms or more (a control loop idling
          between frames, whose caches go cold), a thread (`edge-anytime-primer`) runs a dry frame up to its
          first exit about `prime_lead_s` before each expected call (`Controller.prime`, priming.py): the
          served frame finds the caches warm. It costs that much computation per frame; frames back to back,
          irregular calls and simulated clocks never prime. 'off': never by itself (`prime()` still works).
    prime_lead_s: how long before an expected call its dry frame starts, at least (longer when a dry frame
          takes more than half of it, or calls jitter).
    value_tie: when anytime planning replaces the anytime plan with an a-priori slice (fallback slices
          included), the slices whose p * value is within this much of the best are taken as equally good: the
          fastest runs, then the one most likely to fit (docs/runtime.md "Planning"). Exit values are
          validation accuracies, and 0.003 is about two standard errors of a 99% accuracy measured on 4,000
          images: a difference below it does not pay for a slower, riskier slice. 0: strict p * value order.
          A-priori mode keeps the strict order (the best slice that fits).
    """

    mode: str = "anytime"
    confidence_target: float | None = None
    margin_s: float | None = None
    min_fit_probability: float = 0.05
    plan_frames: bool = True
    watchdog_guard_s: float | None = None
    estimator: EstimatorOptions = field(default_factory=EstimatorOptions)
    warmup_runs: int = 50
    warmup_seconds: float = 1.0
    profile_target: str | None = "auto"
    precision: Union[str, Mapping[str, str]] = "fp32"
    fallback_precision: str | None = "auto"
    num_threads: int = 1
    top_k: int = 5
    coarse_below: float | None = None
    validate_frames: bool = True
    threaded: bool | None = False
    max_pending: int = 64
    share_caller_cpu: bool = False
    record_in_background: bool = False
    prime: str = "auto"
    prime_lead_s: float = 1e-3
    value_tie: float = 0.003

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'anytime' or 'apriori', got {self.mode!r}")
        for name in ("margin_s", "watchdog_guard_s"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be None (measured) or a finite number of seconds >= 0, got {value!r}")
        if self.confidence_target is not None and not valid_confidence(self.confidence_target):
            raise ValueError(f"confidence_target must be a number in (0, 1] (not a string), got "
                             f"{self.confidence_target!r}")
        if not (isinstance(self.min_fit_probability, (int, float)) and 0 < self.min_fit_probability <= 1):
            raise ValueError(f"min_fit_probability must be in (0, 1], got {self.min_fit_probability!r}")
        if self.warmup_runs < 0:
            raise ValueError("warmup_runs must be >= 0")
        if self.fallback_precision not in (None, "auto", *PRECISIONS):
            raise ValueError(f"fallback_precision must be None, 'auto' or one of {PRECISIONS}, got "
                             f"{self.fallback_precision!r}")
        if not (isinstance(self.value_tie, (int, float)) and 0 <= self.value_tie < 1):
            raise ValueError(f"value_tie must be a number in [0, 1) (0: strict p * value order), got "
                             f"{self.value_tie!r}")
        if self.prime not in PRIME_MODES:
            raise ValueError(f"prime must be one of {PRIME_MODES}, got {self.prime!r}")
        if not (isinstance(self.prime_lead_s, (int, float)) and math.isfinite(self.prime_lead_s)
                and 0 <= self.prime_lead_s <= 1):
            raise ValueError(f"prime_lead_s must be a number of seconds in [0, 1], got {self.prime_lead_s!r}")
        if not (isinstance(self.max_pending, int) and self.max_pending >= 1):
            raise ValueError(f"max_pending must be an integer >= 1, got {self.max_pending!r}")


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
    steps_overrun: int = 0        # an admitted segment ended after the time it had to end by (deadline - margin)
    late_steps: int = 0           # a step finished after the watchdog delivered; its output was dropped
    missed_deadlines: int = 0     # frames with no result by the deadline, or handed over after it
    interrupted_without_result: int = 0   # interrupt() or the watchdog stopped a frame before its first exit
    backend_errors: int = 0       # frames degraded by an error in a step or a hook
    invalid_exits: int = 0        # exits skipped because their logits were not finite or mis-shaped
    callback_errors: int = 0
    explorations: int = 0         # segments run although refused, to re-measure them (edge_anytime/latency.py)
    fallback_frames: int = 0      # frames planning gave to a slice at the fallback precision (fallback_precision)
    dry_frames: int = 0           # dry frames run before served ones (Controller.prime, the primer thread)
    frames_behind_dry_frames: int = 0   # served frames that came in while a dry frame ran (they waited for its step)
