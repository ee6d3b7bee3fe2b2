"""The anytime controller: runs a stage program per frame under a deadline.

>>> from edge_anytime import Controller, ControllerOptions
>>> with Controller.from_bundle("deploy/bundles/gtsrb-resann") as ctrl:        # doctest: +SKIP
...     result = ctrl.run(frame, budget_s=0.002)
...     print(result.status.value, result.exit_index, result.label_name, result.confidence)
final 2 speed limit 50 0.98

Per frame (docs/runtime.md): in anytime mode the plan runs segment by segment
(the steps up to the next exit); a segment is admitted only if
`now + sum(pWCET of its steps) + margin <= deadline`; each exit computed in
time is published (`on_result`); the frame stops at the end of the plan, when
the next segment does not fit, at the confidence target, on `interrupt()`, or
on a backend fault, and its best result is delivered once (`on_final`). On the
real clock a watchdog delivers the best result so far at the deadline even
while a step is still running; that step's output is then dropped.
"""

from __future__ import annotations

import gc
import itertools
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from .backends.base import GraphLoadSpec, GraphRunner
from .bundle import Bundle
from .callbacks import Callbacks
from .clock import MonotonicClock
from .errors import BundleError, FrameError
from .frame_job import FrameJob, FrameTicket
from .latency import make_estimator
from .manifest import ModelInfo
from .options import ControllerOptions, ControllerStats
from .plan import CompiledPlan
from .preprocess import Preprocessor
from .profile import LatencyProfile
from .program import Program
from .results import ExitResult, FrameResult, StopReason
from .runners import load_runners, run_program
from .workers import DeliveryThread, Watchdog


