"""Recording a frame's latency samples in time the frame has to spare.

Feeding a frame's samples to the estimators (an insertion into each sorted
window, 4-5 us a frame here) happens between the frame's last step and its
delivery, so it lengthens the delivery path the margin reserves; at a budget
just above a segment's latency those microseconds decide between a result and
none. `SampleBacklog` records a frame's batch only while the frame has time to
spare before its deadline, less what its delivery still needs (the margin),
else keeps it for a later frame that has (at most `max_batches` wait: the
oldest is dropped, and counted). A frame that is already past its deadline
records the two oldest batches waiting (its own among them when no more wait):
its result is late anyway, and a slowdown that makes every frame late must
still reach the estimates (two, not all: the frame is not held longer than
that, nor, threaded, the next frame's start).

Samples measured after a result's stamp (the delivery path, the watchdog's
path) wait here too (`add_stamped`) and are applied with the next batch.

>>> applied = []
>>> backlog = SampleBacklog(applied.append, clock=lambda: 0.0)
>>> backlog.add("frame 1"); backlog.record(time_left=2e-6)    # no time to spare: it waits
0.0
>>> backlog.add("frame 2"); backlog.record(time_left=1.0, reserve=1e-4), applied
(0.0, ['frame 1', 'frame 2'])
"""

from __future__ import annotations

import collections
import math
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .frame_job import FrameJob

MAX_BATCHES = 8          # frames' batches that may wait for a frame with time to spare
MAX_STAMPED = 64         # samples measured after a stamp that may wait
COST_RATE = 1.0 / 16     # how fast the cost of recording a batch follows new measurements
FIRST_COST = 5e-6        # seconds: the cost assumed until one is measured
COST_SAFETY = 2.0        # a batch is recorded only where twice its mean cost fits: the cost varies
LATE_BATCHES = 2         # batches a late frame records: the backlog shrinks, and the frame is not held long


class SampleBacklog:
    """Batches of latency samples waiting to be applied; see the module docstring."""

    def __init__(self, apply: Callable[[Any], None], clock: Callable[[], float] = time.perf_counter,
                 max_batches: int = MAX_BATCHES) -> None:
        self._apply = apply
        self._clock = clock
        self._batches: collections.deque = collections.deque()
        self._stamped: collections.deque = collections.deque(maxlen=MAX_STAMPED)
        self.max_batches = max_batches
        self.cost = FIRST_COST   # seconds to apply one batch (EMA of measured applications)
        self.dropped = 0         # batches dropped unrecorded: no frame had time to spare for them

    @property
    def pending(self) -> int:
        return len(self._batches) + len(self._stamped)

    def add(self, batch: Any) -> None:
        """A frame's batch (see `FramePlan.take_samples`)."""
        if len(self._batches) >= self.max_batches:
            self._batches.popleft()
            self.dropped += 1
        self._batches.append(batch)

    def add_stamped(self, estimator, seconds: float) -> None:
        """A sample measured after its result's stamp, for `estimator` (applied with the next batch)."""
        self._stamped.append((estimator, seconds))

    def record(self, time_left: float, reserve: float = 0.0) -> float:
        """Apply waiting batches, oldest first, while each fits (at COST_SAFETY times its measured cost) in
        `time_left - reserve` seconds (`time_left`: to the deadline; `reserve`: what delivery still needs); all
        of them when `time_left` is infinite (no deadline to keep), LATE_BATCHES when it is negative (missed
        already). Returns the seconds spent."""
        batches = self._batches
        if not batches:
            return 0.0
        late = time_left < 0.0
        everything = math.isinf(time_left)
        slack = time_left - reserve
        if not (everything or late) and slack < COST_SAFETY * self.cost:
            return 0.0
        clock = self._clock
        start = clock()
        spent = 0.0
        count = 0
        while batches:
            if not everything and (count >= LATE_BATCHES if late else spent + COST_SAFETY * self.cost > slack):
                break
            count += 1
            before = spent
            self._apply(batches.popleft())
            self._apply_stamped()
            spent = clock() - start
            self.cost += (spent - before - self.cost) * COST_RATE
        return spent

    def drain(self) -> None:
        """Apply everything waiting (off a frame's path: estimates read, flush, close)."""
        self.record(math.inf)
        self._apply_stamped()

    def _apply_stamped(self) -> None:
        stamped = self._stamped
        while stamped:
            estimator, seconds = stamped.popleft()
            estimator.observe(seconds)


class SampleRouting:
    """Where a controller's latency samples go (the `Controller` methods of this concern): the frame's batch
    to the recorder thread or the backlog, recorded in spare time; a delivery path measured after its stamp;
    everything pending applied before estimates are read. Uses the controller's `_plan`, `policy`, `_backlog`,
    `_recorder`, `_warming`, `_inference_lock`, `_now`, `_simulated_clock` and `_report_error`."""

    def _observe_delivery(self, seconds: float) -> None:
        """A delivery path measured after its result's stamp: applied with the next frame's samples."""
        if self._warming:
            self._warmup_delivery.append(seconds)
        elif self._recorder is not None:
            self._recorder.put(float(seconds))   # the recorder thread is the estimators' writer (inline frames)
        else:
            self._backlog.add_stamped(self.policy.delivery, seconds)

    def _apply_recorded(self, item) -> None:
        """The recorder thread: a frame's samples (a batch), or a delivery-path time (seconds)."""
        if isinstance(item, float):
            self.policy.delivery.observe(item)
        else:
            self._plan.apply_samples(item)

    def _keep_samples(self, job: FrameJob, limit: float) -> None:
        """The frame's samples leave the plan under the lock (another thread's frame may be next)."""
        if self._recorder is not None and not job.hand_back:
            self._recorder.put(self._plan.take_samples())   # recorded off the caller's path
            return
        # Before the result is stamped or handed back, in the time the frame has to spare (recording.py); the
        # delivery path the margin covers leaves it out. (Recording after a threaded hand-back would only move
        # the work onto the next frame: the caller and this thread share one interpreter lock.)
        self._backlog.add(self._plan.take_samples())
        left = math.inf if self._simulated_clock else job.deadline - self._now()
        job.recording_s = self._record_samples(left, job.deadline - limit)

    def _record_samples(self, time_left: float, margin: float) -> float:
        """Record waiting samples in the frame's spare time, `margin` kept for delivery (recording.py); the
        seconds it took."""
        try:
            return self._backlog.record(time_left, margin)
        except Exception as exc:  # noqa: BLE001 - estimates are not worth a frame
            self._report_error(exc, "controller:estimates")
            return 0.0

    def _drain_samples(self) -> None:
        """Apply every sample still waiting (reading estimates, flush, close: off a frame's path)."""
        if self._recorder is not None:
            self._recorder.drain()
        if self._backlog.pending:
            with self._inference_lock:
                self._backlog.drain()

