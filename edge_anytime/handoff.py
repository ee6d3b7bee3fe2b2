"""Measurements of the thread hand-off on this host (threaded controllers), taken at warm-up.

>>> samples = timer_lateness(10)          # seconds a timed wait returned late, 10 waits minus cold ones
>>> len(samples), all(s >= 0 for s in samples)
(7, True)
"""

from __future__ import annotations

import queue
import threading
import time

COLD = 3                 # first measurements dropped (cold caches, lazy allocation)
TIMER_SLACK_NS = 1000    # Linux timer slack of threads that wait with timeouts (the default is 50 us)
HANDOFF_SAMPLES = 200    # warm-up measurements of the hand-back and the timer wake-up (their 95th percentile)


class Ping:
    """A no-op job: the inference thread answers it at once (hand-back measurement)."""

    __slots__ = ("done", "signal_s")

    def __init__(self) -> None:
        self.done = threading.Lock()
        self.done.acquire()
        self.signal_s = 0.0

    def answer(self) -> None:
        self.signal_s = time.perf_counter()
        self.done.release()


def hand_back_latency(jobs: queue.SimpleQueue, count: int) -> list[float]:
    """Seconds from the inference thread answering a Ping put on `jobs` to the caller holding it, `count` times."""
    samples = []
    for _ in range(count):
        ping = Ping()
        jobs.put(ping)
        ping.done.acquire()
        samples.append(time.perf_counter() - ping.signal_s)
    return samples[COLD:]


def timer_lateness(count: int) -> list[float]:
    """How late a timed wait on a lock returns on this host (seconds), over `count` short waits."""
    gate = threading.Lock()
    gate.acquire()
    samples = []
    for i in range(count):
        wait = 20e-6 * (1 + i % 4)
        start = time.perf_counter()
        gate.acquire(timeout=wait)
        samples.append(max(0.0, time.perf_counter() - start - wait))
    return samples[COLD:]


_THREAD_STATE = threading.local()


def tight_timer_slack() -> None:
    """Once per thread: timed waits of this thread wake within microseconds, not the default 50 us."""
    if not getattr(_THREAD_STATE, "slack_set", False):
        from .realtime import set_timer_slack

        set_timer_slack(TIMER_SLACK_NS)
        _THREAD_STATE.slack_set = True
