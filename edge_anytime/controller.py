"""The anytime controller: runs a stage program per frame under a deadline.

>>> import numpy as np
>>> from edge_anytime import Controller
>>> frame = np.zeros((32, 32, 3), np.uint8)                                   # an RGB camera frame
>>> with Controller.from_bundle("deploy/bundles/gtsrb-resann") as ctrl:        # doctest: +SKIP
...     result = ctrl.run(frame, budget_s=0.002)
...     print(result.status.value, result.exit_index, result.label_name, result.confidence)
final 2 speed limit 50 0.98

Per frame (docs/runtime.md): in anytime mode the plan runs segment by segment
(the steps up to the next exit) through the one `ProgramInterpreter`; the
`DeadlinePolicy` admits a segment only if its measured latency (typical for
the first segment, tail for later ones) fits before the deadline minus the
measured delivery margin; each exit computed in time is published
(`on_result`); the frame's best result is delivered once (`on_final`).

By default steps run on the caller's thread (no hand-off: the cheapest path,
measured in docs/results.md). With `ControllerOptions(threaded=True)`, `run()`
hands the frame to the inference thread and waits for it with a timeout: if a
step is still running at the watchdog's fire time, `run()` itself hands back
the best result so far, on time, and the step's output is dropped; `submit()`
frames are then watched by the watchdog thread.
"""

from __future__ import annotations

import gc
import itertools
import math
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from .backends.base import GraphLoadSpec, GraphRunner
from .bundle import Bundle
from .callbacks import Callbacks, call_back
from .clock import MonotonicClock, time_source
from .errors import FrameError
from .frame_job import FrameJob, FrameTicket, check_request
from .interpreter import ProgramInterpreter
from .manifest import ModelInfo
from .options import ControllerOptions, ControllerStats
from .plan import FramePlan
from .policy import DeadlinePolicy
from .preprocess import Preprocessor
from .priming import ArrivalTracker, Primer, prime_controller
from .handoff import CpuSharing, Ping, tight_timer_slack
from .profile import LatencyProfile, choose_profile
from .recording import SampleBacklog, SampleRouting
from .program import Program
from .results import ExitResult, FrameResult, StopReason
from .runners import close_runners, covered_exits, fallback_slices, load_fallback, load_runners
from .warmup import warm_up_controller
from .workers import DeliveryThread, SampleRecorder, Watchdog



