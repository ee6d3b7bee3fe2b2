"""Priming: a dry frame run just before a served one, so the served frame finds the caches warm.

A control loop calls `run()` once per sensor period and idles in between. After a
few milliseconds of idling, the code, tables and weights the next frame touches
have left the CPU's caches: measured on this repository's 2-core VM host
(`bench/bench_paced.py`, docs/results.md "Paced frames"), a call every 33 ms took
1.5-3.5x its back-to-back time. A dry frame run about a millisecond earlier brings
them back: the controller's median call at the full model's median budget went
from 610-702 us to 421-596 us (five runs).

* `Controller.prime(budget_s)` runs one dry frame now: a mid-grey sample frame
  through the serving path (preprocessing, planning with the given budget, the
  steps up to its first exit, the result), on the interpreters a served frame
  uses. Nothing is counted, called back or recorded, and every admission check
  it makes is undone (`DeadlinePolicy.admission_state`). It gives way at the next
  step boundary when a served frame arrives meanwhile.
* `ControllerOptions(prime="auto")` (the default) primes by itself: an
  `ArrivalTracker` reads the period of the calls, and once they arrive steadily
  (at least `MIN_GAPS` gaps of `MIN_PERIOD_S` or more, none further than
  `MAX_JITTER` of the period from their median; after a pause, `RESUME_GAPS`
  gaps at the period found before) a `Primer` thread runs `prime()` `lead`
  before each expected call, if the process was idle just before (it used less
  than `MAX_BUSY` of a CPU over `BUSY_WINDOW_S`: a loop that calls several
  models in turn, or does its own work then, is not idle, and a dry frame would
  compete with it). Frames back to back (caches warm), irregular calls or a
  simulated clock never prime.

>>> tracker = ArrivalTracker()
>>> for k in range(10):
...     tracker.observe(0.033 * k)
>>> next_call, period, jitter = tracker.forecast(now=0.300)
>>> round(next_call, 3), round(period, 3), round(jitter, 6)
(0.33, 0.033, 0.0)
>>> tracker.forecast(now=0.400) is None        # calls stopped coming: nothing to prime for
True
>>> for t in (2.0, 2.033, 2.066):                 # ... and resumed at the same period after a pause
...     tracker.observe(t)
>>> round(tracker.forecast(now=2.08)[0], 3)
2.099
"""

from __future__ import annotations

import collections
import math
import threading
import time

from .frame_job import FrameJob
from .handoff import tight_timer_slack

MIN_GAPS = 8            # steady calls seen before priming starts ...
RESUME_GAPS = 2         # ... or again, after a pause, calls at the period found before it
MIN_PERIOD_S = 2e-3     # below this the caches stay warm between calls (measured: 1 ms gaps cost nothing)
MAX_JITTER = 0.2        # a gap further than this share of the period from the median one: not steady
IDLE_POLL_S = 0.25      # how often the primer looks again while calls are not steady (a look takes the GIL)
DURATION_RATE = 0.25    # how fast the expected length of a dry frame follows measurements
LEAD_PER_DURATION = 2.0  # a dry frame starts at least this many of its lengths (plus the jitter) before a call
BUSY_WINDOW_S = 1e-3    # the process's CPU time over this long before a dry frame is due ...
MAX_BUSY = 0.25         # ... above this share of it: something runs (the loop's own work, other models): no dry
                        # frame, which would compete with it for the CPU and the interpreter lock
DEFAULT_BUDGET_S = 1.0  # the budget of a dry frame before any frame was served


