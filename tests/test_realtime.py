"""Real-time hygiene: every step is applied or reported as refused, never raised."""

import ctypes
import ctypes.util
import os

from edge_anytime.realtime import RealtimeOptions, apply_realtime


def test_each_requested_step_is_reported():
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    report = apply_realtime(RealtimeOptions(cpus=cpus, fifo_priority=10, lock_memory=True, freeze_gc=True))
    names = [step.name for step in report.steps]
    assert names == ["cpu_affinity", "sched_fifo", "lock_memory", "freeze_gc"]
    for step in report.steps:
        assert step.applied or step.detail, f"{step.name} refused without a reason"
    assert os.sched_getaffinity(0) == set(cpus)
    if os.sched_getscheduler(0) == os.SCHED_FIFO:   # applied (root): restore normal scheduling
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    ctypes.CDLL(ctypes.util.find_library("c")).munlockall()   # do not keep the test process locked


def test_impossible_affinity_is_refused_with_the_valid_choices():
    report = apply_realtime(RealtimeOptions(cpus=(4096,), freeze_gc=False))
    (step,) = report.steps
    assert not step.applied and "pick CPUs from" in step.detail
