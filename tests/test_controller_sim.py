"""Controller behaviour on a simulated clock with the fake backend: deterministic, no sleeps."""

from __future__ import annotations

import numpy as np
import pytest

from edge_anytime import Callbacks, Controller, ControllerOptions, EstimatorOptions, SimulatedClock, StopReason
from edge_anytime.backends.fake import FakeBackend
from tests.conftest import tiny_model, tiny_program

MS = 1e-3
EXACT = EstimatorOptions()  # scripted latencies are exact


def depth_outputs(graph, inputs):
    """stem -> ones, body -> x + 1, head -> logits whose confidence in class 1 grows with depth."""
    if graph == "stem":
        return {"y": np.ones((1, 4, 8, 8), np.float32)}
    if graph == "body":
        return {"y": inputs["x"] + 1.0}
    depth = float(inputs["x"].mean())
    return {"logits": np.array([[0.0, 2.0 * depth, 0.0, 0.0]], np.float32)}


class Recorder(Callbacks):
    def __init__(self):
        self.results, self.finals, self.misses, self.errors = [], [], [], []

    def on_result(self, result):
        self.results.append(result)

    def on_final(self, result):
        self.finals.append(result)

    def on_miss(self, result):
        self.misses.append(result)

    def on_error(self, error, context):
        self.errors.append((error, context))


class Phase:
    """A latency script: `warm` seconds during warm-up, then the values of `serving` in turn (last one repeats)."""

    def __init__(self, warm, serving):
        self.warm, self.serving, self.on, self.calls = warm, list(serving), False, 0

    def __call__(self):
        if not self.on:
            return self.warm
        value = self.serving[min(self.calls, len(self.serving) - 1)]
        self.calls += 1
        return value


def make(latency=None, faults=None, options=None, num_exits=3, val_accuracy=None, outputs=depth_outputs):
    clock = SimulatedClock()
    backend = FakeBackend(latency=latency or {"stem": 1 * MS, "body": 1 * MS, "head": 0.2 * MS},
                          outputs=outputs, faults=faults, clock=clock)
    recorder = Recorder()
    options = options or ControllerOptions(warmup_runs=2, margin_s=0.3 * MS, watchdog_guard_s=0.1 * MS, estimator=EXACT)
    ctrl = Controller.from_program(tiny_program(num_exits, val_accuracy=val_accuracy), tiny_model(), backend,
                                   clock=clock, options=options, callbacks=recorder)
    return ctrl, clock, backend, recorder


@pytest.mark.parametrize("budget_ms, exit_index, status", [
    (0.5, None, StopReason.NO_RESULT),     # not even the first segment (1.2 ms + 0.3 margin) fits
    (1.6, 0, StopReason.DEADLINE),         # segment 0 fits, segment 1 does not
    (2.8, 1, StopReason.DEADLINE),
    (3.95, 2, StopReason.FINAL),           # 3.6 ms of steps + 0.3 ms margin
    (50.0, 2, StopReason.FINAL),
])
def test_budget_decides_exit(raw_frame, budget_ms, exit_index, status):
    ctrl, clock, _, recorder = make()
    result = ctrl.run(raw_frame, budget_ms * MS)
    assert result.status is status
    assert result.exit_index == exit_index
    assert result.delivered_s <= result.deadline_s
    assert [r.exit_index for r in recorder.results] == ([] if exit_index is None else list(range(exit_index + 1)))
    assert recorder.finals == [result]
    if exit_index is None:
        assert recorder.misses == [result]
        assert ctrl.stats().missed_deadlines == 1
    else:
        assert result.met_deadline and ctrl.stats().missed_deadlines == 0


