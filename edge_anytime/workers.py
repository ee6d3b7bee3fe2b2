"""The controller's background threads: the watchdog, the delivery thread and the sample recorder.

* `Watchdog` holds the open frames ordered by their fire time (deadline minus
  the guard) and finalizes any frame still open at that time with its best
  result so far, whatever the inference thread is doing (an invoke in flight
  cannot be cancelled, but its result will be dropped).
* `DeliveryThread` calls the user's callbacks, in order, from one thread, so a
  slow or failing callback never delays inference.
* `SampleRecorder` feeds inline frames' latency samples to the estimators from
  its own thread, so that bookkeeping (a few microseconds a frame, more with
  cold caches) is not on the path from a frame's last step to its caller.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import queue
import threading
import time
from typing import Callable

from .frame_job import FrameJob

MAX_WAIT_S = 3600.0   # the watchdog re-checks at least hourly, whatever the deadline


class Watchdog:
    def __init__(self, clock, on_fire: Callable[[FrameJob], None]) -> None:
        self._clock = clock
        self._on_fire = on_fire
        self._heap: list[tuple[float, int, FrameJob]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="edge-anytime-watchdog", daemon=True)
        self._thread.start()

    def arm(self, job: FrameJob) -> None:
        with self._cond:
            first = not self._heap or job.fire_at < self._heap[0][0]
            heapq.heappush(self._heap, (job.fire_at, next(self._counter), job))
            if first:
                self._cond.notify()

    def _loop(self) -> None:
        clock = self._clock
        with self._cond:
            while not self._stopped:
                while self._heap and self._heap[0][2].finalized:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                fire_at, _, job = self._heap[0]
                remaining = fire_at - clock.now()
                if remaining > 0:
                    self._cond.wait(min(remaining, MAX_WAIT_S))   # a huge budget must not overflow the wait
                    continue
                heapq.heappop(self._heap)
                self._cond.release()
                try:
                    if not job.finalized:
                        self._on_fire(job)
                finally:
                    self._cond.acquire()

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)


class DeliveryThread:
    """Runs `deliver(item)` for each queued item on one thread, in order."""

    _STOP = object()

    def __init__(self, deliver: Callable[[object], None]) -> None:
        self._deliver = deliver
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="edge-anytime-delivery", daemon=True)
        self._thread.start()

    def put(self, item: object) -> None:
        self._queue.put(item)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            self._deliver(item)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far has been delivered."""
        done = threading.Event()
        self._queue.put(("__flush__", done))
        done.wait(timeout)

    def close(self) -> None:
        self._queue.put(self._STOP)
        if threading.current_thread() is not self._thread:   # close() may come from a callback
            self._thread.join(timeout=5.0)


class SampleRecorder:
    """Applies batches of latency samples on one background thread.

    The caller hands a batch over with a deque append (no wake-up on its path); the thread wakes every
    `period_s`, applies what is there one batch at a time and yields the interpreter lock (GIL) after each, so
    a caller back from a LiteRT invoke waits for at most one batch. `drain()` applies everything pending from
    the calling thread; one lock makes the recorder the estimators' only writer at any time.
    """

    def __init__(self, apply: Callable[[object], None], report: Callable[[BaseException], None],
                 period_s: float = 0.002) -> None:
        self._apply = apply
        self._report = report
        self._period_s = period_s
        self._batches: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edge-anytime-recorder", daemon=True)
        self._thread.start()

    def put(self, batch: object) -> None:
        self._batches.append(batch)

    def _loop(self) -> None:
        while not self._stop.wait(self._period_s):
            while self._batches and not self._stop.is_set():
                self._apply_one()
                time.sleep(0)       # let a caller waiting for the GIL go first

    def _apply_one(self) -> bool:
        with self._lock:
            try:
                batch = self._batches.popleft()
            except IndexError:
                return False
            try:
                self._apply(batch)
            except Exception as exc:  # noqa: BLE001 - an estimate is not worth the thread
                self._report(exc)
            return True

    def drain(self) -> None:
        """Apply every pending batch now (from the calling thread)."""
        while self._apply_one():
            pass

    def close(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
        self.drain()
