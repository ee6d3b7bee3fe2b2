"""Cached (vectorised) replay == live Controller replay, frame by frame; closed-form expected accuracy;
failing frames; the prediction cache; baselines."""

from __future__ import annotations

import numpy as np
import pytest

from edge_anytime import ControllerOptions
from simulator.baselines import baseline_outcomes
from simulator.budgets import parse_budget
from simulator.cache import CacheError, PredictionCache
from simulator.fast import FROZEN, ReplaySetup, exit_predictions, replay_fast
from simulator.live import replay_live_sim
from simulator.metrics import STATUS, compute_metrics
from simulator.sweep import SweepConfig, compare_outcomes, run_sweep
from simulator.synthetic import synthetic_cache, synthetic_profile
from simulator.timing import draw_latencies

MS = 1e-3


@pytest.fixture(scope="module")
def noisy():
    """600 frames, latencies spread +-50 %, two frames failing mid-frame and two rejected as corrupt."""
    profile = synthetic_profile(spread=0.5, seed=1)
    cache = synthetic_cache(frames=600, fail=(5, 17, 300), reject=(3, 40), profiles=[profile], coarse=3)
    return cache, profile


CASES = [
    ("anytime", "uniform:0.5:9", 1.0, ControllerOptions(estimator=FROZEN, warmup_runs=0)),
    ("dispatch", "uniform:0.5:9", 1.0, ControllerOptions(estimator=FROZEN, warmup_runs=0)),   # hand-off delay
    ("apriori", "uniform:0.5:9", 1.0, ControllerOptions(mode="apriori", estimator=FROZEN, warmup_runs=0)),
    ("anytime", "large:1:8", 1.6, ControllerOptions(estimator=FROZEN, warmup_runs=0)),      # overruns -> watchdog
    ("apriori", "normal:4:2", 1.6, ControllerOptions(mode="apriori", estimator=FROZEN, warmup_runs=0)),
    ("anytime", "uniform:1:9", 1.0, ControllerOptions(estimator=FROZEN, warmup_runs=0, confidence_target=0.8,
                                                      coarse_below=0.7)),
    ("anytime", "constant:9", 1.0, ControllerOptions(estimator=FROZEN, warmup_runs=0, margin_s=0.0,
                                                     watchdog_guard_s=0.0)),
]


@pytest.mark.parametrize("mode, spec, scale, options", CASES)
def test_cached_replay_equals_live_controller_frame_by_frame(noisy, mode, spec, scale, options):
    cache, profile = noisy
    setup = ReplaySetup.create(cache.program, profile, cache.precisions, options)
    preds = exit_predictions(cache, options.coarse_below)
    draws = draw_latencies(setup.plan, profile, cache.precisions, len(cache), seed=4, scale=scale)
    budgets = parse_budget(spec).sample(len(cache), seed=2, timestamps=cache.timestamps)
    dispatch = 0.7 * MS if mode == "dispatch" else 0.0
    fast = replay_fast(setup, preds, budgets, cache.timestamps, draws, cache.valid, cache.bad_steps, None, dispatch)
    live, results = replay_live_sim(cache, setup, profile, budgets, draws, dispatch_s=dispatch)
    assert compare_outcomes(fast, live) == []
    np.testing.assert_array_equal(fast.delivered_s, live.delivered_s)   # same clock arithmetic, bit for bit
    np.testing.assert_array_equal(fast.late_steps, live.late_steps)
    np.testing.assert_array_equal(fast.error, live.error)
    np.testing.assert_array_equal(fast.coarse_level, live.coarse_level)
    statuses = set(fast.status_names())
    assert "no_result" in statuses and len(statuses) >= 2
    if scale > 1 and mode == "anytime":
        assert fast.late_steps.sum() > 0          # the watchdog path was exercised
    if options.confidence_target is not None:
        assert "confidence" in statuses
    assert compute_metrics(fast, cache.labels, 3).to_json() == compute_metrics(live, cache.labels, 3).to_json()


def test_ranked_exits_match_live_replay():
    """EANN-like ranks (exit 1 worse on validation than exit 0): both replays keep exit 0's answer."""
    profile = synthetic_profile(spread=0.3)
    cache = synthetic_cache(frames=300, val_accuracy=(0.8, 0.7, 0.9), profiles=[profile])
    setup = ReplaySetup.create(cache.program, profile, cache.precisions)
    draws = draw_latencies(setup.plan, profile, cache.precisions, len(cache), seed=0)
    budgets = parse_budget("uniform:1:9").sample(len(cache))
    fast = replay_fast(setup, exit_predictions(cache), budgets, cache.timestamps, draws)
    live, _ = replay_live_sim(cache, setup, profile, budgets, draws)
    assert compare_outcomes(fast, live) == [] and 1 not in set(fast.exit.tolist())