class Controller(SampleRouting):
    """Runs frames of one anytime model under deadlines. See the module docstring.

    Build it with `Controller.from_bundle(path, backend="litert")`, or directly
    from a Program and one runner per graph (tests, the simulator).
    """

    def __init__(self, program: Program, runners: Mapping[str, GraphRunner], model: ModelInfo, *,
                 clock=None, options: ControllerOptions | None = None, callbacks: Callbacks | None = None,
                 precisions: Mapping[str, str] | None = None, profile: LatencyProfile | None = None,
                 fallback_runners: Mapping[str, GraphRunner] | None = None,
                 fallback_agreements: Mapping[int, float | None] | None = None,
                 fallback_precision: str | None = None) -> None:
        """`fallback_runners`: graphs at `options.fallback_precision` that answer the exits in
        `fallback_agreements`, each with how often its argmax agrees with `runners`' there (None: not measured;
        see `runners.load_fallback`); without it, every exit whose slice they hold, unmeasured.
        `fallback_precision`: the precision those graphs hold; on a simulated clock `profile`'s samples at it
        seed the fallback slices (on a real clock the warm-up times them through the serving path)."""
        self.options = options or ControllerOptions()
        self.program = program
        self.model = model
        self.clock = clock or MonotonicClock()
        self._now = time_source(self.clock)   # bound once: reading the call's time allocates nothing first
        simulated = bool(getattr(self.clock, "simulated", False))
        self._simulated_clock = simulated
        self._threaded = bool(self.options.threaded)
        self._runners = dict(runners)
        self._precisions = dict(precisions or {g: "fp32" for g in program.graphs})
        self._preprocess = Preprocessor(model.input)
        self._callbacks: list[Callbacks] = [callbacks] if callbacks is not None else []
        self.interpreter = ProgramInterpreter(program, self._runners)
        self._fallback_runners = dict(fallback_runners or {})
        if not self._fallback_runners:
            agreements = {}
        elif fallback_agreements is None:
            agreements = dict.fromkeys(covered_exits(program, self._fallback_runners))
        else:
            agreements = dict(fallback_agreements)
        fallbacks = fallback_slices(program, self._runners, self._fallback_runners, agreements)
        self.policy = DeadlinePolicy(program, self.options, simulated=simulated, threaded=self._threaded,
                                     fallbacks=agreements)
        self._counts = self.policy.counts
        self._plan = FramePlan(self.interpreter, model, self.options, self.policy, self.clock, self._publish_exit,
                               self._report_error, emulate_watchdog=simulated, fallbacks=fallbacks)
        self._backlog = SampleBacklog(self._plan.apply_samples, self._now)   # samples recorded in spare time
        self._frame_ids = itertools.count()
        self._current: FrameJob | None = None
        self._inference_lock = threading.Lock()
        self._closed = False
        self._frame_owner = 0              # ident of the thread running a frame right now (re-entrancy check)
        self._pending = 0                  # submit()ted frames not yet taken by the inference thread
        self._pending_lock = threading.Lock()
        self._close_runners_after_frame = False
        self._warming = False              # warm_up() is running (its delivery and hand-over lists are then set)
        self._return_allowance = 0.0     # the return path after delivered_s is read (measured at warm-up)
        # Callbacks run on one delivery thread on a real clock (a slow callback never delays inference),
        # on the calling thread on a simulated clock (deterministic tests and simulations).
        self._delivery = None if simulated else DeliveryThread(self._deliver)
        self._watchdog: Watchdog | None = None
        self._queue: queue.SimpleQueue | None = None
        self._worker: threading.Thread | None = None
        self._cpu_sharing: CpuSharing | None = None
        if self._threaded:
            self._queue = queue.SimpleQueue()
            self._watchdog = Watchdog(self.clock, self._on_watchdog)
            self._start_worker()
        self._recorder: SampleRecorder | None = None
        if not simulated and not self._threaded and self.options.record_in_background:
            self._recorder = SampleRecorder(self._apply_recorded,
                                            lambda exc: self._report_error(exc, "controller:estimates"))
        if profile is not None:
            self.policy.seed_from_profile(program, profile, self._precisions,
                                          fallback_precision if simulated else None)
        self._arrivals = ArrivalTracker()   # served calls' times: their period, for priming.py
        self._last_budget: float | None = None
        # what warm-up and dry frames run: a mid-grey camera frame (or, when frames arrive as tensors, the zero tensor)
        self._sample_frame = (self._preprocess.sample_frame()[0] if self.options.validate_frames else
                              np.zeros(model.input.shape, np.float32))
        self._plan.frame_waiting = lambda: self._arrivals.came_after(self._plan.job.start)
        if self.options.warmup_runs:
            self.warm_up(self.options.warmup_runs, record=profile is None)
        self._primer = Primer(self, self.options.prime_lead_s) if self.options.prime == "auto" and not simulated \
            else None

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_bundle(cls, bundle: str | os.PathLike | Bundle, backend: Any = "litert", *, clock=None,
                    options: ControllerOptions | None = None, callbacks: Callbacks | None = None,
                    **backend_options) -> "Controller":
        """Load and validate a bundle, load every graph with `backend` (a registered name or a Backend).

        The latency estimates are seeded from the bundle's profile recorded on a host like this one
        (`options.profile_target`, default 'auto'), else measured by the warm-up.
        """
        options = options or ControllerOptions()
        if isinstance(bundle, Bundle):
            bundle.verify()      # files may have changed since Bundle.load
        else:
            bundle = Bundle.load(bundle)
        precisions = bundle.resolve_precisions(options.precision)
        backend_name = backend if isinstance(backend, str) else getattr(backend, "name", "")
        profile = choose_profile(bundle, options.profile_target, backend_name, options.num_threads)
        runners = load_runners(bundle, precisions, backend, options.num_threads, **backend_options)
        try:
            fallback, agreements = load_fallback(bundle, options.fallback_precision, precisions,
                                                bool(getattr(clock, "simulated", False)), backend,
                                                options.num_threads, **backend_options)
        except Exception:
            close_runners(runners)
            raise
        return cls(bundle.program, runners, bundle.model, clock=clock, options=options, callbacks=callbacks,
                   precisions=precisions, profile=profile, fallback_runners=fallback, fallback_agreements=agreements)

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

    def warm_up(self, runs: int, max_seconds: float | None = None, record: bool = True) -> None:
        """Run frames through the serving path (same thread hand-off, same hooks) to seed the estimates.

        Warm-up frames are mid-grey camera frames (`Preprocessor.sample_frame`), each followed by every a-priori
        slice run as a served a-priori frame; the first `warmup.COLD_PASSES` are discarded (cold caches). The rest seed the estimates (`DeadlinePolicy.seed_from_warmup`: every
        segment's, exit reach's, a-priori slice's and the delivery path's with `record`; without it, a
        profile's seeds are rescaled to this host's speed). On a real clock warm-up goes on until each
        estimator has `estimator.min_online` samples or `max_seconds` (default `options.warmup_seconds`) have
        passed. Seeds give way to online samples as frames are served.
        """
        warm_up_controller(self, runs, self.options.warmup_seconds if max_seconds is None else max_seconds, record)

    # ----------------------------------------------------------------- public API
    def run(self, frame: np.ndarray, budget_s: float | None = None, *, deadline_s: float | None = None,
            frame_id: int | None = None, mode: str | None = None, confidence_target: float | None = None,
            user_data: Any = None) -> FrameResult:
        """Run one frame and return its final result by the deadline (blocking).

        Give either `budget_s` (relative to now) or `deadline_s` (absolute, on `self.clock`).
        A frame that cannot run (bad shape, NaN, past deadline) returns a `no_result`
        FrameResult whose `error` says why; the controller keeps serving.
        """
        now = self._now()                  # the budget counts from the call
        if self._frame_owner == threading.get_ident():
            raise RuntimeError("run() was called from a callback while this thread is running a frame of the same "
                               "controller; call it after the callback returns (or use submit())")
        if not self._threaded:
            # The collector is held off for the whole call: a collection owed by the frame's allocations then
            # runs in the caller's code after run() returns, not between a step and the deadline.
            freeze = gc.isenabled() and not self._simulated_clock
            if freeze:
                gc.disable()
            try:
                job = self._admit_frame(now, frame, budget_s, deadline_s, frame_id, mode, confidence_target,
                                        user_data, waitable=False)
                return job.result if job.finalized else self._execute(job)
            finally:
                if freeze:
                    gc.enable()
        job = self._admit_frame(now, frame, budget_s, deadline_s, frame_id, mode, confidence_target, user_data)
        if job.finalized:
            return job.result
        job.hand_back = True
        tight_timer_slack()
        self._ensure_worker()
        if self._cpu_sharing is not None:
            job.caller_cpu = self._cpu_sharing.hand_in()
        try:
            self.policy.note_arrival(self._current is not None)
            self._queue.put(job)
            wait = job.fire_at - self.clock.now()
            done = job.wait_done(wait)
            now = self.clock.now()
            handed_back = done and job.outcome is not None
            if handed_back:
                reason, error = job.outcome
                result = job.finalize(reason, now, error=error)
            else:
                result = job.finalize(StopReason.DEADLINE, now)
            if result is None:          # interrupt() delivered it first
                return job.result
            self._publish_final(result, job, stamp=not self._simulated_clock)
            if not self._simulated_clock:
                if handed_back and job.best is not None:   # the delivery path of a result, to its stamp
                    self._observe_delivery(result.delivered_s - job.last_exit_s - job.recording_s)
                if not done and wait > 0:   # the watchdog path: timer wake-up, then the hand-over (the guard)
                    self._backlog.add_stamped(self.policy.wakeup, result.delivered_s - job.fire_at)
                elif self._warming:         # the hand-over alone, added to the timer's lateness at warm-up
                    self._warmup_handover.append(result.delivered_s - now)
            return result
        finally:   # after the hand-over: nothing between the wake-up and the delivery
            CpuSharing.restore(job.caller_cpu)

    def submit(self, frame: np.ndarray, budget_s: float | None = None, *, deadline_s: float | None = None,
               frame_id: int | None = None, mode: str | None = None, confidence_target: float | None = None,
               user_data: Any = None) -> FrameTicket:
        """Queue a frame and return at once; the result arrives through the callbacks (and the ticket).

        At most `options.max_pending` frames wait; a frame submitted beyond that is refused at once
        (`no_result`, error "queue full"). Without `threaded=True` the frame runs before `submit()` returns.
        """
        now = self._now()
        if self._frame_owner == threading.get_ident():
            raise RuntimeError("submit() was called from a callback while this thread is running a frame of the "
                               "same controller; call it after the callback returns")
        job = self._admit_frame(now, frame, budget_s, deadline_s, frame_id, mode, confidence_target, user_data)
        if not job.finalized and self._threaded and self._pending >= self.options.max_pending:
            self._counts["rejected_frames"] += 1
            error = (f"queue full: {self._pending} frames are waiting (ControllerOptions.max_pending="
                     f"{self.options.max_pending}); submit slower or raise max_pending")
            self._report_error(FrameError(f"frame {job.frame_id}: {error}"), "frame")
            self._publish_final(job.finalize(StopReason.NO_RESULT, self.clock.now(), error=error), job)
        if not job.finalized:
            if not self._threaded:
                self._execute(job)
            else:
                self._ensure_worker()
                self.policy.note_arrival(self._current is not None)
                with self._pending_lock:
                    self._pending += 1
                job.counted = True
                self._queue.put(job)
                self._watchdog.arm(job)
        return FrameTicket(job)

    def stream(self, source: Iterable[Any], budget_s: float | Iterable[float] | None = None,
               **kwargs) -> Iterator[FrameResult]:
        """Yield one FrameResult per frame of `source` (arrays, or (frame, budget_s) pairs).

        `budget_s` is a constant, or an iterable giving one budget per frame.
        """
        constant = budget_s is None or isinstance(budget_s, (int, float, np.number))
        budgets = itertools.repeat(budget_s) if constant else iter(budget_s)
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
            self._publish_final(result, job)
        return result

    def prime(self, budget_s: float | None = None) -> float:
        """Run a dry frame now so that the next frame finds the caches warm; returns the seconds it took.

        A mid-grey sample frame takes the serving path with `budget_s` (default: the last frame's) up to its
        first exit: preprocessing, planning, the graphs that budget picks, the result. Nothing is counted,
        called back or recorded, and its admission checks are undone. Call it about a millisecond before a
        frame is due (e.g. on the camera's trigger); `ControllerOptions(prime="auto")` does it by itself for
        calls that come at a steady period (priming.py). Returns 0.0 on a simulated clock (nothing is cold) and
        during a warm-up.

            ctrl.prime()                      # the frame is due in about 1 ms
            result = ctrl.run(camera.read(), budget_s=0.002)
        """
        if self._frame_owner == threading.get_ident():
            raise RuntimeError("prime() was called from a callback while this thread is running a frame")
        return prime_controller(self, budget_s)

    def latency_estimates(self) -> dict[str, float]:
        """Current estimates (seconds): each segment's typical and tail latency, each a-priori slice's,
        and the margin and watchdog guard in use; with a profile, the factors the warm-up applied to its seeds
        (see DeadlinePolicy.estimates)."""
        self._drain_samples()
        return self.policy.estimates()

    def stats(self) -> ControllerStats:
        return self.policy.stats()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued frame is done, its callbacks have run and its latency samples are recorded."""
        if self._threaded:
            done = threading.Event()
            self._queue.put(done)
            done.wait(timeout)
        self._drain_samples()
        if self._delivery is not None:
            self._delivery.flush(timeout)

    def close(self) -> None:
        if getattr(self, "_primer", None) is not None:
            self._primer.close()
        if self._closed:
            return
        self._closed = True
        if self._threaded:
            self._queue.put(None)
            if threading.current_thread() is not self._worker:
                self._worker.join(timeout=5.0)
            self._watchdog.close()
        if self._delivery is not None:
            self._delivery.close()
        if self._recorder is not None:
            self._recorder.close()
        if self._frame_owner == threading.get_ident():   # close() from a callback of a frame on this thread
            self._close_runners_after_frame = True
            return
        with self._inference_lock:
            self._close_runners()

    def _close_runners(self) -> None:
        for runner in (*self._runners.values(), *self._fallback_runners.values()):
            runner.close()

    def __enter__(self) -> "Controller":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- internals
    def _admit_frame(self, now, frame, budget_s, deadline_s, frame_id, mode, confidence_target,
                     user_data, waitable: bool = True) -> FrameJob:
        """`now`: when the call came in (a budget counts from there); `waitable`: another thread may wait
        for the frame (threaded run(), submit() tickets)."""
        if self._closed:
            raise RuntimeError("controller is closed")
        frame_id = next(self._frame_ids) if frame_id is None else int(frame_id)
        if not self._warming:
            self._counts["frames"] += 1
            self._arrivals.observe(now)
        mode = mode or self.options.mode
        target = confidence_target if confidence_target is not None else self.options.confidence_target
        deadline, target, error = check_request(now, budget_s, deadline_s, mode, target)
        tensor = None
        if error is None:
            try:
                tensor = self._preprocess(frame) if self.options.validate_frames else frame
            except FrameError as exc:
                error = str(exc)
        job = FrameJob(frame_id, tensor, now, deadline, deadline - self.policy.guard(), mode, target, user_data,
                       waitable)
        if error is None and not self._warming:
            self._last_budget = job.budget     # a dry frame (prime) plans with it
        if error is not None:
            self._counts["rejected_frames"] += 1
            self._report_error(FrameError(f"frame {frame_id}: {error}"), "frame")
            result = job.finalize(StopReason.NO_RESULT, now, error=error)
            self._publish_final(result, job)
        return job

    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._inference_loop, name="edge-anytime-inference", daemon=True)
        self._worker.start()
        if self.options.share_caller_cpu and not self._simulated_clock:
            self._cpu_sharing = CpuSharing(self._worker.native_id)

    def _ensure_worker(self) -> None:
        if not self._worker.is_alive():   # it never dies by design; if it did, say so and start a new one
            self._report_error(RuntimeError("the inference thread had stopped; restarted"), "controller")
            self._start_worker()

    def _inference_loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if isinstance(job, threading.Event):
                job.set()
                continue
            if isinstance(job, Ping):
                job.answer(self._cpu_sharing)
                continue
            if job.caller_cpu is not None:
                self._cpu_sharing.unpin_worker()
            if job.counted:
                with self._pending_lock:
                    self._pending -= 1
            try:
                if not job.finalized:
                    self._execute(job)
            except BaseException as exc:  # noqa: BLE001 - the thread must outlive anything a frame raises
                self._finish(job, StopReason.DEGRADED, exc, "inference thread")

    def _execute(self, job: FrameJob) -> FrameResult | None:
        priming = job.priming            # a dry frame: the collector may run, interrupt() does not see it
        if not priming:
            self._current = job
        freeze = gc.isenabled() and not self._simulated_clock and not priming
        if freeze:
            gc.disable()
        try:
            with self._inference_lock:
                self._frame_owner = threading.get_ident()
                try:
                    limit = job.deadline    # if planning fails before the limits are read
                    admission = self.policy.admission_state() if priming else None
                    try:   # the margin is read once (frame_limits): its tail check has side effects
                        limit, first_limit = self.policy.frame_limits(job.deadline)
                        reason, error, where = self._plan.execute(job, limit, first_limit)
                    except Exception as exc:  # noqa: BLE001 - planning failed: this frame degrades, nothing else
                        reason, error, where = StopReason.DEGRADED, exc, "plan"
                    if priming:   # no trace of the dry frame; samples other frames left waiting are recorded
                        self.policy.restore_admission_state(admission)
                        self._plan.take_samples()
                        self._record_samples(math.inf, 0.0)
                    else:
                        if job.best is None:
                            job.last_exit_s = self._now()   # a frame without result: its delivery path starts here
                        self._keep_samples(job, limit)
                finally:
                    self._frame_owner = 0
                    if self._close_runners_after_frame:
                        self._close_runners()
        finally:
            if freeze:
                gc.enable()
            if not priming:
                self._current = None
        return self._finish(job, reason, error, where)

    def _finish(self, job: FrameJob, reason: StopReason, error: BaseException | None, where: str) -> FrameResult | None:
        if job.priming:                    # a dry frame: an error is reported, nothing is counted or delivered
            if error is not None:
                self._report_error(error, "controller:prime")
            return job.finalize(reason, self._now())
        text = None
        if error is not None:
            self._counts["backend_errors"] += 1
            text = f"{where}: {type(error).__name__}: {error}" if where else f"{type(error).__name__}: {error}"
            self._report_error(error, "backend" if where.startswith("step") else f"controller:{where or 'frame'}")
        elif job.error is not None and reason is StopReason.FINAL:
            reason = StopReason.DEGRADED   # an exit was invalid: the result is not the full plan's
        if job.hand_back:                  # run() waits for this frame: it finalizes and measures the hand-back
            job.outcome = (reason, text)
            if job.caller_cpu is not None:
                self._cpu_sharing.hand_back(job.caller_cpu)
            job.signal_done()
            return None
        now = self._now()                  # delivered_s: only assembling the result and returning it come after
        if self._plan.emulate_watchdog and job.late_steps and reason is StopReason.DEADLINE:
            now = job.fire_at             # simulated clock: the emulated watchdog delivered at its fire time
        result = job.finalize(reason, now, error=text)
        if result is None:
            return job.result
        self._publish_final(result, job, stamp=not self._simulated_clock)
        if not self._simulated_clock and job.best is not None:   # a result's delivery path, to its stamp
            self._observe_delivery(result.delivered_s - job.last_exit_s - job.recording_s)
        return result

    def _on_watchdog(self, job: FrameJob) -> None:
        result = job.finalize(StopReason.DEADLINE, self.clock.now())
        if result is not None:
            self._publish_final(result, job)

    def _publish_exit(self, exit_result: ExitResult) -> None:
        if self._callbacks and not self._warming:
            self._dispatch(("on_result", exit_result))

    def _publish_final(self, result: FrameResult, job: FrameJob, stamp: bool = False) -> None:
        """Count the result and hand it to the callbacks. `stamp` (a real clock, the result about to leave `run()`):
        `delivered_s` is set to the clock read after counting and queueing it, plus the return path measured at
        warm-up (about a microsecond), before it is judged missed or not: a result handed back after its
        deadline is never reported as met."""
        if not self._warming:
            counts = self._counts
            counts[_STATUS_NAMES[result.status]] += 1
            if result.best is None and job.admitted and result.error is None:
                counts["interrupted_without_result"] += 1   # a segment ran, but no exit was reached in time
            if self._callbacks:
                self._dispatch(("on_final", result))
        if stamp:
            end = self._now() + self._return_allowance
            if end > result.delivered_s:
                result._restamp(end)
        if self._warming:
            return
        if (result.best is None or result.delivered_s > result.deadline_s) and result.error is None:
            self._counts["missed_deadlines"] += 1
            if self._callbacks:
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
        self._counts["callback_errors"] += call_back(self._callbacks, name, payload)

    def _report_error(self, error: BaseException, context: str) -> None:
        self._dispatch(("on_error", (error, context)))


_STATUS_NAMES = {status: status.value for status in StopReason}   # the counter of each status


def load_controller(path: str | os.PathLike, **kwargs) -> Controller:
    """Shorthand for `Controller.from_bundle(path, **kwargs)`."""
    return Controller.from_bundle(Path(path), **kwargs)