class Controller:
    """Runs frames of one anytime model under deadlines. See the module docstring.

    Build it with `Controller.from_bundle(path, backend="litert")`, or directly
    from a Program and one runner per graph (tests, the simulator).
    """

    def __init__(self, program: Program, runners: Mapping[str, GraphRunner], model: ModelInfo, *,
                 clock=None, options: ControllerOptions | None = None, callbacks: Callbacks | None = None,
                 precisions: Mapping[str, str] | None = None, profile: LatencyProfile | None = None) -> None:
        self.options = options or ControllerOptions()
        self.program = program
        self.model = model
        self.clock = clock or MonotonicClock()
        simulated = bool(getattr(self.clock, "simulated", False))
        self._simulated_clock = simulated
        self._threaded = (not simulated) if self.options.threaded is None else self.options.threaded
        self._runners = dict(runners)
        self._precisions = dict(precisions or {g: "fp32" for g in program.graphs})
        self._preprocess = Preprocessor(model.input)
        self._callbacks: list[Callbacks] = [callbacks] if callbacks is not None else []
        self._estimators = {g: make_estimator(self.options.estimator) for g in program.graphs}
        self._plan = CompiledPlan(program, self._runners, model, self.options)
        self._counts = {name: 0 for name in ControllerStats.__dataclass_fields__}
        self._frame_ids = itertools.count()
        self._current: FrameJob | None = None
        self._inference_lock = threading.Lock()
        self._closed = False
        if profile is not None:
            for graph in program.graphs:
                self._estimators[graph].seed(profile.samples_s(graph, self._precisions[graph]))
        if self.options.warmup_runs and (profile is None):
            self.warm_up(self.options.warmup_runs)
        self._delivery = DeliveryThread(self._deliver) if self._threaded else None
        self._watchdog = Watchdog(self.clock, self._on_watchdog) if self._threaded else None
        self._queue: "Any" = None
        self._worker: threading.Thread | None = None
        if self._threaded:
            import queue

            self._queue = queue.SimpleQueue()
            self._worker = threading.Thread(target=self._inference_loop, name="edge-anytime-inference", daemon=True)
            self._worker.start()

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_bundle(cls, bundle: str | os.PathLike | Bundle, backend: Any = "litert", *, clock=None,
                    options: ControllerOptions | None = None, callbacks: Callbacks | None = None,
                    **backend_options) -> "Controller":
        """Load and validate a bundle, load every graph with `backend` (a registered name or a Backend)."""
        options = options or ControllerOptions()
        if not isinstance(bundle, Bundle):
            bundle = Bundle.load(bundle)
        precisions = bundle.resolve_precisions(options.precision)
        runners = load_runners(bundle, precisions, backend, options.num_threads, **backend_options)
        profile = None
        if options.profile_target is not None:
            if options.profile_target not in bundle.profiles:
                raise BundleError(f"bundle {bundle.root} has no latency profile for target {options.profile_target!r} "
                                  f"(it has {sorted(bundle.profiles)}); measure one with: "
                                  f"python -m edge_anytime.deploy --target {options.profile_target} --profile")
            profile = bundle.profiles[options.profile_target]
        return cls(bundle.program, runners, bundle.model, clock=clock, options=options, callbacks=callbacks,
                   precisions=precisions, profile=profile)

    @classmethod
    def from_program(cls, program: Program, model: ModelInfo, backend: Any, *, clock=None,
                     options: ControllerOptions | None = None, callbacks: Callbacks | None = None,
                     profile: LatencyProfile | None = None,
                     precisions: Mapping[str, str] | None = None) -> "Controller":
        """Build a controller for a Program without bundle files (fake backend, torch backend, simulator).
        `precisions` (graph -> precision) selects which samples of `profile` seed the deadline monitor."""
        precisions = dict(precisions or {name: "fp32" for name in program.graphs})
        runners = {name: backend.load_graph(GraphLoadSpec(signature, precisions.get(name, "fp32")))
                   for name, signature in program.graphs.items()}
        return cls(program, runners, model, clock=clock, options=options, callbacks=callbacks, profile=profile,
                   precisions=precisions)

    def add_callbacks(self, callbacks: Callbacks) -> None:
        """Register another callbacks object (all are called on the delivery thread, in registration order)."""
        self._callbacks = [*self._callbacks, callbacks]

    def remove_callbacks(self, callbacks: Callbacks) -> None:
        """Unregister a callbacks object; unknown objects are ignored."""
        self._callbacks = [c for c in self._callbacks if c is not callbacks]

    def warm_up(self, runs: int, max_seconds: float | None = None) -> None:
        """Run the whole plan on a neutral frame and seed every graph's latency estimate.

        Runs at least `runs` passes (the first is discarded: cold caches), then keeps going until
        every graph has 1/(1-quantile) samples, so its pWCET is a real quantile rather than an
        inflated small-sample bound, or `max_seconds` of wall time (default
        `options.warmup_seconds`) have passed. Steps run interleaved in plan order, as when serving.
        """
        max_seconds = self.options.warmup_seconds if max_seconds is None else max_seconds
        needed = math.ceil(1.0 / (1.0 - self.options.estimator.quantile))
        neutral = np.zeros(self.model.input.shape, np.float32)   # the mean colour, once normalised
        estimators = self._estimators

        def record(graph: str, seconds: float) -> None:
            estimators[graph].seed([seconds])

        started = time.perf_counter()
        passes = 0
        while True:   # the first pass is not recorded (cold caches)
            run_program(self.program, self._runners, neutral, timer=record if passes else None, now=self.clock.now)
            passes += 1
            if passes > runs and (self._simulated_clock or time.perf_counter() - started >= max_seconds or
                                  min(e.count for e in self._estimators.values()) >= needed):
                return

    # ----------------------------------------------------------------- public API
    def run(self, frame: np.ndarray, budget_s: float | None = None, *, deadline_s: float | None = None,
            frame_id: int | None = None, mode: str | None = None, confidence_target: float | None = None,
            user_data: Any = None) -> FrameResult:
        """Run one frame and return its final result by the deadline (blocking).

        Give either `budget_s` (relative to now) or `deadline_s` (absolute, on `self.clock`).
        A frame that cannot run (bad shape, NaN, past deadline) returns a `no_result`
        FrameResult whose `error` says why; the controller keeps serving.
        """
        job = self._admit_frame(frame, budget_s, deadline_s, frame_id, mode, confidence_target, user_data)
        if job.finalized:
            return job.result
        if not self._threaded:
            self._execute(job)
            return job.result
        self._queue.put(job)
        self._watchdog.arm(job)
        result = job.wait(max(0.0, job.deadline - self.clock.now()) + 5.0)
        return result if result is not None else job.finalize(StopReason.DEADLINE, self.clock.now())

    def submit(self, frame: np.ndarray, budget_s: float | None = None, *, deadline_s: float | None = None,
               frame_id: int | None = None, mode: str | None = None, confidence_target: float | None = None,
               user_data: Any = None) -> FrameTicket:
        """Queue a frame and return at once; the result arrives through the callbacks (and the ticket)."""
        job = self._admit_frame(frame, budget_s, deadline_s, frame_id, mode, confidence_target, user_data)
        if not job.finalized:
            if not self._threaded:
                self._execute(job)
            else:
                self._queue.put(job)
                self._watchdog.arm(job)
        return FrameTicket(job)

    def stream(self, source: Iterable[Any], budget_s: float | Iterable[float] | None = None,
               **kwargs) -> Iterator[FrameResult]:
        """Yield one FrameResult per frame of `source` (arrays, or (frame, budget_s) pairs).

        `budget_s` is a constant, or an iterable giving one budget per frame.
        """
        budgets = itertools.repeat(budget_s) if budget_s is None or isinstance(budget_s, (int, float)) else iter(budget_s)
        for item in source:
            frame, budget = (item if isinstance(item, tuple) else (item, next(budgets, None)))
            yield self.run(frame, budget, **kwargs)

    def interrupt(self) -> FrameResult | None:
        """Stop the frame in flight now and deliver its best result (status 'interrupted')."""
        job = self._current
        if job is None or job.finalized:
            return None
        result = job.finalize(StopReason.INTERRUPTED, self.clock.now())
        if result is not None:
            self._publish_final(result)
        return result

    def latency_estimates(self) -> dict[str, float]:
        """Current pWCET estimate (seconds) of every graph."""
        return {graph: est.estimate() for graph, est in self._estimators.items()}

    def typical_latency_estimates(self) -> dict[str, float]:
        """Each graph's latency at `options.first_exit_quantile` (seconds; empty when it is None)."""
        quantile = self.options.first_exit_quantile
        if quantile is None:
            return {}
        return {graph: est.typical(quantile) for graph, est in self._estimators.items()}

    def observe_latency(self, graph: str, seconds: float) -> None:
        """Feed an externally measured latency sample into the deadline monitor."""
        self._estimators[graph].observe(seconds)

    def stats(self) -> ControllerStats:
        return ControllerStats(**self._counts)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued frame is done and its callbacks have run."""
        if not self._threaded:
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)
        self._delivery.flush(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._threaded:
            self._queue.put(None)
            self._worker.join(timeout=5.0)
            self._watchdog.close()
            self._delivery.close()
        for runner in self._runners.values():
            runner.close()

    def __enter__(self) -> "Controller":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- internals
    def _admit_frame(self, frame, budget_s, deadline_s, frame_id, mode, confidence_target, user_data) -> FrameJob:
        if self._closed:
            raise RuntimeError("controller is closed")
        now = self.clock.now()
        frame_id = next(self._frame_ids) if frame_id is None else int(frame_id)
        self._counts["frames"] += 1
        mode = mode or self.options.mode
        target = confidence_target if confidence_target is not None else self.options.confidence_target
        error = None
        if (budget_s is None) == (deadline_s is None):
            error = "give exactly one of budget_s (relative, seconds) or deadline_s (absolute, controller clock)"
            deadline = now
        else:
            deadline = now + budget_s if deadline_s is None else deadline_s
            if budget_s is not None and not (isinstance(budget_s, (int, float)) and math.isfinite(budget_s) and budget_s >= 0):
                error = f"budget_s must be a finite number of seconds >= 0, got {budget_s!r} (milliseconds? divide by 1000)"
                deadline = now
            elif deadline <= now:
                error = f"deadline already passed ({(now - deadline) * 1e3:.3f} ms ago); nothing can run"
        if mode not in ("anytime", "apriori"):
            error = f"mode must be 'anytime' or 'apriori', got {mode!r}"
        tensor = None
        if error is None:
            try:
                tensor = self._preprocess(frame) if self.options.validate_frames else frame
            except FrameError as exc:
                error = str(exc)
        job = FrameJob(frame_id, tensor, now, deadline, deadline - self.options.watchdog_guard_s, mode, target,
                       user_data)
        if error is not None:
            self._counts["rejected_frames"] += 1
            self._report_error(FrameError(f"frame {frame_id}: {error}"), "frame")
            result = job.finalize(StopReason.NO_RESULT, now, error=error)
            self._publish_final(result)
        return job

    def _inference_loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if isinstance(job, threading.Event):
                job.set()
                continue
            if not job.finalized:
                self._execute(job)

    def _execute(self, job: FrameJob) -> None:
        self._current = job
        freeze = self._threaded and gc.isenabled()
        if freeze:
            gc.disable()
        try:
            with self._inference_lock:
                reason, error = self._plan.execute(job, self.clock, self._estimators, self._counts,
                                                   self._publish_exit, not self._threaded)
        finally:
            if freeze:
                gc.enable()
            self._current = None
        if error is not None:
            self._counts["backend_errors"] += 1
            self._report_error(error, "backend")
        now = self.clock.now()
        if not self._threaded and now > job.fire_at and reason is StopReason.DEADLINE and job.late_steps:
            now = job.fire_at  # inline: the emulated watchdog hands the result over at its fire time
        result = job.finalize(reason, now, error=None if error is None else f"{type(error).__name__}: {error}")
        if result is not None:
            self._publish_final(result)

    def _on_watchdog(self, job: FrameJob) -> None:
        result = job.finalize(StopReason.DEADLINE, self.clock.now())
        if result is not None:
            self._publish_final(result)

    def _publish_exit(self, exit_result: ExitResult) -> None:
        self._dispatch(("on_result", exit_result))

    def _publish_final(self, result: FrameResult) -> None:
        self._counts[result.status.value] += 1
        missed = result.best is None or result.delivered_s > result.deadline_s
        if missed and result.error is None:
            self._counts["missed_deadlines"] += 1
        self._dispatch(("on_final", result))
        if missed and result.error is None:
            self._dispatch(("on_miss", result))

    def _dispatch(self, item) -> None:
        if not self._callbacks:
            return
        if self._delivery is None:
            self._deliver(item)
        else:
            self._delivery.put(item)

    def _deliver(self, item) -> None:
        name, payload = item
        if name == "__flush__":
            payload.set()
            return
        for callbacks in self._callbacks:
            try:
                if name == "on_error":
                    callbacks.on_error(*payload)
                else:
                    getattr(callbacks, name)(payload)
            except Exception as exc:  # user code: report, count, carry on
                self._counts["callback_errors"] += 1
                if name != "on_error":
                    try:
                        callbacks.on_error(exc, f"callback:{name}")
                    except Exception:
                        self._counts["callback_errors"] += 1

    def _report_error(self, error: BaseException, context: str) -> None:
        self._dispatch(("on_error", (error, context)))


def load_controller(path: str | os.PathLike, **kwargs) -> Controller:
    """Shorthand for `Controller.from_bundle(path, **kwargs)`."""
    return Controller.from_bundle(Path(path), **kwargs)