def test_expected_accuracy_equals_closed_form_for_fixed_latencies():
    """Fixed step latencies L: exit k is reached iff budget >= T_k = (time spent before segment k)
    + tail(segment k) + margin (segment 0: its typical latency), so E[acc] = sum_k P(T_k <= b < T_k+1) * acc_k."""
    latency = {"stem": 1.0, "body": 0.8, "head": 0.2}
    profile = synthetic_profile(latency, spread=0.0)
    cache = synthetic_cache(frames=6000, accuracies=(0.4, 0.7, 0.95), profiles=[profile])
    options = ControllerOptions(estimator=FROZEN, warmup_runs=0, plan_frames=False)   # segment admission only
    setup = ReplaySetup.create(cache.program, profile, cache.precisions, options)
    model = parse_budget("uniform:1:7")
    scenario = run_sweep(cache, setup, profile, [model], SweepConfig(show_progress=False))[0]
    preds = exit_predictions(cache)
    acc = [(preds.label[:, k] == cache.labels).mean() for k in range(3)]
    spent, thresholds = 0.0, []
    for k, graphs in enumerate((("stem", "head"), ("body", "head"), ("body", "head"))):
        # no spread: typical = tail = the segment's latency; the margin is 0 on the simulated clock
        thresholds.append(spent + sum(latency[g] for g in graphs))
        spent += sum(latency[g] for g in graphs)
    cdf = [model.cdf_ms(t) for t in thresholds] + [1.0]
    closed = sum((cdf[k + 1] - cdf[k]) * acc[k] for k in range(3))
    assert scenario.metrics["anytime"].accuracy == pytest.approx(closed, abs=0.02)
    # and exactly, with the empirical budget bands of these frames
    b = scenario.budgets_s / MS
    bands = np.searchsorted(np.array(thresholds), b, side="right") - 1
    exact = np.mean([bands[i] >= 0 and preds.label[i, bands[i]] == cache.labels[i] for i in range(len(b))])
    assert scenario.metrics["anytime"].accuracy == pytest.approx(exact, abs=1e-12)
    assert scenario.metrics["anytime"].miss_rate == pytest.approx(cdf[0], abs=0.02)


def test_failing_frames_are_counted_and_the_replay_goes_on(noisy):
    cache, profile = noisy
    assert (~cache.valid).sum() == 2 and "frame rejected" in cache.errors[3]
    assert cache.bad_steps[5].any() and "synthetic backend fault" in cache.errors[5]
    setup = ReplaySetup.create(cache.program, profile, cache.precisions)
    scenario = run_sweep(cache, setup, profile, [parse_budget("constant:9")], SweepConfig(show_progress=False))[0]
    out = scenario.outcomes["anytime"]
    m = scenario.metrics["anytime"]
    assert m.errors == 5 and m.missed == 0                # 2 rejected + 3 degraded, none counted as a miss
    assert out.status[5] == STATUS["degraded"] and out.exit[5] == 0   # exit 0 came before the fault
    assert out.status[3] == STATUS["no_result"] and out.error[3]
    assert m.exit_histogram[2] == 595                      # every other frame ran to the last exit


def test_cache_roundtrip_and_key_check(tmp_path, noisy):
    cache, _ = noisy
    path = cache.save(tmp_path / "c.npz")
    loaded = PredictionCache.load(path, expect_key=cache.key)
    assert np.array_equal(loaded.logits, cache.logits, equal_nan=True)
    assert list(loaded.errors) == list(cache.errors) and loaded.program == cache.program
    assert loaded.profiles.keys() == cache.profiles.keys()
    with pytest.raises(CacheError, match="another bundle or stream"):
        PredictionCache.load(path, expect_key="other")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CacheError, match="damaged"):
        PredictionCache.load(broken)
    assert len(loaded.subset(10)) == 10