def test_refinements_improve_and_elapsed_is_simulated_time(raw_frame):
    ctrl, clock, _, recorder = make()
    start = clock.now()
    result = ctrl.run(raw_frame, 10 * MS)
    confidences = [r.confidence for r in result.exits]
    assert confidences == sorted(confidences) and len(confidences) == 3
    assert [round(r.elapsed_s / MS, 6) for r in result.exits] == [1.2, 2.4, 3.6]
    assert result.steps_run == 6 and result.delivered_s == pytest.approx(start + 3.6 * MS)
    assert result.best.prediction.label == 1 and result.label_name == "class1"


def test_overrunning_step_is_dropped_and_best_result_delivered_at_watchdog_time(raw_frame):
    # warm-up sees 1 ms bodies; then 1 ms in segment 1 and 5 ms in segment 2, which overruns the deadline.
    body = Phase(1 * MS, [1 * MS, 5 * MS, 1 * MS])
    ctrl, clock, _, recorder = make(latency={"stem": 1 * MS, "body": body, "head": 0.2 * MS})
    body.on = True
    result = ctrl.run(raw_frame, 4.0 * MS)
    assert result.status is StopReason.DEADLINE
    assert result.exit_index == 1             # segment 2's body overran: its output is dropped
    assert result.late_steps == 1
    assert result.delivered_s == pytest.approx(result.deadline_s - 0.1 * MS)
    assert ctrl.stats().late_steps == 1 and ctrl.stats().steps_overrun >= 1
    # the controller's clock moved past the deadline (the step really ran that long); next frame is fine
    nxt = ctrl.run(raw_frame, 10 * MS)
    assert nxt.status is StopReason.FINAL


def test_backend_fault_degrades_frame_and_controller_keeps_serving(raw_frame):
    armed = []
    boom = {"body": lambda call: RuntimeError("interpreter exploded") if armed and not armed.pop() else None}
    ctrl, _, _, recorder = make(faults=boom)
    armed.append(False)
    first = ctrl.run(raw_frame, 10 * MS)     # the first body call after warm-up (segment 1) raises
    assert first.status is StopReason.DEGRADED
    assert first.exit_index == 0 and "interpreter exploded" in first.error
    assert any(ctx == "backend" for _, ctx in recorder.errors)
    second = ctrl.run(raw_frame, 10 * MS)
    assert second.status is StopReason.FINAL and second.exit_index == 2
    assert ctrl.stats().degraded == 1 and ctrl.stats().backend_errors == 1


def test_confidence_target_stops_early(raw_frame):
    options = ControllerOptions(warmup_runs=1, confidence_target=0.9, estimator=EXACT)
    ctrl, _, _, _ = make(options=options)
    result = ctrl.run(raw_frame, 50 * MS)
    # exit k logits: 2*(k+1) on class 1 among 4 classes -> p = e^(2k+2)/(e^(2k+2)+3)
    assert result.status is StopReason.CONFIDENCE
    assert result.exit_index == 1 and result.confidence >= 0.9
    assert result.steps_skipped == 2


def test_apriori_runs_only_the_slice_of_the_best_exit_that_fits(raw_frame):
    options = ControllerOptions(mode="apriori", warmup_runs=1, estimator=EXACT)
    ctrl, clock, backend, recorder = make(options=options)
    calls_before = {g: r.calls for g, r in backend.runners.items()}
    result = ctrl.run(raw_frame, 3.0 * MS)   # slice of exit 1: stem + body + head = 2.2 ms (+0.3 margin)
    calls = {g: backend.runners[g].calls - calls_before[g] for g in calls_before}
    assert result.exit_index == 1 and result.status is StopReason.FINAL
    assert calls == {"stem": 1, "body": 1, "head": 1}
    assert [r.exit_index for r in recorder.results] == [1]
    nothing = ctrl.run(raw_frame, 1.0 * MS)
    assert nothing.status is StopReason.NO_RESULT and nothing.steps_run == 0


