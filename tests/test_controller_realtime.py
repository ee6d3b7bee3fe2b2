"""Controller on the real clock: watchdog delivery, interrupt, delivery thread, submit.

These use the fake backend sleeping for real, with generous margins so they are
not flaky on a loaded 2-core machine: they assert ordering and bounds, not
exact times.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from edge_anytime import Callbacks, Controller, ControllerOptions, StopReason
from edge_anytime.backends.fake import FakeBackend
from tests.conftest import tiny_model, tiny_program
from tests.test_controller_sim import Phase, depth_outputs

MS = 1e-3


class ThreadRecorder(Callbacks):
    def __init__(self):
        self.threads, self.finals, self.errors = set(), [], []
        self.final_event = threading.Event()

    def on_result(self, result):
        self.threads.add(threading.current_thread().name)

    def on_final(self, result):
        self.threads.add(threading.current_thread().name)
        self.finals.append(result)
        self.final_event.set()

    def on_error(self, error, context):
        self.errors.append(context)


def make(latency, options=None, faults=None):
    backend = FakeBackend(latency=latency, outputs=depth_outputs, faults=faults)
    recorder = ThreadRecorder()
    options = options or ControllerOptions(warmup_runs=2, warmup_seconds=0.0, margin_s=2 * MS,
                                          watchdog_guard_s=1 * MS, threaded=True)
    ctrl = Controller.from_program(tiny_program(3), tiny_model(), backend, options=options, callbacks=recorder)
    return ctrl, backend, recorder


def test_watchdog_delivers_best_result_while_a_step_is_stuck(raw_frame):
    # the third body call of the frame hangs for 400 ms; the frame's budget is 120 ms
    body = Phase(2 * MS, [2 * MS, 400 * MS, 2 * MS])
    ctrl, backend, recorder = make({"stem": 2 * MS, "head": 1 * MS, "body": body})
    body.on = True
    with ctrl:
        t0 = time.perf_counter()
        result = ctrl.run(raw_frame, 120 * MS)
        returned = time.perf_counter() - t0
        assert result.status is StopReason.DEADLINE
        assert result.exit_index == 1            # the stuck step's exit never arrives
        assert returned < 0.3                    # long before the stuck step ends (400 ms)
        assert result.delivered_s <= result.deadline_s + 5 * MS
        # the late step finishes later and is dropped; the next frame waits for the worker, then runs
        nxt = ctrl.run(raw_frame, 1.0)
        assert nxt.status is StopReason.FINAL and nxt.exit_index == 2
        ctrl.flush()
        assert ctrl.stats().late_steps == 1
        assert [f.frame_id for f in recorder.finals] == [result.frame_id, nxt.frame_id]


def test_callbacks_run_on_the_delivery_thread(raw_frame):
    ctrl, _, recorder = make({"stem": 1 * MS, "body": 1 * MS, "head": 0.5 * MS})
    with ctrl:
        ctrl.run(raw_frame, 0.5)
        ctrl.flush()
    assert recorder.threads == {"edge-anytime-delivery"}


def test_interrupt_from_another_thread_delivers_immediately(raw_frame):
    body = Phase(5 * MS, [300 * MS])
    ctrl, _, recorder = make({"stem": 5 * MS, "head": 1 * MS, "body": body})
    body.on = True
    with ctrl:
        timer = threading.Timer(0.05, ctrl.interrupt)
        timer.start()
        t0 = time.perf_counter()
        result = ctrl.run(raw_frame, 2.0)
        assert time.perf_counter() - t0 < 0.25
        assert result.status is StopReason.INTERRUPTED and result.exit_index == 0
        timer.join()


def test_submit_returns_at_once_and_ticket_gives_the_result(raw_frame):
    ctrl, _, recorder = make({"stem": 10 * MS, "body": 10 * MS, "head": 1 * MS})
    with ctrl:
        t0 = time.perf_counter()
        tickets = [ctrl.submit(raw_frame, 1.0) for _ in range(3)]
        assert time.perf_counter() - t0 < 0.02
        results = [t.result(timeout=2.0) for t in tickets]
        assert [r.status for r in results] == [StopReason.FINAL] * 3
        ctrl.flush()
        assert len(recorder.finals) == 3


def test_queued_frame_whose_deadline_passes_gets_no_result_on_time(raw_frame):
    ctrl, _, recorder = make({"stem": 30 * MS, "body": 30 * MS, "head": 1 * MS})
    with ctrl:
        first = ctrl.submit(raw_frame, 1.0)
        second = ctrl.submit(raw_frame, 20 * MS)     # waits behind the first frame (~95 ms)
        late = second.result(timeout=1.0)
        assert late.status is StopReason.NO_RESULT
        assert late.delivered_s <= late.deadline_s + 5 * MS
        assert first.result(timeout=2.0).status is StopReason.FINAL
        ctrl.flush()
        assert ctrl.stats().missed_deadlines == 1


def test_backend_fault_on_real_clock_is_reported_on_the_delivery_thread(raw_frame):
    calls = []
    faults = {"head": lambda call: RuntimeError("bad delegate") if calls and len(calls.append(1) or calls) == 3
              else None}
    ctrl, _, recorder = make({"stem": 1 * MS, "body": 1 * MS, "head": 1 * MS}, faults=faults)
    calls.append(1)
    with ctrl:
        first = ctrl.run(raw_frame, 1.0)       # after warm-up: head call 1 ok (exit 0), call 2 raises
        assert first.status is StopReason.DEGRADED and first.exit_index == 0
        assert ctrl.run(raw_frame, 1.0).status is StopReason.FINAL
        ctrl.flush()
    assert "backend" in recorder.errors


def test_many_frames_all_get_a_result_by_the_deadline(raw_frame):
    ctrl, _, recorder = make({"stem": 0.2 * MS, "body": 0.2 * MS, "head": 0.1 * MS})
    with ctrl:
        results = [ctrl.run(raw_frame, budget) for budget in np.linspace(5 * MS, 15 * MS, 40)]
    assert all(r.best is not None for r in results)
    lateness = max(r.lateness_s for r in results)
    assert lateness <= 2 * MS
