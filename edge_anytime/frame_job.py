"""One frame in flight: its state, and the single place where its final result is decided.

The inference thread, the watchdog and `interrupt()` may all try to finish a
frame; `FrameJob.finalize` lets exactly one of them do it (first caller wins),
so a frame is delivered once and a late step can never overwrite it.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .results import ExitResult, FrameResult, StopReason


class FrameJob:
    __slots__ = ("frame_id", "tensor", "start", "deadline", "fire_at", "budget", "mode", "confidence_target",
                 "user_data", "exits", "best", "best_rank", "steps_run", "steps_skipped", "late_steps", "error",
                 "result", "stop_reason", "last_exit_s", "outcome", "hand_back", "caller_cpu", "counted", "admitted", "segment_start", "_lock", "_done")

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
        self.last_exit_s = start                     # when the latest exit became available
        self.outcome: tuple | None = None            # (reason, error text) when the caller finalizes (run())
        self.counted = False                         # counted in the controller's submit() queue
        self.admitted = False                        # a segment of this frame was admitted
        self.hand_back = False                       # True: the inference thread leaves finalize to run()
        self.caller_cpu = None                       # run()'s thread, for handoff.CpuSharing
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