def test_best_exit_is_chosen_by_validation_accuracy_not_depth(raw_frame):
    # EANN-style: exit 1 is worse on validation than exit 0, so it never replaces it
    ctrl, _, _, _ = make(val_accuracy=(0.8, 0.7, 0.9))
    assert ctrl.run(raw_frame, 2.8 * MS).exit_index == 0
    assert ctrl.run(raw_frame, 50 * MS).exit_index == 2


@pytest.mark.parametrize("frame, budget, message", [
    (np.zeros((9, 9, 3), np.uint8), 10 * MS, "shape"),
    (np.full((8, 8, 3), np.nan, np.float32), 10 * MS, "NaN"),
    (np.zeros((1, 3, 8, 8), np.float64), 10 * MS, "shape"),
    ("not an array", 10 * MS, "numpy array"),
    (None, -1.0, "budget_s"),
    (None, float("nan"), "budget_s"),
    (None, 0.0, "deadline already passed"),
])
def test_bad_input_is_reported_and_next_frame_served(raw_frame, frame, budget, message):
    ctrl, _, _, recorder = make()
    bad = ctrl.run(raw_frame if frame is None else frame, budget)
    assert bad.status is StopReason.NO_RESULT and message in bad.error
    assert recorder.errors and recorder.errors[-1][1] == "frame"
    good = ctrl.run(raw_frame, 10 * MS)
    assert good.status is StopReason.FINAL
    assert ctrl.stats().rejected_frames == 1 and ctrl.stats().missed_deadlines == 0


def test_deadline_in_the_past_and_absolute_deadlines(raw_frame):
    ctrl, clock, _, _ = make()
    past = ctrl.run(raw_frame, deadline_s=clock.now() - 1 * MS)
    assert past.status is StopReason.NO_RESULT and "already passed" in past.error
    ok = ctrl.run(raw_frame, deadline_s=clock.now() + 10 * MS)
    assert ok.status is StopReason.FINAL
    both = ctrl.run(raw_frame, 1 * MS, deadline_s=clock.now() + 1)
    assert "exactly one" in both.error


def test_callback_exception_is_counted_and_never_stops_the_loop(raw_frame):
    class Broken(Callbacks):
        def on_result(self, result):
            raise ValueError("user bug")

    ctrl, _, _, recorder = make()
    ctrl.add_callbacks(Broken())
    for _ in range(3):
        assert ctrl.run(raw_frame, 10 * MS).status is StopReason.FINAL
    assert ctrl.stats().callback_errors == 9
    assert len(recorder.finals) == 3


def test_stream_yields_one_result_per_frame_with_per_frame_budgets(raw_frame):
    ctrl, _, _, _ = make()
    budgets = [0.5 * MS, 1.6 * MS, 50 * MS]
    results = list(ctrl.stream([raw_frame] * 3, budget_s=budgets))
    assert [r.exit_index for r in results] == [None, 0, 2]
    assert [r.frame_id for r in results] == [0, 1, 2]


def test_preprocessed_tensor_is_accepted(raw_frame):
    ctrl, _, _, _ = make()
    tensor = np.zeros((1, 3, 8, 8), np.float32)
    assert ctrl.run(tensor, 10 * MS).status is StopReason.FINAL


def test_online_latency_update_tightens_admission(raw_frame):
    # warm-up sees 1 ms bodies; then bodies take 2 ms: the monitor learns and admits fewer steps
    body = Phase(1 * MS, [2 * MS])
    ctrl, _, _, _ = make(latency={"stem": 1 * MS, "body": body, "head": 0.2 * MS})
    body.on = True
    before = ctrl.latency_estimates()["segment1.tail"]
    assert before == pytest.approx(1.2 * MS)
    for _ in range(5):
        ctrl.run(raw_frame, 20 * MS)
    assert ctrl.latency_estimates()["segment1.tail"] == pytest.approx(2.2 * MS)
    result = ctrl.run(raw_frame, 4.0 * MS)   # 1.2 + 2.2 = 3.4 ms + margin fits two exits, not three
    assert result.exit_index == 1 and result.late_steps == 0