def test_baselines_follow_their_definitions():
    profile = synthetic_profile({"stem": 1.0, "body": 1.0, "head": 0.2})
    cache = synthetic_cache(frames=500, accuracies=(0.5, 0.7, 0.9), profiles=[profile])
    setup = ReplaySetup.create(cache.program, profile, cache.precisions)
    preds = exit_predictions(cache)
    draws = draw_latencies(setup.plan, profile, cache.precisions, len(cache))
    budgets = np.full(len(cache), 2.5 * MS)
    outs, best = baseline_outcomes(setup, preds, budgets, cache.timestamps, draws, threshold=0.99)
    # static exit 1 needs stem + body + head = 2.2 ms <= 2.5 ms; exit 2 needs 3.2 ms
    assert outs["static:1"].on_time.all() and not outs["static:2"].on_time.any()
    # best static for the worst case uses the slice's tail latency + margin (0 on the simulated clock)
    assert setup.margin_s == 0 and setup.slice_tail[1] <= 2.5 * MS < setup.slice_tail[2]
    assert best == 1 and outs["best-static"] is outs["static:1"]
    # threshold 0.99 is rarely reached before the last exit -> delivered at 3.6 ms, after the 2.5 ms deadline
    thr = compute_metrics(outs["threshold:0.99"], cache.labels, 3)
    assert thr.miss_rate > 0.5 and thr.missed == int((~outs["threshold:0.99"].on_time).sum())


# ----------------------------------------------------------------------------- the precision fallback
@pytest.fixture(scope="module")
def with_fallback():
    """The noisy stream with int8 graphs twice as fast for exits 0 and 1 (agreement 99.5% and 99%), whose
    predictions differ from fp32's on some frames."""
    from simulator.fallback import FallbackReplay

    profile = synthetic_profile(spread=0.5, seed=1, precisions={"fp32": 1.0, "int8": 0.5})
    cache = synthetic_cache(frames=600, fail=(5, 17, 300), reject=(3, 40), profiles=[profile], coarse=3)
    at_int8 = synthetic_cache(frames=600, reject=(3, 40), profiles=[profile], coarse=3, accuracies=(0.45, 0.7, 0.9))
    return cache, profile, FallbackReplay("int8", {0: 0.995, 1: 0.99}, at_int8, exit_predictions(at_int8))


@pytest.mark.parametrize("mode", ["anytime", "apriori"])
def test_the_cached_replay_plans_fallback_slices_as_the_live_controller_does(with_fallback, mode):
    cache, profile, fallback = with_fallback
    options = ControllerOptions(mode=mode, estimator=FROZEN, warmup_runs=0)
    setup = ReplaySetup.create(cache.program, profile, cache.precisions, options, fallback=fallback)
    assert [k for k, _ in setup.fallback_values] == [1, 0] and setup.fallback_samples[0].size
    drawn = fallback.drawn(setup.plan, profile, seed=4)
    draws = draw_latencies(setup.plan, profile, cache.precisions, len(cache), seed=4)
    budgets = parse_budget("uniform:0.4:4").sample(len(cache), seed=2, timestamps=cache.timestamps)
    preds = exit_predictions(cache)
    fast = replay_fast(setup, preds, budgets, cache.timestamps, draws, cache.valid, cache.bad_steps, fallback=drawn)
    live, results = replay_live_sim(cache, setup, profile, budgets, draws, fallback=drawn)
    assert compare_outcomes(fast, live) == []          # exit, status, label and precision, frame by frame
    np.testing.assert_array_equal(fast.delivered_s, live.delivered_s)
    np.testing.assert_array_equal(fast.fallback, [r.fallback for r in results])
    assert {int(e) for e in fast.exit[fast.fallback]} == {0, 1}   # both fallback exits answer some frames
    # its labels are the int8 graphs' (they differ from fp32's on some of those frames)
    rows = np.flatnonzero(fast.fallback)
    assert (fast.label[rows] == fallback.preds.label[rows, fast.exit[rows]]).all()
    assert (fast.label[rows] != preds.label[rows, fast.exit[rows]]).any()
    # the same replay without the fallback: fewer results by the deadline at these budgets
    plain = ReplaySetup.create(cache.program, profile, cache.precisions, options)
    without = replay_fast(plain, preds, budgets, cache.timestamps, draws, cache.valid, cache.bad_steps)
    assert fast.on_time.sum() > without.on_time.sum() + 30 and not without.fallback.any()
    with pytest.raises(ValueError, match="fallback=FallbackReplay"):
        replay_fast(setup, preds, budgets, cache.timestamps, draws)
