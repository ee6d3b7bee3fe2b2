"""Measurements of the thread hand-off on this host (threaded controllers), taken at warm-up.

>>> samples = timer_lateness(10)          # seconds a timed wait returned late, 10 waits minus cold ones
>>> len(samples), all(s >= 0 for s in samples)
(7, True)
"""

from __future__ import annotations

import ctypes
import os
import queue
import threading
import time

from .realtime import libc, set_timer_slack

COLD = 3                 # first measurements dropped (cold caches, lazy allocation)
TIMER_SLACK_NS = 1000    # Linux timer slack of threads that wait with timeouts (the default is 50 us)
HANDOFF_SAMPLES = 200    # warm-up measurements of the hand-back and the timer wake-up (their 95th percentile)


class Ping:
    """A no-op job: the inference thread answers it at once (hand-back measurement)."""

    __slots__ = ("done", "signal_s", "caller_cpu")

    def __init__(self, caller_cpu=None) -> None:
        self.done = threading.Lock()
        self.done.acquire()
        self.signal_s = 0.0
        self.caller_cpu = caller_cpu     # CpuSharing's record of the caller, as for a frame

    def answer(self, sharing: "CpuSharing | None" = None) -> None:
        shared = sharing is not None and self.caller_cpu is not None   # as a frame's hand-offs are done
        if shared:
            sharing.unpin_worker()
        self.signal_s = time.perf_counter()
        if shared:
            sharing.hand_back(self.caller_cpu)
        self.done.release()


def hand_back_latency(jobs: queue.SimpleQueue, count: int, sharing: "CpuSharing | None" = None) -> list[float]:
    """Seconds from the inference thread answering a Ping put on `jobs` to the caller holding it, `count` times
    (with `sharing`'s hand-offs, as a frame has them)."""
    samples = []
    for _ in range(count):
        ping = Ping(sharing.hand_in() if sharing is not None else None)
        jobs.put(ping)
        ping.done.acquire()
        samples.append(time.perf_counter() - ping.signal_s)
        CpuSharing.restore(ping.caller_cpu)
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
        set_timer_slack(TIMER_SLACK_NS)
        _THREAD_STATE.slack_set = True


def _sched_getcpu():
    """libc's `sched_getcpu` (the CPU the calling thread runs on, through the vDSO), or None where absent."""
    getcpu = getattr(libc(), "sched_getcpu", None)
    if getcpu is not None:
        getcpu.restype = ctypes.c_int
        getcpu.argtypes = ()
    return getcpu


class CallerCpu:
    """The thread of one threaded `run()` call and its own affinity, while the inference thread may narrow it."""

    __slots__ = ("tid", "mask", "narrowed", "woken", "lock")

    def __init__(self, tid: int, mask: set[int]) -> None:
        self.tid, self.mask = tid, mask
        self.narrowed = self.woken = False
        self.lock = threading.Lock()


class CpuSharing:
    """A threaded `run()`'s hand-offs as context switches on one CPU, while nobody is pinned for longer.

    `run()` blocks while the inference thread runs its steps, so the two never need two CPUs at once. On
    two CPUs each hand-in and hand-back is a cross-CPU wake-up (an inter-processor interrupt, 20-40 us in a
    VM); on one it is a context switch. So each hand-off pins the thread it wakes to the waker's CPU, and
    the woken thread frees itself at once:

    * `hand_in()` (the caller): pins the inference thread to the caller's CPU, so it wakes there once the
      caller blocks; the inference thread calls `unpin_worker()` as it starts the frame;
    * `hand_back(caller)` (the inference thread, a frame done): narrows the caller's affinity to its own
      CPU just before waking it; the caller calls `restore(caller)` once awake.

    Nobody stays pinned: a caller pinned for the whole call, whose step was stuck burning that CPU, would
    wait for the step's thread to give the CPU up. With a step stuck that way (`bench/bench_stuck_step.py`)
    `run()` returned more than 1 ms late in 6 of 100 stuck frames with sharing and 6 of 100 without: a
    caller whose timer fires on the step's CPU can wait out the step thread's time slice either way.

    The trade-off, measured in docs/results.md ("Controller overhead"): the median frame costs 1.20-1.25x
    the bare chain instead of 1.30-1.38x, but the tail is worse (the woken thread cannot dodge to another
    CPU when something else holds this one): the budget that gives 99% of frames a result rose from
    1.90-1.95x to 2.05-2.30x exit 0's p99 reach (`bench/bench_budgets.py`, two runs). So
    `ControllerOptions.share_caller_cpu` is off by default.
    Linux only; elsewhere, or when the OS refuses, it turns itself off and nothing else changes.

    >>> worker = threading.Thread(target=time.sleep, args=(0.05,))
    >>> worker.start()
    >>> sharing = CpuSharing(worker.native_id)
    >>> before = os.sched_getaffinity(0)
    >>> caller = sharing.hand_in()
    >>> sharing.active == (len(os.sched_getaffinity(worker.native_id)) == 1)
    True
    >>> if caller is not None:
    ...     sharing.hand_back(caller)     # the inference thread's side (here: this thread narrows itself)
    >>> sharing.restore(caller)
    >>> os.sched_getaffinity(0) == before
    True
    >>> worker.join()
    """

    def __init__(self, native_id: int) -> None:
        self._tid = native_id
        self._getcpu = _sched_getcpu() if hasattr(os, "sched_setaffinity") else None
        self._worker_mask: set[int] = set()
        try:
            if self._getcpu is not None:
                self._worker_mask = os.sched_getaffinity(native_id)
        except OSError:
            self._getcpu = None      # not supported here (or refused): leave the scheduler in charge

    @property
    def active(self) -> bool:
        return self._getcpu is not None

    def hand_in(self) -> CallerCpu | None:
        """On the caller's thread: pin the inference thread to this CPU. Returns the caller's record for
        `hand_back`/`restore`, or None (the caller may only use one CPU anyway, or this is not supported)."""
        if self._getcpu is None:
            return None
        try:
            mask = os.sched_getaffinity(0)
            if len(mask) < 2:
                return None
            cpu = self._getcpu()
            if cpu < 0:
                raise OSError("sched_getcpu failed")
            os.sched_setaffinity(self._tid, {cpu})
        except OSError:
            self._getcpu = None      # not supported here (or refused): leave the scheduler in charge
            return None
        return CallerCpu(threading.get_native_id(), mask)

    def unpin_worker(self) -> None:
        """On the inference thread, starting a frame: free to move again (a caller woken by its timer while a
        step is stuck must not queue behind it)."""
        try:
            os.sched_setaffinity(0, self._worker_mask)
        except OSError:
            pass

    def hand_back(self, caller: CallerCpu) -> None:
        """On the inference thread, before waking the caller: narrow it to this CPU unless it is awake."""
        getcpu = self._getcpu
        if getcpu is None:
            return
        with caller.lock:
            if caller.woken:
                return
            cpu = getcpu()
            if cpu in caller.mask:
                try:
                    os.sched_setaffinity(caller.tid, {cpu})
                    caller.narrowed = True
                except OSError:
                    pass

    @staticmethod
    def restore(caller: CallerCpu | None) -> None:
        """On the caller's thread, once awake: its own affinity back if the inference thread narrowed it."""
        if caller is None:
            return
        with caller.lock:
            caller.woken = True
            narrowed = caller.narrowed
        if narrowed:
            try:
                os.sched_setaffinity(0, caller.mask)
            except OSError:
                pass