class ArrivalTracker:
    """The times of the last served calls, and the period they keep (see the module docstring).

    `observe(now)` is the only call on a frame's path (a deque append); `forecast` runs on the primer thread.
    """

    def __init__(self, size: int = 2 * MIN_GAPS) -> None:
        self._times: collections.deque = collections.deque(maxlen=size + 1)
        self.count = 0          # calls observed so far
        self.last = -math.inf   # the latest call's time
        self.period: float | None = None   # the last steady period found

    def observe(self, now: float) -> None:
        self._times.append(now)
        self.last = now
        self.count += 1

    def came_after(self, start: float) -> bool:
        """Did a served call come in after `start` (a dry frame's start: it then gives way)?"""
        return self.last > start

    def forecast(self, now: float) -> tuple[float, float, float] | None:
        """(the next call's expected time, the period, the jitter: the largest distance of a recent gap from
        the median one), or None while the calls are not steady, come faster than MIN_PERIOD_S, or stopped
        (none for more than 1.5 periods)."""
        times = list(self._times)
        steady = self._steady(times)
        if steady is None:
            return None
        period, jitter = steady
        next_call = times[-1] + period
        if now > next_call + 0.5 * period:
            return None
        return next_call, period, jitter

    def _steady(self, times: list[float]) -> tuple[float, float] | None:
        """(period, jitter) of the latest MIN_GAPS gaps when steady, or of the latest RESUME_GAPS when they keep
        the period found before (a loop that paused and resumed); else None."""
        if len(times) >= MIN_GAPS + 1:
            gaps = sorted(b - a for a, b in zip(times[-MIN_GAPS - 1:], times[-MIN_GAPS:]))
            period = 0.5 * (gaps[MIN_GAPS // 2 - 1] + gaps[MIN_GAPS // 2])
            jitter = max(period - gaps[0], gaps[-1] - period)
            if period >= MIN_PERIOD_S and jitter <= MAX_JITTER * period:
                self.period = period
                return period, jitter
        period = self.period
        if period is None or len(times) < RESUME_GAPS + 1:
            return None
        jitter = max(abs(b - a - period) for a, b in zip(times[-RESUME_GAPS - 1:], times[-RESUME_GAPS:]))
        return (period, jitter) if jitter <= MAX_JITTER * period else None


class Primer:
    """A daemon thread that primes `ctrl` `lead` before each call the tracker expects (module docstring)."""

    def __init__(self, ctrl, lead_s: float) -> None:
        self._ctrl = ctrl
        self._lead_s = lead_s
        self.duration_s = 0.0        # expected length of a dry frame (EMA of measured ones)
        self.primed = 0              # dry frames run
        self.skipped_busy = 0        # dry frames not run: the process was busy just before (MAX_BUSY)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edge-anytime-primer", daemon=True)
        self._thread.start()

    def lead(self, jitter: float) -> float:
        """How long before an expected call its dry frame starts."""
        return max(self._lead_s, LEAD_PER_DURATION * self.duration_s + jitter)

    def _loop(self) -> None:
        tight_timer_slack()
        ctrl, tracker, now = self._ctrl, self._ctrl._arrivals, self._ctrl._now
        primed_for = -math.inf       # the expected call the last dry frame was for
        while not self._stop.is_set():
            forecast = tracker.forecast(now())
            if forecast is None:
                self._stop.wait(IDLE_POLL_S)
                continue
            next_call, period, jitter = forecast
            if next_call <= primed_for + 0.5 * period:   # primed for it already: look again once it is served
                self._stop.wait(max(0.0, primed_for + 0.5 * period - now()))
                continue
            count = tracker.count
            start_at = next_call - self.lead(jitter)
            if self._stop.wait(max(0.0, start_at - BUSY_WINDOW_S - now())):
                return
            cpu, wall = time.process_time(), now()
            if self._stop.wait(max(0.0, start_at - wall)):
                return
            primed_for = next_call
            if tracker.count != count or now() > next_call:
                continue             # the call came early (or this thread woke late): no dry frame this time
            if time.process_time() - cpu > MAX_BUSY * max(now() - wall, BUSY_WINDOW_S):
                self.skipped_busy += 1
                continue             # the process is working: the caches are not idle, the CPU is not free
            try:
                seconds = prime_controller(ctrl, None, blocking=False)
            except Exception as exc:  # noqa: BLE001 - priming is an optimisation: never worth the thread
                ctrl._report_error(exc, "controller:prime")
                self._stop.wait(1.0)
                continue
            if seconds > 0:
                self.primed += 1
                self.duration_s += (seconds - self.duration_s) * (1.0 if self.primed == 1 else DURATION_RATE)

    def close(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)


def prime_controller(ctrl, budget_s: float | None, blocking: bool = True) -> float:
    """`ctrl.prime(budget_s)`: see `Controller.prime` (this is its body). `blocking=False` (the primer thread):
    skip it (0.0) when a frame holds the interpreters."""
    if ctrl._closed:
        raise RuntimeError("controller is closed")
    if ctrl._simulated_clock or ctrl._warming:
        return 0.0            # nothing is cold (a simulated clock), or warm-up frames are running
    if budget_s is None:
        budget_s = ctrl._last_budget if ctrl._last_budget is not None else DEFAULT_BUDGET_S
    if not (isinstance(budget_s, (int, float)) and math.isfinite(budget_s) and budget_s > 0):
        raise ValueError(f"budget_s must be a finite number of seconds > 0 (or None: the last frame's), got "
                         f"{budget_s!r}")
    if not blocking and (ctrl._inference_lock.locked() or ctrl._current is not None):
        return 0.0
    start = ctrl._now()
    frame = ctrl._sample_frame
    tensor = ctrl._preprocess(frame) if ctrl.options.validate_frames else frame   # the served frames' path, warmed
    deadline = start + float(budget_s)
    job = FrameJob(-1, tensor, start, deadline, deadline - ctrl.policy.guard(), ctrl.options.mode,
                   ctrl.options.confidence_target, None, waitable=ctrl._threaded)
    job.priming = True
    if ctrl._threaded:
        ctrl._queue.put(job)
        job.wait_done(max(1.0, 2.0 * float(budget_s)))
    else:
        ctrl._execute(job)
    result = job.result
    if result is not None and result.best is not None:
        result.label        # the argmax a control loop reads first
    warm_first_exit_graphs(ctrl, job, tensor)
    counts = ctrl._counts
    counts["dry_frames"] += 1
    if ctrl._arrivals.came_after(job.start):
        counts["frames_behind_dry_frames"] += 1
    return ctrl._now() - start


def warm_first_exit_graphs(ctrl, job: FrameJob, tensor) -> None:
    """The graphs that answer the first exit which the dry frame did not run (`FramePlan.other_first_exit_steps`:
    planning picks between them per frame, on estimates that move). Step by step, giving way like the dry frame
    when a served frame comes in."""
    for steps in ctrl._plan.other_first_exit_steps():
        env = {ctrl.program.input_tensor: tensor}
        for step in steps:
            if ctrl._arrivals.came_after(job.start) or not ctrl._inference_lock.acquire(blocking=False):
                return           # a served frame came in, or holds the interpreters: it goes first
            try:
                ctrl.interpreter.run_all(None, steps=(step,), env=env)
            finally:
                ctrl._inference_lock.release()
