"""Nothing a caller or a backend sends stops the controller or makes it lie (fake backend, both clocks)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge_anytime import Callbacks, Controller, ControllerOptions, StopReason
from edge_anytime.backends.fake import FakeBackend
from tests.conftest import tiny_model, tiny_program
from tests.test_controller_sim import depth_outputs, make

MS = 1e-3


def real_clock(latency=None, outputs=depth_outputs, faults=None, callbacks=None, **options):
    backend = FakeBackend(latency=latency or {"stem": 1 * MS, "body": 1 * MS, "head": 0.2 * MS}, outputs=outputs,
                          faults=faults)
    opts = ControllerOptions(warmup_runs=3, warmup_seconds=0.0, **options)
    return Controller.from_program(tiny_program(3), tiny_model(), backend, options=opts, callbacks=callbacks)


def test_option_values_are_validated_at_construction():
    for bad in ("0.9", 5, -1, 0, True):
        with pytest.raises(ValueError, match="confidence_target"):
            ControllerOptions(confidence_target=bad)
    with pytest.raises(ValueError, match="max_pending"):
        ControllerOptions(max_pending=0)
    with pytest.raises(ValueError, match="margin_s"):
        ControllerOptions(margin_s=float("nan"))


def test_a_bad_per_frame_confidence_target_rejects_that_frame_only(raw_frame):
    ctrl, _, _, recorder = make()
    bad = ctrl.run(raw_frame, 10 * MS, confidence_target="0.9")
    assert bad.status is StopReason.NO_RESULT and "confidence_target" in bad.error
    assert ctrl.run(raw_frame, 10 * MS, confidence_target=np.float32(0.5)).status is StopReason.CONFIDENCE
    assert ctrl.run(raw_frame, 10 * MS).status is StopReason.FINAL


@pytest.mark.parametrize("logits, problem", [
    (np.array([[np.nan, 1.0, 0.0, 0.0]], np.float32), "non-finite"),
    (np.array([[0.0, 1.0, 0.0]], np.float32), "3 values for 4 classes"),
])
def test_bad_logits_invalidate_the_exit_and_results_stay_readable(raw_frame, logits, problem):
    def outputs(graph, inputs):
        if graph == "head" and float(inputs["x"].mean()) >= 3:     # the last exit misbehaves
            return {"logits": logits}
        return depth_outputs(graph, inputs)

    ctrl, _, _, recorder = make(outputs=outputs)
    result = ctrl.run(raw_frame, 50 * MS)
    assert result.status is StopReason.DEGRADED and problem in result.error and "head" in result.error
    assert result.exit_index == 1 and isinstance(result.label, int) and 0 < result.confidence <= 1
    assert ctrl.stats().invalid_exits == 1 and any(ctx == "exit" for _, ctx in recorder.errors)


def test_a_backend_that_omits_an_output_degrades_the_frame_only(raw_frame):
    ctrl, _, _, recorder = make()
    step = ctrl.interpreter.steps[2]                      # segment 1's body step
    real_run = step.run
    step.run = lambda inputs: {}                          # a runner that returns no output port at all
    result = ctrl.run(raw_frame, 50 * MS)
    assert result.status is StopReason.DEGRADED and result.exit_index == 0
    assert "body1" in result.error and "KeyError" in result.error
    assert any(ctx == "backend" for _, ctx in recorder.errors)
    step.run = real_run
    assert ctrl.run(raw_frame, 50 * MS).status is StopReason.FINAL


class Stop(BaseException):
    pass


def test_the_inference_thread_survives_a_base_exception(raw_frame):
    armed = []
    faults = {"body": lambda call: Stop("worker killer") if armed and not armed.pop() else None}
    with real_clock(faults=faults, threaded=True) as ctrl:
        armed.append(False)
        first = ctrl.run(raw_frame, 0.2)
        assert first.status is StopReason.DEGRADED and "worker killer" in first.error
        assert ctrl.run(raw_frame, 0.2).status is StopReason.FINAL


def test_huge_budgets_do_not_kill_the_watchdog(raw_frame):
    with real_clock(threaded=True) as ctrl:
        assert ctrl.submit(raw_frame, 1e10).result(timeout=2.0).status is StopReason.FINAL
        assert ctrl.run(raw_frame, 1e10).status is StopReason.FINAL
        stuck = ctrl.submit(raw_frame, 20 * MS)
        assert stuck.result(timeout=2.0) is not None                  # the watchdog still serves deadlines
        assert ctrl._watchdog._thread.is_alive()


def test_a_submit_flood_stays_bounded_and_every_frame_is_answered_or_refused(raw_frame):
    with real_clock(threaded=True, max_pending=8) as ctrl:
        tickets = [ctrl.submit(raw_frame, 1.0) for _ in range(200)]
        results = [t.result(timeout=10.0) for t in tickets]
        ctrl.flush()
    assert all(r is not None for r in results)
    refused = [r for r in results if r.error and "queue full" in r.error]
    served = [r for r in results if r.status is StopReason.FINAL]
    assert refused and served and len(refused) + len(served) == 200
    assert ctrl.stats().rejected_frames == len(refused)


class CloseFromCallback(Callbacks):
    def __init__(self, ctrl_box):
        self.box, self.error = ctrl_box, None

    def on_final(self, result):
        try:
            self.box[0].close()
        except BaseException as exc:   # noqa: BLE001 - recorded for the assertion
            self.error = exc


def test_close_from_a_callback_is_safe_on_both_clocks(raw_frame):
    box = []
    callbacks = CloseFromCallback(box)
    ctrl, _, _, _ = make()
    ctrl.add_callbacks(callbacks)
    box.append(ctrl)
    ctrl.run(raw_frame, 10 * MS)
    assert callbacks.error is None and ctrl._closed
    with pytest.raises(RuntimeError, match="closed"):
        ctrl.run(raw_frame, 10 * MS)
    box.clear()
    callbacks = CloseFromCallback(box)
    real = real_clock(callbacks=callbacks)
    box.append(real)
    real.run(raw_frame, 0.1)
    for _ in range(100):
        if real._closed:
            break
        time.sleep(0.01)
    assert callbacks.error is None and real._closed


def test_run_from_a_callback_on_the_same_thread_is_refused_not_deadlocked(raw_frame):
    class Reenter(Callbacks):
        def __init__(self):
            self.errors = []

        def on_result(self, result):
            ctrl.run(raw_frame, 10 * MS)

        def on_error(self, error, context):
            self.errors.append((type(error).__name__, context))

    ctrl, _, _, _ = make()
    reenter = Reenter()
    ctrl.add_callbacks(reenter)
    done = []
    worker = threading.Thread(target=lambda: done.append(ctrl.run(raw_frame, 10 * MS)))
    worker.start()
    worker.join(timeout=5.0)
    assert done and done[0].status is StopReason.FINAL
    assert ("RuntimeError", "callback:on_result") in reenter.errors and ctrl.stats().callback_errors >= 3


def test_the_sample_recorder_applies_in_order_survives_errors_and_drains_on_close():
    from edge_anytime.workers import SampleRecorder

    applied, errors = [], []

    def apply(batch):
        if batch == "bad":
            raise ValueError("broken estimate")
        applied.append(batch)

    recorder = SampleRecorder(apply, errors.append, period_s=0.001)
    for batch in (1, 2, "bad", 3):
        recorder.put(batch)
    deadline = time.monotonic() + 2.0
    while len(applied) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert applied == [1, 2, 3] and [str(e) for e in errors] == ["broken estimate"]
    recorder.put(4)
    recorder.close()                  # whatever is still pending is applied before close returns
    assert applied == [1, 2, 3, 4]


def test_latency_samples_of_real_frames_reach_the_estimates_by_flush(raw_frame):
    from tests.conftest import DEMO_BUNDLE

    if not (DEMO_BUNDLE / "manifest.json").is_file():
        pytest.skip("demo bundle not built")
    image = np.zeros((32, 32, 3), np.uint8)
    with Controller.from_bundle(DEMO_BUNDLE, options=ControllerOptions(record_in_background=True)) as ctrl:
        assert ctrl._recorder is not None                     # real clock, inline: recorded in the background
        before = ctrl.policy.segment_estimators[0].online_count
        for _ in range(20):
            ctrl.run(image, 1.0)
        ctrl.flush()
        assert ctrl.policy.segment_estimators[0].online_count == before + 20


def test_a_failure_in_frame_planning_degrades_only_that_frame(raw_frame):
    ctrl, _, _, _ = make(options=ControllerOptions(warmup_runs=2, margin_s=0.3e-3, watchdog_guard_s=0.1e-3))
    original = ctrl.policy.plan_frame
    ctrl.policy.plan_frame = lambda now, limit: 1 / 0
    broken = ctrl.run(raw_frame, 0.05)
    ctrl.policy.plan_frame = original
    assert broken.status is StopReason.NO_RESULT and "plan: ZeroDivisionError" in broken.error
    assert ctrl.run(raw_frame, 0.05).status is StopReason.FINAL and ctrl.stats().backend_errors == 1
