"""The deadline engine: one interpreter, planning, truthful accounting in every mode, online vs frozen replay,
profiles that know their host."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import warnings

import numpy as np
import pytest

from edge_anytime import Callbacks, Controller, ControllerOptions, EstimatorOptions, StopReason
from edge_anytime.backends.base import GraphLoadSpec
from edge_anytime.backends.fake import FakeBackend
from edge_anytime.interpreter import Execution, ProgramInterpreter
from edge_anytime.profile import LatencyProfile, host_fingerprint, host_mismatch, load_profile, matching_profile
from simulator.budgets import parse_budget
from simulator.fast import ReplaySetup, exit_predictions, replay_fast
from simulator.live import replay_live_sim
from simulator.synthetic import synthetic_cache, synthetic_profile
from simulator.timing import draw_latencies
from tests.conftest import tiny_model, tiny_program
from tests.test_controller_sim import Phase, depth_outputs, make

MS = 1e-3


class Recorder(Callbacks):
    def __init__(self, on_result_delay: float = 0.0):
        self.delay, self.threads, self.finals, self.misses = on_result_delay, set(), [], []

    def on_result(self, result):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)

    def on_final(self, result):
        self.finals.append(result)

    def on_miss(self, result):
        self.misses.append(result)


def real_clock(latency, options=None, callbacks=None):
    backend = FakeBackend(latency=latency, outputs=depth_outputs)
    options = options or ControllerOptions(warmup_runs=3, warmup_seconds=0.0)
    return Controller.from_program(tiny_program(3), tiny_model(), backend, options=options, callbacks=callbacks)


# ----------------------------------------------------------------------------- the interpreter
def test_run_all_reports_a_failing_step_and_skips_what_needs_its_output():
    program = tiny_program(3)
    backend = FakeBackend(faults={"body": lambda call: RuntimeError("boom") if call == 0 else None})
    runners = {g: backend.load_graph(GraphLoadSpec(sig)) for g, sig in program.graphs.items()}
    failed = []
    env = ProgramInterpreter(program, runners).run_all(np.zeros((1, 3, 8, 8), np.float32),
                                                        on_error=lambda step, exc: failed.append(step.name))
    assert failed == ["body1", "head1", "body2", "head2"]       # body1 raised; the rest lost their input
    assert "logits0" in env and "logits1" not in env


class RaisingHooks:
    def __init__(self, where):
        self.where = where

    def admit(self, segment, now):
        if self.where == "admit" and segment.position == 1:
            raise ValueError("admission bug")
        return True

    def observe(self, step, started, ended):
        return True

    def publish(self, segment, env, started, ended):
        if self.where == "publish":
            raise ZeroDivisionError("publication bug")
        return True


@pytest.mark.parametrize("where, expected", [("admit", "admit"), ("publish", "publish")])
def test_execute_contains_every_error_of_a_step_or_hook_in_one_place(where, expected):
    program = tiny_program(3)
    backend = FakeBackend()
    interpreter = ProgramInterpreter(program, {g: backend.load_graph(GraphLoadSpec(s)) for g, s in program.graphs.items()})
    out = interpreter.execute(np.zeros((1, 3, 8, 8), np.float32), interpreter.segments, RaisingHooks(where),
                              time.perf_counter)
    assert isinstance(out, Execution) and out.stopped == "error" and out.where == expected


# ----------------------------------------------------------------------------- planning
def test_frame_planning_skips_a_head_whose_result_would_be_superseded(raw_frame):
    # exit 1's anytime prefix is stem + head + body + head = 2.4 ms; its slice (no head 0) 2.2 ms.
    options = ControllerOptions(warmup_runs=2, margin_s=0.0, watchdog_guard_s=0.0)
    ctrl, _, backend, recorder = make(options=options, val_accuracy=(0.3, 0.9, 0.95))
    result = ctrl.run(raw_frame, 2.3 * MS)
    assert result.exit_index == 1 and result.met_deadline
    assert [r.exit_index for r in recorder.results] == [1]            # head 0 never ran
    unplanned, _, _, _ = make(options=dataclasses.replace(options, plan_frames=False), val_accuracy=(0.3, 0.9, 0.95))
    assert unplanned.run(raw_frame, 2.3 * MS).exit_index == 0         # without planning: exit 0 only


# ----------------------------------------------------------------------------- truthful accounting
def test_inline_run_that_returns_late_is_reported_as_late(raw_frame):
    body = Phase(1 * MS, [1 * MS, 60 * MS, 1 * MS])                   # the second body call of the frame stalls
    recorder = Recorder()
    ctrl = real_clock({"stem": 1 * MS, "head": 0.2 * MS, "body": body}, callbacks=recorder)
    body.on = True
    with ctrl:
        t0 = time.perf_counter()
        result = ctrl.run(raw_frame, 20 * MS)
        returned = time.perf_counter() - t0
        ctrl.flush()
    assert returned > 0.05                                          # inline: the stalled step is waited for
    assert not result.met_deadline and result.lateness_s > 0.03
    assert result.delivered_s >= result.start_s + 0.05
    assert ctrl.stats().missed_deadlines == 1 and recorder.misses == [result]


def test_threaded_run_returns_by_the_deadline_while_a_step_is_stuck(raw_frame):
    body = Phase(1 * MS, [1 * MS, 300 * MS, 1 * MS])
    options = ControllerOptions(warmup_runs=3, warmup_seconds=0.0, threaded=True)
    ctrl = real_clock({"stem": 1 * MS, "head": 0.2 * MS, "body": body}, options)
    body.on = True
    with ctrl:
        t0 = time.perf_counter()
        result = ctrl.run(raw_frame, 40 * MS)
        assert time.perf_counter() - t0 < 0.2
        assert result.exit_index == 1 and result.status is StopReason.DEADLINE
        assert result.delivered_s <= result.deadline_s + 5 * MS


@pytest.mark.parametrize("threaded", [False, True])
def test_the_delivery_path_is_measured_to_the_results_stamp(raw_frame, threaded):
    # the margin reserves the delivery path: from the last exit to the result leaving run(), assembly and
    # the delivered_s stamp included (measured only to assembly, a first exit's margin ran 3-4 us short);
    # measured after the stamp, the sample reaches the estimator with the next frame's samples
    options = ControllerOptions(warmup_runs=3, warmup_seconds=0.0, threaded=threaded)
    ctrl = real_clock({"stem": 0.2 * MS, "head": 0.1 * MS, "body": 0.2 * MS}, options)
    # (less the samples recorded in the frame's spare time, which the margin need not cover: recording.py)
    observed, spent = [], []
    observe = ctrl.policy.delivery.observe
    ctrl.policy.delivery.observe = lambda seconds: (observed.append(seconds), observe(seconds))
    record = ctrl._record_samples
    ctrl._record_samples = lambda left, margin: spent.append(record(left, margin)) or spent[-1]
    with ctrl:
        results = [ctrl.run(raw_frame, 0.5) for _ in range(6)]
    assert all(r.status is StopReason.FINAL for r in results)
    assert all(seconds > 0 for seconds in spent)      # half a second to spare: every frame recorded its samples
    expected = [r.delivered_s - (r.start_s + r.exits[-1].elapsed_s) - s for r, s in zip(results[:-1], spent)]
    assert observed == pytest.approx(expected, abs=1e-9)


def test_callbacks_run_on_the_delivery_thread_inline_too_and_never_delay_frames(raw_frame):
    recorder = Recorder(on_result_delay=3 * MS)                     # a slow user callback
    ctrl = real_clock({"stem": 0.5 * MS, "head": 0.1 * MS, "body": 0.5 * MS}, callbacks=recorder)
    with ctrl:
        results = [ctrl.run(raw_frame, 100 * MS) for _ in range(10)]
        ctrl.flush(timeout=2.0)
    assert recorder.threads == {"edge-anytime-delivery"}
    assert all(r.exit_index == 2 for r in results)
    # 3 callbacks x 3 ms per frame run elsewhere: a frame's own time stays that of its steps (~1.7 ms)
    assert float(np.median([r.delivered_s - r.start_s for r in results])) < 6 * MS


def test_frames_interrupted_before_their_first_exit_are_counted(raw_frame):
    stem = Phase(1 * MS, [300 * MS, 1 * MS])
    options = ControllerOptions(warmup_runs=3, warmup_seconds=0.0, threaded=True)
    ctrl = real_clock({"stem": stem, "head": 0.2 * MS, "body": 1 * MS}, options)
    stem.on = True
    with ctrl:
        result = ctrl.run(raw_frame, 30 * MS)
        assert result.status is StopReason.NO_RESULT and result.error is None
        assert ctrl.stats().interrupted_without_result == 1 and ctrl.stats().missed_deadlines == 1


def test_numpy_scalar_budgets_and_non_finite_deadlines(raw_frame):
    ctrl, clock, _, _ = make()
    assert ctrl.run(raw_frame, np.float32(0.01)).status is StopReason.FINAL
    assert ctrl.run(raw_frame, np.float64(0.01)).status is StopReason.FINAL
    for deadline in (float("nan"), float("inf")):
        bad = ctrl.run(raw_frame, deadline_s=deadline)
        assert bad.status is StopReason.NO_RESULT and "deadline_s" in bad.error


# ----------------------------------------------------------------------------- simulator vs interpreter
def test_fast_replay_agrees_with_the_live_controller_whose_estimates_update_online():
    profile = synthetic_profile(spread=0.4, seed=3)
    cache = synthetic_cache(frames=800, profiles=[profile])
    frozen = ReplaySetup.create(cache.program, profile, cache.precisions)
    online = dataclasses.replace(frozen, options=dataclasses.replace(frozen.options, estimator=EstimatorOptions()))
    draws = draw_latencies(frozen.plan, profile, cache.precisions, len(cache), seed=1)
    budgets = parse_budget("uniform:1:8").sample(len(cache), seed=5)
    fast = replay_fast(frozen, exit_predictions(cache), budgets, cache.timestamps, draws)
    live, _ = replay_live_sim(cache, online, profile, budgets, draws)
    agree = float(np.mean(fast.exit == live.exit))
    assert agree >= 0.97, agree
    assert abs(float(np.mean(fast.on_time)) - float(np.mean(live.on_time))) < 0.02


# ----------------------------------------------------------------------------- profiles and hosts
def test_profiles_record_their_host_and_only_a_matching_one_is_used(tmp_path):
    here = LatencyProfile("x86-64", "litert", {"g": {"fp32": (100.0,)}}, fingerprint=host_fingerprint())
    other = dataclasses.replace(here, target="orin", fingerprint={**host_fingerprint(), "cpu": "ARMv8 Cortex-A78AE"})
    old = dataclasses.replace(here, target="old", fingerprint={})
    assert host_mismatch(here, "litert", 1) == ""
    assert "cpu" in host_mismatch(other, "litert", 1) and "fingerprint" in host_mismatch(old, "litert", 1)
    assert "threads" in host_mismatch(here, "litert", 2)
    assert matching_profile([other, old, here], "litert", 1) is here
    assert matching_profile([other, old], "litert", 1) is None
    assert load_profile(here.save(tmp_path)).fingerprint == here.fingerprint


def test_a_profile_from_another_host_warns_when_named(tmp_path):
    from edge_anytime import Bundle
    import shutil

    shutil.copytree("deploy/bundles/gtsrb-resann", tmp_path / "b")
    target = next(p.stem for p in (tmp_path / "b" / "profiles").glob("*.json"))
    path = tmp_path / "b" / "profiles" / f"{target}.json"
    data = json.loads(path.read_text())
    data["fingerprint"] = {**host_fingerprint(), "cpu": "ARMv8 Processor rev 1 (v8l)"}   # measured elsewhere
    path.write_text(json.dumps(data))
    bundle = Bundle.load(tmp_path / "b")
    assert host_mismatch(bundle.profiles[target], "litert", 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Controller.from_bundle(bundle, options=ControllerOptions(profile_target=target, warmup_runs=3)).close()
    assert any("another host" in str(w.message) for w in caught)


def test_every_profiling_path_stores_alike_merging_only_the_same_hosts_precisions(tmp_path):
    from edge_anytime.profiling import store_profile

    here = LatencyProfile("t", "litert", {"g": {"fp32": (100.0,)}}, fingerprint=host_fingerprint())
    store_profile(here, tmp_path)
    int8 = LatencyProfile("t", "litert", {"g": {"int8": (50.0,)}}, fingerprint=host_fingerprint())
    merged = load_profile(store_profile(int8, tmp_path))
    assert set(merged.graphs["g"]) == {"fp32", "int8"}                # same host: earlier precisions kept
    other = LatencyProfile("t", "litert", {"g": {"fp16": (80.0,)}}, fingerprint={**host_fingerprint(), "cpu": "x"})
    replaced = load_profile(store_profile(other, tmp_path))
    assert set(replaced.graphs["g"]) == {"fp16"}                      # another host: replaced, never mixed


def _seeded_policy(seconds: float = 1e-3):
    from edge_anytime.policy import DeadlinePolicy

    program = tiny_program()
    policy = DeadlinePolicy(program, ControllerOptions(), simulated=False, threaded=False)
    for position in range(len(policy.segments)):
        policy.seed_segment(position, [seconds] * 200)
        policy.reach_estimators[position].seed([seconds * (position + 1)] * 200)
    for index in policy.slice_estimators:
        policy.seed_slice(index, [seconds] * 200)
    return policy


def test_a_warm_up_brings_a_profiles_seeds_to_this_hosts_speed_within_limits():
    from edge_anytime.seeding import SEED_SCALE_LIMITS

    n = len(_seeded_policy().segments)
    # the warm-up's serving path is 5% slower than the profile's bare graphs: the seeds follow, and are trusted
    policy = _seeded_policy()
    policy.calibrate_seeds([[1.05e-3] * 40] * n, [[1.05e-3 * (p + 1)] * 40 for p in range(n)],
                           {index: [1.05e-3] * 40 for index in policy.slice_estimators})
    estimates = policy.estimates()
    assert estimates["segment0.typical"] == pytest.approx(1.05e-3)
    assert estimates["seed_scale.segment0"] == pytest.approx(1.05) and estimates["seed_scale.reach1"] == pytest.approx(1.05)
    refusals = 0
    while not policy.segment_estimators[0].refused():
        refusals += 1
    assert refusals >= 63                  # a confirmed profile is not explored after 8 refusals
    # a warm-up on a busy machine, 50x slower: the seeds move by the limit only, and keep the short wait
    busy = _seeded_policy()
    busy.calibrate_seeds([[50e-3] * 40] * n, [[50e-3] * 40] * n, {index: [50e-3] * 40 for index in busy.slice_estimators})
    assert busy.estimates()["segment0.typical"] == pytest.approx(SEED_SCALE_LIMITS[1] * 1e-3)
    refusals = 0
    while not busy.segment_estimators[0].refused():
        refusals += 1
    assert refusals == 7
    # a steady host 2-2.4x slower than the profile's (each warm-up distribution with its seeds' shape): the seeds
    # take the full factors; the same factors with a burst of preemptions in one warm-up, or factors that disagree
    # (one segment stalled 3.5x): the limit, as on a busy machine
    rng = np.random.default_rng(0)

    def warm_up(factors, stalls=0):
        samples = [list(f * 1e-3 * (p + 1) * rng.uniform(1.0, 1.05, 40)) for p, f in enumerate(factors)]
        samples[0][:stalls] = [20e-3] * stalls
        return samples

    slower = [2.0, 2.4, 2.2][:n]
    for factors, stalls, expected in ((slower, 0, slower), (slower, 6, [SEED_SCALE_LIMITS[1]] * n),
                                      ([2.0, 3.5, 2.2][:n], 0, [SEED_SCALE_LIMITS[1]] * n)):
        host = _seeded_policy()
        segments = warm_up(factors, stalls)
        host.calibrate_seeds([[v / (p + 1) for v in s] for p, s in enumerate(segments)], segments, {})
        assert [host.seed_scales[f"reach{p}"] for p in range(n)] == pytest.approx(expected, rel=0.05)
        refusals = 0
        while not host.segment_estimators[0].refused():
            refusals += 1
        assert refusals == (7 if stalls or expected[0] == SEED_SCALE_LIMITS[1] else 63)   # a measured host: trusted
    # too few warm-up samples: nothing to compare, nothing changes
    few = _seeded_policy()
    few.calibrate_seeds([[2e-3] * 2] * n, [[2e-3] * 2] * n, {})
    assert few.estimates()["segment0.typical"] == pytest.approx(1e-3) and few.seed_scales["segment0"] == 1.0


def test_a_profile_seeded_controller_is_calibrated_by_its_warm_up_on_a_real_clock():
    from edge_anytime import Bundle
    from edge_anytime.seeding import HOST_SPEED_AGREE, HOST_SPEED_LIMITS, SEED_SCALE_LIMITS

    bundle = Bundle.load("deploy/bundles/gtsrb-resann")
    target = sorted(bundle.profiles)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # CI may run on another host than the one that measured the profile
        with Controller.from_bundle(bundle, options=ControllerOptions(profile_target=target)) as ctrl:
            estimates = ctrl.latency_estimates()
    scales = {k: v for k, v in estimates.items() if k.startswith("seed_scale.")}
    assert len(scales) == 3 * len(bundle.program.anytime_segments())   # segments, reaches and slices (one per exit)
    values = list(scales.values())
    assert all(SEED_SCALE_LIMITS[0] <= v <= SEED_SCALE_LIMITS[1] for v in values) or (   # a host like the profile's
        HOST_SPEED_LIMITS[0] <= min(values) and max(values) <= HOST_SPEED_LIMITS[1]   # or a steady host of another speed
        and max(values) <= HOST_SPEED_AGREE * min(values))
    with Controller.from_bundle(bundle, options=ControllerOptions(profile_target=None, warmup_runs=5)) as ctrl:
        assert not any(k.startswith("seed_scale.") for k in ctrl.latency_estimates())   # warm-up seeds: no profile


@pytest.mark.parametrize("validate, warmed_dtype", [(True, np.uint8), (False, np.float32)])
def test_warm_up_takes_the_camera_frames_path(monkeypatch, validate, warmed_dtype):
    # warm-up frames go through the preprocessing every camera frame takes (a first frame paid its cold start);
    # a controller told frames arrive preprocessed (validate_frames=False) warms up with the input tensor itself
    from edge_anytime.preprocess import Preprocessor

    seen = []
    original = Preprocessor.__call__
    monkeypatch.setattr(Preprocessor, "__call__", lambda self, frame: (seen.append(frame.dtype), original(self, frame))[1])
    options = ControllerOptions(warmup_runs=4, validate_frames=validate)
    ctrl, _, _, _ = make(options=options)
    assert ctrl.stats().frames == 0                       # warm-up frames are not served frames
    if validate:
        assert seen and set(seen) == {np.dtype(np.uint8)}
    else:
        assert not seen


def test_a_later_warm_up_leaves_online_estimates_alone():
    n = len(_seeded_policy().segments)
    policy = _seeded_policy()
    for _ in range(40):                                   # served: online samples replaced the seeds
        policy.segment_estimators[0].observe(2e-3)
    policy.calibrate_seeds([[1.05e-3] * 40] * n, [[1.05e-3] * 40] * n, {})
    assert policy.seed_scales["segment0"] == 1.0 and policy.estimates()["segment0.typical"] == pytest.approx(2e-3)
    refusals = 0
    while not policy.segment_estimators[0].refused():
        refusals += 1
    assert refusals == 7                                  # not trusted: nothing of the profile is left to trust


def test_a_frame_where_nothing_can_follow_the_first_exit_runs_its_first_segment_alone(raw_frame):
    # segments: 1.2 ms (stem + head) then 1.2 ms (body + head); at 1.6 ms, 0.3 ms of margin, segment 1 cannot
    # follow exit 0 however early it comes: the frame runs segment 0 alone, with no admission check after it,
    # and reports what a refused segment 1 would (status deadline, its steps skipped)
    ctrl, _, _, _ = make()
    checked = []
    admits = ctrl.policy.admits
    ctrl.policy.admits = lambda position, *args: (checked.append(position), admits(position, *args))[1]
    results = [ctrl.run(raw_frame, 1.6 * MS) for _ in range(40)]
    assert all(r.exit_index == 0 and r.status is StopReason.DEADLINE and r.steps_skipped == 4 for r in results)
    # segment 0's admission on every frame; segment 1's only on the frames its exploration is due
    assert checked.count(0) == 40 and checked.count(1) <= 3
    # at a budget where segment 1 may follow, it is checked (and here admitted) as before
    assert ctrl.run(raw_frame, 2.8 * MS).exit_index == 1

