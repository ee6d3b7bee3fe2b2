"""Latency samples recorded in a frame's spare time (recording.py), and a result's label read without its
whole prediction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_anytime import Controller, ControllerOptions, StopReason
from edge_anytime.recording import SampleBacklog
from tests.conftest import DEMO_BUNDLE


class Ticks:
    """A clock that advances `step` seconds per read: each recorded batch costs `step`."""

    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


class Estimator:
    def __init__(self) -> None:
        self.seen = []

    def observe(self, seconds: float) -> None:
        self.seen.append(seconds)


def test_a_batch_waits_for_a_frame_with_time_to_spare_and_goes_oldest_first():
    applied = []
    backlog = SampleBacklog(applied.append, Ticks(1e-6))
    backlog.add("a")
    assert backlog.record(time_left=20e-6, reserve=15e-6) == 0.0   # 5 us to spare, a batch needs 2 x 5 us
    backlog.add("b")
    assert applied == [] and backlog.pending == 2
    spent = backlog.record(time_left=100e-6, reserve=10e-6)
    assert applied == ["a", "b"] and spent > 0 and backlog.pending == 0


def test_only_the_batches_that_fit_are_recorded():
    applied = []
    backlog = SampleBacklog(applied.append, Ticks(10e-6))    # a batch takes 10 us
    backlog.cost = 10e-6
    for name in "abcd":
        backlog.add(name)
    backlog.record(time_left=45e-6, reserve=10e-6)   # 35 us to spare: each batch needs 10 us spent + 2 x 10
    assert applied == ["a", "b"] and backlog.pending == 2


def test_a_late_frame_records_two_batches_and_one_without_deadline_everything():
    applied = []
    backlog = SampleBacklog(applied.append, Ticks(1e-6))
    backlog.cost = 1.0
    for name in "abc":
        backlog.add(name)
    backlog.record(time_left=-1e-6, reserve=1e-5)   # past its deadline already: the result is late anyway
    assert applied == ["a", "b"]
    backlog.add("d")
    backlog.record(time_left=math.inf)
    assert applied == ["a", "b", "c", "d"]


def test_the_backlog_is_bounded_and_counts_what_it_drops():
    applied = []
    backlog = SampleBacklog(applied.append, Ticks(1e-6), max_batches=3)
    for i in range(5):
        backlog.add(i)
    assert backlog.dropped == 2
    backlog.drain()
    assert applied == [2, 3, 4]


def test_stamped_samples_reach_their_estimator_with_the_next_batch_or_a_drain():
    delivery = Estimator()
    backlog = SampleBacklog(lambda batch: None, Ticks(1e-6))
    backlog.add_stamped(delivery, 12e-6)
    backlog.add("frame")
    backlog.record(time_left=0.0)           # no time to spare
    assert delivery.seen == []
    backlog.record(time_left=1.0)
    assert delivery.seen == [12e-6]
    backlog.add_stamped(delivery, 13e-6)
    backlog.drain()
    assert delivery.seen == [12e-6, 13e-6]


def test_the_cost_follows_what_recording_takes():
    backlog = SampleBacklog(lambda batch: None, Ticks(40e-6))
    for _ in range(64):
        backlog.add("x")
        backlog.record(time_left=1.0)
    assert backlog.cost == pytest.approx(40e-6, rel=0.05)


@pytest.mark.skipif(not (DEMO_BUNDLE / "manifest.json").is_file(), reason="demo bundle not built")
def test_estimates_read_after_tight_frames_include_every_waiting_sample():
    frames = np.random.default_rng(0).integers(0, 255, (40, 32, 32, 3), dtype=np.uint8)
    with Controller.from_bundle(DEMO_BUNDLE, options=ControllerOptions(warmup_runs=2)) as ctrl:
        before = ctrl.policy.segment_estimators[0].online_count
        ctrl._backlog.cost = 1.0        # recording never fits: every frame's batch waits (the newest 8 kept)
        for frame in frames:
            ctrl.run(frame, 0.5)
        assert ctrl._backlog.pending >= 8
        ctrl.latency_estimates()         # reading the estimates applies what waits
        assert ctrl._backlog.pending == 0
        assert ctrl.policy.segment_estimators[0].online_count - before == 8
        assert ctrl._backlog.dropped == len(frames) - 8


@pytest.mark.skipif(not (DEMO_BUNDLE / "manifest.json").is_file(), reason="demo bundle not built")
def test_a_results_label_is_its_predictions_label_without_computing_it():
    frames = np.random.default_rng(1).integers(0, 255, (30, 32, 32, 3), dtype=np.uint8)
    with Controller.from_bundle(DEMO_BUNDLE, options=ControllerOptions(warmup_runs=2)) as ctrl:
        for frame in frames:
            result = ctrl.run(frame, 0.5)
            assert result.status is StopReason.FINAL
            label, name = result.label, result.label_name
            assert result.best._prediction is None           # the label alone computed nothing else
            assert label == result.best.prediction.label == result.best.label
            assert name == result.best.prediction.label_name == result.best.label_name
            assert [e.label for e in result.exits] == [e.prediction.label for e in result.exits]
