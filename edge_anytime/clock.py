"""Injectable monotonic clocks: the wall clock on the device, a simulated clock elsewhere.

The controller reads time only through a Clock, so the same code runs in real
time on a board and deterministically (no sleeps) in tests and the simulator.

>>> clock = SimulatedClock()
>>> clock.advance(0.002); clock.now()
0.002
>>> clock.sleep_until(0.005); clock.now()
0.005
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Protocol


class Clock(Protocol):
    """Seconds on a monotonic time line."""

    simulated: bool

    def now(self) -> float: ...

    def sleep_until(self, t: float) -> None: ...


class MonotonicClock:
    """The device's steady clock (`time.perf_counter`)."""

    simulated = False

    def now(self) -> float:
        return time.perf_counter()

    def sleep_until(self, t: float) -> None:
        remaining = t - time.perf_counter()
        if remaining > 0:
            time.sleep(remaining)


class SimulatedClock:
    """A clock that only moves when told to (by `advance`, or a fake backend's latency)."""

    simulated = True

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a simulated clock cannot go back ({seconds} s)")
        with self._lock:
            self._now += seconds

    def sleep_until(self, t: float) -> None:
        with self._lock:
            if t > self._now:
                self._now = float(t)


def time_source(clock) -> Callable[[], float]:
    """The fastest callable that reads `clock`: `time.perf_counter` itself for the device's clock (one
    Python call less per reading, on the frame's path), else the clock's own `now`."""
    return time.perf_counter if type(clock) is MonotonicClock else clock.now
