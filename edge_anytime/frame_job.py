"""One frame in flight: its state, and the single place where its final result is decided.

The inference thread, the watchdog and `interrupt()` may all try to finish a
frame; `FrameJob.finalize` lets exactly one of them do it (first caller wins),
so a frame is delivered once and a late step can never overwrite it.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from .options import MODES, valid_confidence
from .results import ExitResult, FrameResult, StopReason

_NUMBER = (int, float, np.integer, np.floating)


def check_request(now: float, budget_s, deadline_s, mode: str, target) -> tuple[float, Any, str | None]:
    """A `run()`/`submit()` call's deadline and confidence target, and the error that names the fix (None if
    the frame can run).

    >>> check_request(10.0, 0.002, None, "anytime", None)
    (10.002, None, None)
    >>> check_request(10.0, 0.002, 11.0, "anytime", None)[2]
    'give exactly one of budget_s (relative, seconds) or deadline_s (absolute, controller clock)'
    >>> check_request(10.0, None, 9.0, "anytime", None)[2]
    'deadline already passed (1000.000 ms ago); nothing can run'
    """
    error = None
    deadline = now
    if (budget_s is None) == (deadline_s is None):
        error = "give exactly one of budget_s (relative, seconds) or deadline_s (absolute, controller clock)"
    elif budget_s is not None:
        if not (isinstance(budget_s, _NUMBER) and math.isfinite(budget_s) and budget_s >= 0):
            error = f"budget_s must be a finite number of seconds >= 0, got {budget_s!r}"
        else:
            deadline = now + float(budget_s)
    elif not (isinstance(deadline_s, _NUMBER) and math.isfinite(deadline_s)):
        error = f"deadline_s must be a finite time on the controller's clock, got {deadline_s!r}"
    else:
        deadline = float(deadline_s)
    if error is None and deadline <= now:
        error = f"deadline already passed ({(now - deadline) * 1e3:.3f} ms ago); nothing can run"
    if mode not in MODES:
        error = f"mode must be 'anytime' or 'apriori', got {mode!r}"
    if target is not None:
        if isinstance(target, np.floating):
            target = float(target)
        if not valid_confidence(target):
            error = f"confidence_target must be a number in (0, 1], got {target!r}"
    return deadline, target, error


class FrameJob:
    __slots__ = ("frame_id", "tensor", "start", "deadline", "fire_at", "budget", "mode", "confidence_target",
                 "user_data", "exits", "best", "best_rank", "steps_run", "steps_skipped", "late_steps", "error",
                 "result", "stop_reason", "last_exit_s", "outcome", "hand_back", "caller_cpu", "counted", "admitted",
                 "segment_start", "recording_s", "priming", "_lock", "_done")

    def __init__(self, frame_id: int, tensor: np.ndarray | None, start: float, deadline: float, fire_at: float,
                 mode: str, confidence_target: float | None, user_data: Any, waitable: bool = True) -> None:
        self.frame_id = frame_id
        self.tensor = tensor
        self.start = start
        self.deadline = deadline
        self.fire_at = fire_at
        self.budget = deadline - start
        self.mode = mode
        self.confidence_target = confidence_target
        self.user_data = user_data
        self.exits: list[ExitResult] = []
        self.best: ExitResult | None = None
        self.best_rank = -1.0
        self.steps_run = 0
        self.steps_skipped = 0
        self.late_steps = 0
        self.error: str | None = None
        self.result: FrameResult | None = None
        self.stop_reason: StopReason | None = None   # set by a hook that ends the frame early (confidence)
        self.segment_start = start
        self.recording_s = 0.0                       # spent recording samples before delivery (recording.py)
        self.last_exit_s = start                     # when the latest exit became available
        self.outcome: tuple | None = None            # (reason, error text) when the caller finalizes (run())
        self.counted = False                         # counted in the controller's submit() queue
        self.admitted = False                        # a segment of this frame was admitted
        self.hand_back = False                       # True: the inference thread leaves finalize to run()
        self.caller_cpu = None                       # run()'s thread, for handoff.CpuSharing
        self.priming = False                         # a dry frame (Controller.prime): nothing counted or published
        self._lock = threading.Lock()
        self._done: threading.Lock | None = None      # held until the frame is done: a cheap one-shot gate
        if waitable:                                  # (an inline run() frame has nobody to wait for it)
            self._done = threading.Lock()
            self._done.acquire()

    @property
    def finalized(self) -> bool:
        return self.result is not None

    def offer(self, exit_result: ExitResult, rank: float) -> bool:
        """Record an exit computed in time; False if the frame was already delivered."""
        with self._lock:
            if self.result is not None:
                return False
            self.exits.append(exit_result)
            if rank >= self.best_rank:
                self.best, self.best_rank = exit_result, rank
            return True

    def finalize(self, reason: StopReason, delivered_s: float, error: str | None = None) -> FrameResult | None:
        """Decide the frame's result, once. Returns it, or None if someone else already did."""
        with self._lock:
            if self.result is not None:
                return None
            if self.best is None:
                reason = StopReason.NO_RESULT
            if error is not None:
                self.error = error
            self.result = FrameResult.assemble(
                frame_id=self.frame_id, status=reason, best=self.best, exits=tuple(self.exits),
                budget_s=self.budget, start_s=self.start, deadline_s=self.deadline, delivered_s=delivered_s,
                steps_run=self.steps_run, steps_skipped=self.steps_skipped, late_steps=self.late_steps,
                mode=self.mode, error=self.error, user_data=self.user_data)
            self.tensor = None  # drop the input early: a late step must not keep frames alive
        self.signal_done()
        return self.result

    def signal_done(self) -> None:
        """Open the gate for whoever waits on this frame (idempotent)."""
        if self._done is None:
            return
        try:
            self._done.release()
        except RuntimeError:
            pass   # already open

    def wait_done(self, timeout: float) -> bool:
        """Block until the frame is done or `timeout` seconds pass; True if done."""
        if self._done is None:
            return self.result is not None
        if self._done.acquire(timeout=max(0.0, min(timeout, threading.TIMEOUT_MAX))):
            self._done.release()   # keep the gate open for other waiters
            return True
        return False

    def wait(self, timeout: float | None = None) -> FrameResult | None:
        self.wait_done(threading.TIMEOUT_MAX if timeout is None else timeout)
        return self.result


class FrameTicket:
    """Handle returned by `Controller.submit`: `ticket.result(timeout)` blocks until the frame is delivered."""

    __slots__ = ("_job",)

    def __init__(self, job: FrameJob) -> None:
        self._job = job

    @property
    def frame_id(self) -> int:
        return self._job.frame_id

    def done(self) -> bool:
        return self._job.finalized

    def result(self, timeout: float | None = None) -> FrameResult | None:
        return self._job.wait(timeout)
