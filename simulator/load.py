"""Bounded background CPU load for real-clock replays (a competing process, as on a busy board).

>>> with BackgroundLoad(0.5, max_seconds=60):      # doctest: +SKIP
...     run_replay()

One child process spins for `fraction` of every 10 ms period and sleeps the
rest; it is stopped when the block ends, and stops by itself after
`max_seconds` even if the parent dies, so it can never outlive a replay.
"""

from __future__ import annotations

import multiprocessing
import os
import time


def _spin(fraction: float, max_seconds: float, parent: int) -> None:
    period = 0.01
    end = time.monotonic() + max_seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        while time.monotonic() - t0 < fraction * period:
            pass
        if os.getppid() != parent:
            return
        time.sleep(max(0.0, period * (1.0 - fraction)))


class BackgroundLoad:
    """Context manager: one busy process at `fraction` (0..1] of a core, for at most `max_seconds`."""

    def __init__(self, fraction: float, max_seconds: float = 600.0) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"cpu load must be in (0, 1] (a fraction of one core), got {fraction}")
        if not 0 < max_seconds <= 3600:
            raise ValueError("max_seconds must be in (0, 3600]")
        self.fraction = fraction
        self.max_seconds = max_seconds
        self._process: multiprocessing.Process | None = None

    def __enter__(self) -> "BackgroundLoad":
        context = multiprocessing.get_context("spawn")
        self._process = context.Process(target=_spin, args=(self.fraction, self.max_seconds, os.getpid()),
                                        name="edge-anytime-cpu-load", daemon=True)
        self._process.start()
        return self

    def __exit__(self, *exc) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            process.join(timeout=5.0)
