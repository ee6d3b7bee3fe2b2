"""Priming (priming.py): a dry frame before a served one leaves no trace, gives way to a served frame, and the
primer runs it by itself only for calls that come at a steady period; latency shifts reach seldom-run slices."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from edge_anytime import Callbacks, Controller, ControllerOptions
from edge_anytime.clock import SimulatedClock
from edge_anytime.priming import MIN_GAPS, ArrivalTracker
from tests.conftest import DEMO_BUNDLE, tiny_program

needs_demo = pytest.mark.skipif(not (DEMO_BUNDLE / "manifest.json").is_file(), reason="demo bundle not built")


class Recorder(Callbacks):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_result(self, r):
        self.calls.append("result")

    def on_final(self, r):
        self.calls.append("final")

    def on_miss(self, r):
        self.calls.append("miss")

    def on_error(self, error, context):
        self.calls.append(f"error:{context}")


def test_the_tracker_forecasts_only_steady_calls_of_a_few_milliseconds_or_more():
    steady, jittery, fast = ArrivalTracker(), ArrivalTracker(), ArrivalTracker()
    rng = np.random.default_rng(0)
    for k in range(MIN_GAPS + 1):
        steady.observe(0.010 * k + rng.uniform(0, 2e-4))
        jittery.observe(0.010 * k + rng.uniform(0, 5e-3))
        fast.observe(0.001 * k)
    assert steady.forecast(now=0.081) is not None
    next_call, period, jitter = steady.forecast(now=0.081)
    assert abs(period - 0.010) < 3e-4 and abs(next_call - 0.090) < 5e-4 and jitter < 4e-4
    assert jittery.forecast(now=0.081) is None          # gaps 5-15 ms: not a period to prime for
    assert fast.forecast(now=0.0081) is None            # 1 ms apart: the caches stay warm anyway
    assert steady.forecast(now=0.200) is None           # the calls stopped
    assert ArrivalTracker().forecast(now=0.0) is None   # nothing seen yet


@needs_demo
@pytest.mark.parametrize("threaded", [False, True])
def test_a_dry_frame_leaves_no_trace(threaded, monkeypatch):
    recorder = Recorder()
    options = ControllerOptions(prime="off", threaded=threaded)
    with Controller.from_bundle(DEMO_BUNDLE, options=options, callbacks=recorder) as ctrl:
        frame = np.full((32, 32, 3), 90, np.uint8)
        for budget in (0.01, 0.0003, 0.01):
            ctrl.run(frame, budget)
        ctrl.flush()
        ctrl.latency_estimates()                  # applies whatever samples wait
        samples = [e.samples().tolist() for e in ctrl.policy._estimators()]
        stats, state = ctrl.stats(), ctrl.policy.admission_state()
        calls = list(recorder.calls)
        ran = []
        for step in ctrl.interpreter.steps:      # the primary graphs a dry frame at a loose budget runs
            original = step.run
            monkeypatch.setattr(step, "run", lambda inputs, original=original: ran.append(1) or original(inputs))
        for budget in (None, 1e-5, 3e-4, 0.01):  # the last frame's budget, too tight for anything, tight, loose
            assert ctrl.prime(budget) > 0.0
        ctrl.flush()
        assert ran, "a dry frame at a loose budget runs the primary graphs"
        assert ctrl.stats() == dataclasses.replace(stats, dry_frames=stats.dry_frames + 4)
        assert ctrl.policy.admission_state() == state     # (reading estimates would release a burst guard)
        ctrl.latency_estimates()
        assert [e.samples().tolist() for e in ctrl.policy._estimators()] == samples
        assert recorder.calls == calls
        with pytest.raises(ValueError, match="budget_s"):
            ctrl.prime(float("nan"))
        result = ctrl.run(frame, 0.01)
        assert result.best is not None and ctrl.stats().frames == stats.frames + 1


@needs_demo
def test_a_dry_frame_gives_way_to_a_served_frame_at_the_next_step():
    with Controller.from_bundle(DEMO_BUNDLE, options=ControllerOptions(prime="off", fallback_precision=None)) as ctrl:
        ran, arrive_during = [], []

        def spy(inputs, original):
            ran.append(1)
            if arrive_during:                     # a served frame comes in while this step runs
                ctrl._arrivals.observe(ctrl.clock.now())
            return original(inputs)

        for step in ctrl.interpreter.steps:
            step.run = lambda inputs, original=step.run: spy(inputs, original)
        ctrl.prime(1.0)
        assert len(ran) >= 2                      # up to the first exit: a segment and its head
        ran.clear()
        arrive_during.append(True)
        ctrl.prime(1.0)
        assert len(ran) == 1                      # it stopped after the step in flight
        ran.clear()
        ctrl._arrivals.observe(ctrl.clock.now() + 60.0)   # a frame waits already: no step at all
        ctrl.prime(1.0)
        assert ran == []


def test_a_simulated_clock_is_never_primed():
    from edge_anytime.backends.fake import FakeBackend
    from tests.conftest import tiny_model

    clock = SimulatedClock()
    ctrl = Controller.from_program(tiny_program(), tiny_model(), FakeBackend(clock=clock), clock=clock)
    before = clock.now()
    assert ctrl.prime(0.01) == 0.0 and clock.now() == before and ctrl._primer is None
    ctrl.close()


@needs_demo
def test_the_primer_runs_dry_frames_for_steady_calls_only_and_stops_with_the_controller():
    frame = np.full((32, 32, 3), 90, np.uint8)
    with Controller.from_bundle(DEMO_BUNDLE) as ctrl:
        for _ in range(40):                       # back to back: the caches are warm, nothing to prime
            ctrl.run(frame, 0.01)
        time.sleep(0.05)
        assert ctrl._primer.primed == 0
        next_call = time.perf_counter()
        steady = 100   # every 6 ms for 0.6 s: the primer looks for steady calls every IDLE_POLL_S (0.25 s)
        for _ in range(steady):                   # every 6 ms, as a loop idling between frames
            next_call += 0.006
            time.sleep(max(0.0, next_call - time.perf_counter()))
            assert ctrl.run(frame, 0.01).best is not None
        primed = ctrl._primer.primed
        assert primed >= 10, (primed, f"dry frames skipped with the process busy: {ctrl._primer.skipped_busy}")
        stats = ctrl.stats()
        assert stats.frames == 40 + steady and stats.dry_frames == primed   # dry frames are not served frames
        assert stats.frames_behind_dry_frames <= 2                 # a steady loop's calls come after them
        thread = ctrl._primer._thread
    assert not thread.is_alive()
    with Controller.from_bundle(DEMO_BUNDLE, options=ControllerOptions(prime="off")) as ctrl:
        assert ctrl._primer is None and not any(t.name == "edge-anytime-primer" and t.is_alive() and t is thread
                                                for t in threading.enumerate())


@pytest.mark.parametrize("field, value", [("prime", "sometimes"), ("prime_lead_s", -1e-3), ("prime_lead_s", 2.0)])
def test_priming_options_are_checked(field, value):
    with pytest.raises(ValueError, match=field):
        ControllerOptions(**{field: value})


def test_a_shifted_reach_brings_its_seldom_run_slice_and_the_fallback_slices_along():
    from edge_anytime.policy import DeadlinePolicy, fallback_key

    program = tiny_program()
    policy = DeadlinePolicy(program, ControllerOptions(), simulated=False, threaded=False,
                            fallbacks={0: 0.995})
    last = len(policy.segments) - 1
    exit_last = policy.segments[last].exit_index
    for position in range(len(policy.segments)):
        for _ in range(300):
            policy.reach_estimators[position].observe(1e-3 * (position + 1))
    for key in policy.slice_estimators:
        for _ in range(300):
            policy.slice_estimators[key].observe(1e-3)
    policy.follow_shifts()
    assert policy.slice_estimators[exit_last].typical() == pytest.approx(1e-3)
    for _ in range(40):                           # the frames got twice as slow: the reach shifts
        policy.reach_estimators[last].observe(2e-3 * (last + 1))
        policy.reach_estimators[0].observe(2e-3)
    assert policy.reach_estimators[last].shifts == 1
    policy.follow_shifts()
    assert policy.slice_estimators[exit_last].typical() == pytest.approx(2e-3, rel=0.05)
    assert policy.slice_estimators[fallback_key(0)].typical() == pytest.approx(2e-3, rel=0.05)
    policy.follow_shifts()                        # followed once, not again
    assert policy.slice_estimators[exit_last].typical() == pytest.approx(2e-3, rel=0.05)


def test_the_module_and_estimator_docstrings_run():
    import doctest

    import edge_anytime.latency
    import edge_anytime.priming

    for module in (edge_anytime.priming, edge_anytime.latency):
        assert doctest.testmod(module).failed == 0
