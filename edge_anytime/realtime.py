"""Optional real-time hygiene for the inference process, each step reported when the OS refuses.

>>> report = apply_realtime(RealtimeOptions(cpus=None, fifo_priority=None, lock_memory=False, freeze_gc=True))
>>> [(step.name, step.applied) for step in report.steps]
[('freeze_gc', True)]

Steps (all optional):

* `cpus`: pin the process to these CPUs (`os.sched_setaffinity`); keeps the
  interpreter off cores that serve interrupts or other tasks.
* `fifo_priority`: `SCHED_FIFO` with this priority (1-99; needs root or
  CAP_SYS_NICE / an rtprio limit). Use a moderate value (e.g. 50) so kernel
  threads still run.
* `lock_memory`: `mlockall(MCL_CURRENT | MCL_FUTURE)` through libc, so pages
  are never swapped out mid-frame (needs CAP_IPC_LOCK or a memlock limit).
* `freeze_gc`: `gc.freeze()` moves everything allocated so far (models,
  buffers) out of the collector's view, so collections during frames are
  short; the controller also disables the collector while a frame runs.

Nothing here raises: a refused step is reported with the reason and the fix.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class RealtimeOptions:
    cpus: tuple[int, ...] | None = None
    fifo_priority: int | None = None
    lock_memory: bool = False
    freeze_gc: bool = True


@dataclass(frozen=True)
class RealtimeStep:
    name: str
    applied: bool
    detail: str = ""


@dataclass(frozen=True)
class RealtimeReport:
    steps: tuple[RealtimeStep, ...]

    @property
    def all_applied(self) -> bool:
        return all(step.applied for step in self.steps)

    def __str__(self) -> str:
        return "; ".join(f"{s.name}: {'ok' if s.applied else 'refused'}{' (' + s.detail + ')' if s.detail else ''}"
                         for s in self.steps)


def _affinity(cpus: tuple[int, ...]) -> RealtimeStep:
    if not hasattr(os, "sched_setaffinity"):
        return RealtimeStep("cpu_affinity", False, "this OS has no sched_setaffinity")
    try:
        os.sched_setaffinity(0, set(cpus))
        return RealtimeStep("cpu_affinity", True, f"cpus {sorted(os.sched_getaffinity(0))}")
    except (OSError, ValueError) as exc:
        return RealtimeStep("cpu_affinity", False, f"{exc}; pick CPUs from {sorted(os.sched_getaffinity(0))}")


def _fifo(priority: int) -> RealtimeStep:
    if not hasattr(os, "sched_setscheduler"):
        return RealtimeStep("sched_fifo", False, "this OS has no sched_setscheduler")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return RealtimeStep("sched_fifo", True, f"priority {priority}")
    except (OSError, ValueError) as exc:
        return RealtimeStep("sched_fifo", False, f"{exc}; run as root, grant CAP_SYS_NICE, or set an rtprio "
                                                 f"limit in /etc/security/limits.conf")


@functools.lru_cache(maxsize=1)
def libc():
    """The C library through ctypes (errno kept), or None where it cannot be loaded."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


def _mlock() -> RealtimeStep:
    lib = libc()
    if lib is None or not hasattr(lib, "mlockall"):
        return RealtimeStep("lock_memory", False, "libc not found")
    mcl_current, mcl_future = 1, 2
    if lib.mlockall(mcl_current | mcl_future) != 0:
        errno = ctypes.get_errno()
        return RealtimeStep("lock_memory", False, f"mlockall failed: {os.strerror(errno)}; grant CAP_IPC_LOCK "
                                                  f"or raise the memlock limit (ulimit -l)")
    return RealtimeStep("lock_memory", True)


def apply_realtime(options: RealtimeOptions) -> RealtimeReport:
    """Apply what the OS allows; returns what was applied and why the rest was refused."""
    steps = []
    if options.cpus is not None:
        steps.append(_affinity(options.cpus))
    if options.fifo_priority is not None:
        steps.append(_fifo(options.fifo_priority))
    if options.lock_memory:
        steps.append(_mlock())
    if options.freeze_gc:
        gc.collect()
        gc.freeze()
        steps.append(RealtimeStep("freeze_gc", True))
    return RealtimeReport(tuple(steps))


PR_SET_TIMERSLACK = 29


def set_timer_slack(nanoseconds: int) -> bool:
    """Set the calling thread's timer slack (Linux `prctl(PR_SET_TIMERSLACK)`): how late the kernel may wake a
    timed wait to batch wake-ups (50 us by default, as much as a small model's whole frame). Returns whether
    it was applied; never raises."""
    try:
        return libc().prctl(PR_SET_TIMERSLACK, int(nanoseconds), 0, 0, 0) == 0
    except (OSError, AttributeError):   # no libc (None has no prctl) or no prctl
        return False
