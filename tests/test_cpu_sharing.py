"""A threaded run()'s hand-offs on one CPU (edge_anytime/handoff.py, CpuSharing), on the real clock.

The pins are per hand-off: the inference thread runs on the caller's CPU, the
caller's own affinity is the same after every call (also after a watchdog
hand-back), and nothing is pinned where the caller may use a single CPU only.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time

import numpy as np
import pytest

from edge_anytime import Controller, ControllerOptions
from edge_anytime.backends.fake import FakeBackend
from edge_anytime.handoff import CallerCpu, CpuSharing
from tests.conftest import tiny_model, tiny_program
from tests.test_controller_sim import Phase, depth_outputs

MS = 1e-3
getcpu = ctypes.CDLL(None).sched_getcpu
two_cpus = pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                              reason="needs Linux and a process allowed on 2 CPUs")


def threaded(share: bool, latency=None):
    fake = FakeBackend(latency=latency, default_latency=0.0005, outputs=depth_outputs)
    options = ControllerOptions(warmup_runs=2, warmup_seconds=0.0, margin_s=1 * MS, watchdog_guard_s=1 * MS,
                                threaded=True, share_caller_cpu=share)
    return Controller.from_program(tiny_program(3), tiny_model(), fake, options=options), fake


def step_cpus(ctrl):
    """Wrap every step: the CPU it started on, per call."""
    seen = []
    for step in ctrl.interpreter.steps:
        run = step.run

        def on_cpu(inputs, run=run):
            seen.append(getcpu())
            return run(inputs)
        step.run = on_cpu
    return seen


@two_cpus
def test_steps_run_on_the_callers_cpu_and_the_callers_affinity_is_kept():
    frame = np.zeros(tiny_model().input.shape, np.float32)
    ctrl, _ = threaded(True)
    seen = step_cpus(ctrl)
    before = os.sched_getaffinity(0)
    same = 0
    try:
        for _ in range(40):
            seen.clear()
            cpu = getcpu()
            result = ctrl.run(frame, budget_s=0.5)
            assert result.exit_index == 2
            assert os.sched_getaffinity(0) == before           # the caller's affinity, as it was
            same += seen[0] == cpu
        assert os.sched_getaffinity(ctrl._worker.native_id) == before   # the inference thread is free again
    finally:
        ctrl.close()
    # the first step starts on the CPU the caller handed the frame from (unless a migration lands in the
    # few microseconds between)
    assert same >= 36, same


@two_cpus
def test_a_watchdog_hand_back_leaves_the_caller_unpinned_and_on_time():
    # the third body call of the frame hangs for 300 ms; the frame's budget is 60 ms
    body = Phase(2 * MS, [2 * MS, 300 * MS, 2 * MS])
    ctrl, _ = threaded(True, {"stem": 2 * MS, "head": 1 * MS, "body": body})
    frame = np.zeros(tiny_model().input.shape, np.float32)
    before = os.sched_getaffinity(0)
    body.on = True
    try:
        started = time.perf_counter()
        result = ctrl.run(frame, budget_s=0.06)
        returned = time.perf_counter() - started
        assert result.exit_index == 1 and returned < 0.2, (result, returned)   # not after the stuck step
        assert os.sched_getaffinity(0) == before
        time.sleep(0.3)                   # the stuck step ends and hands back: no pin comes back to the caller
        assert os.sched_getaffinity(0) == before
        assert ctrl.run(frame, budget_s=1.0).exit_index == 2
        assert os.sched_getaffinity(0) == before
    finally:
        ctrl.close()


@two_cpus
def test_hand_back_narrows_a_waiting_caller_and_never_an_awake_one():
    sharing = CpuSharing(threading.get_native_id())
    before = os.sched_getaffinity(0)
    caller = sharing.hand_in()          # pins "the inference thread" (here: this thread) to this CPU
    assert caller is not None and caller.mask == before
    assert len(os.sched_getaffinity(0)) == 1
    sharing.unpin_worker()              # the inference thread frees itself as it starts a frame
    assert os.sched_getaffinity(0) == before
    sharing.hand_back(caller)           # frame done before the caller woke: narrowed to this CPU
    assert caller.narrowed and len(os.sched_getaffinity(0)) == 1
    CpuSharing.restore(caller)
    assert os.sched_getaffinity(0) == before and caller.woken

    late = CallerCpu(threading.get_native_id(), before)
    CpuSharing.restore(late)            # the caller woke first (its timer): a late hand-back pins nothing
    sharing.hand_back(late)
    assert not late.narrowed and os.sched_getaffinity(0) == before


@two_cpus
def test_a_caller_on_one_cpu_and_an_os_that_refuses_change_nothing():
    sharing = CpuSharing(threading.get_native_id())
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {getcpu()})
    try:
        assert sharing.hand_in() is None                 # already on one CPU: nothing to pin or restore
    finally:
        os.sched_setaffinity(0, before)
    refused = CpuSharing(2 ** 22)                        # no such thread: the OS refuses, sharing turns off
    assert not refused.active and refused.hand_in() is None
    assert os.sched_getaffinity(0) == before


def test_share_caller_cpu_is_off_by_default_and_then_builds_no_sharing():
    assert ControllerOptions().share_caller_cpu is False
    ctrl, _ = threaded(False)
    try:
        assert ctrl._cpu_sharing is None
        assert ctrl.run(np.zeros(tiny_model().input.shape, np.float32), budget_s=0.5).exit_index is not None
    finally:
        ctrl.close()
