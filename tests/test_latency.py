"""Latency estimators of the deadline monitor: typical and tail per segment, seeds, bursts, exploration."""

from __future__ import annotations

import numpy as np
import pytest

from edge_anytime import ControllerOptions, EstimatorOptions, StopReason
from edge_anytime.latency import SHIFT_SAMPLES, GaussianEstimator, QuantileEstimator, make_estimator
from tests.test_controller_sim import Phase, make

MS = 1e-3


def test_quantile_estimate_covers_heavy_tail_where_gaussian_does_not():
    rng = np.random.default_rng(1)
    train = 1e-3 * (1 + rng.pareto(3.0, 1000) * 0.2)    # heavy (Pareto) tail
    test = 1e-3 * (1 + rng.pareto(3.0, 200000) * 0.2)
    quantile, gaussian = QuantileEstimator(0.999, window=1000), GaussianEstimator(3.0, window=1000)
    quantile.seed(train)
    gaussian.seed(train)
    miss_q = float(np.mean(test > quantile.tail()))
    miss_g = float(np.mean(test > gaussian.tail()))
    assert miss_q < 0.004                  # close to the 0.1% target from 1000 samples
    assert miss_g > 2 * miss_q             # mean + 3 sigma misses far more often


def test_typical_and_tail_come_from_one_window():
    est = QuantileEstimator(0.99, typical_quantile=0.5, refresh_every=1)
    est.seed(np.arange(1, 101) * MS)
    assert est.typical() == pytest.approx(50 * MS) and est.tail() == pytest.approx(99 * MS)


def test_online_samples_replace_seeds_after_min_online():
    est = QuantileEstimator(0.99, typical_quantile=0.5, min_online=8, refresh_every=1)
    est.seed([10 * MS] * 100)                  # a warm-up on a busy machine
    for _ in range(7):
        est.observe(1 * MS)
    assert est.tail() == pytest.approx(10 * MS)  # seeds still count
    est.observe(1 * MS)
    assert est.tail() == pytest.approx(1 * MS) and est.count == 8


def test_quantiles_are_refreshed_lazily_not_per_sample():
    est = QuantileEstimator(0.99, typical_quantile=0.5, min_online=4, refresh_every=16)
    for _ in range(20):
        est.observe(1 * MS)
    typical = est.typical()
    for _ in range(10):
        est.observe(0.5 * MS)                   # below the tail: no refresh until 16 new samples
    assert est.typical() == typical
    for _ in range(40):
        est.observe(0.5 * MS)
    assert est.typical() < typical


def test_burst_guard_attacks_fast_and_releases_per_check():
    est = QuantileEstimator(0.99, window=1000, burst_release=0.5, min_online=8)
    for _ in range(1000):
        est.observe(1 * MS)
    base = est.tail()
    est.observe(8 * MS)
    assert est.tail() == pytest.approx(8 * MS) or est.tail() == pytest.approx(base)
    est.observe(8 * MS)
    assert est.tail() == pytest.approx(8 * MS)        # two in a row: a burst, the next check sees it
    checks = [est.tail() for _ in range(5)]
    assert checks[0] == pytest.approx(4 * MS) and checks[-1] < 1.2 * MS


def test_the_burst_guard_holds_refinements_not_a_frames_first_segment():
    from edge_anytime.policy import DeadlinePolicy
    from edge_anytime.program import Exit, GraphSignature, Port, Program, Step

    x, y = Port("x", (1, 2)), Port("y", (1, 2))
    program = Program("image", {"g": GraphSignature("g", (x,), (y,))},
                      (Step("s0", "g", {"x": "image"}, {"y": "l0"}), Step("s1", "g", {"x": "l0"}, {"y": "l1"})),
                      (Exit(0, "l0", val_accuracy=0.5), Exit(1, "l1", val_accuracy=0.9)))
    policy = DeadlinePolicy(program, ControllerOptions(), simulated=True, threaded=False)
    for position in (0, 1):
        for _ in range(64):
            policy.segment_estimators[position].observe(1 * MS)
        policy.segment_estimators[position].observe(8 * MS)   # two stalls in a row: a burst
        policy.segment_estimators[position].observe(8 * MS)
    # no result in hand: the samples say 1.5 ms nearly surely suffice, and refusing would give nothing for sure
    assert policy.admits(0, now=0.0, limit=1.5 * MS, best_value=0.0)
    # a refinement would put the result in hand at risk: the guard holds it until the burst level fits
    assert not policy.admits(1, now=0.0, limit=1.5 * MS, best_value=0.5)


def test_threaded_first_segment_reserves_the_guard_not_the_hand_back_tail():
    from edge_anytime.policy import DeadlinePolicy
    from edge_anytime.program import Exit, GraphSignature, Port, Program, Step

    x, y = Port("x", (1, 2)), Port("y", (1, 2))
    program = Program("image", {"g": GraphSignature("g", (x,), (y,))},
                      (Step("s0", "g", {"x": "image"}, {"y": "l0"}),), (Exit(0, "l0", val_accuracy=0.9),))
    threaded = DeadlinePolicy(program, ControllerOptions(threaded=True), simulated=False, threaded=True)
    threaded.delivery.seed([0.05 * MS] * 80 + [1.5 * MS] * 20)   # a loaded host: the hand-back's tail is 1.5 ms
    threaded.wakeup.seed([0.02 * MS] * 100)
    assert threaded.margin() == pytest.approx(1.5 * MS)          # refinements still reserve the hand-back's tail
    assert threaded.first_margin() == pytest.approx(threaded.guard()) == pytest.approx(0.02 * MS)
    limit, first_limit = threaded.frame_limits(10 * MS)
    assert limit == pytest.approx(10 * MS - threaded.margin()) and first_limit == pytest.approx(10 * MS - 0.02 * MS)
    inline = DeadlinePolicy(program, ControllerOptions(), simulated=False, threaded=False)
    inline.delivery.seed([0.01 * MS] * 100)
    assert inline.first_margin() == inline.margin()
    fixed = DeadlinePolicy(program, ControllerOptions(threaded=True, margin_s=0.3 * MS), simulated=False,
                           threaded=True)
    assert fixed.first_margin() == 0.3 * MS                       # an explicit margin is kept everywhere


def test_a_threaded_warm_up_seeds_the_guard_with_the_timers_lateness_plus_the_hand_over():
    from edge_anytime.policy import DeadlinePolicy, WarmupSamples
    from edge_anytime.program import Exit, GraphSignature, Port, Program, Step

    x, y = Port("x", (1, 2)), Port("y", (1, 2))
    program = Program("image", {"g": GraphSignature("g", (x,), (y,))},
                      (Step("s0", "g", {"x": "image"}, {"y": "l0"}),), (Exit(0, "l0", val_accuracy=0.9),))
    policy = DeadlinePolicy(program, ControllerOptions(threaded=True), simulated=False, threaded=True)
    policy.seed_from_warmup(WarmupSamples([[0.1 * MS] * 20], [[0.1 * MS] * 20], {0: [0.1 * MS] * 20},
                                          delivery=[0.03 * MS] * 20, hand_back=[0.05 * MS] * 100,
                                          wake_lateness=[0.02 * MS] * 100, handover=[0.01 * MS, 0.03 * MS]),
                            record=True)
    assert policy.guard() == pytest.approx(0.04 * MS)       # 0.02 late + the median hand-over, 0.02
    assert sorted(policy.delivery.samples()) == pytest.approx(sorted([0.05 * MS] * 100 + [0.03 * MS] * 20))


def test_frozen_estimator_ignores_online_samples():
    est = make_estimator(EstimatorOptions(online=False))
    est.seed([1 * MS] * 10)
    before = est.tail()
    est.observe(50 * MS)
    assert est.tail() == before


def test_seeds_from_a_busy_warm_up_are_explored_and_dropped():
    est = QuantileEstimator(0.99, min_online=4, explore_after=2)
    est.seed([8 * MS] * 10)                      # warm-up on a busy machine
    explored = [est.refused() for _ in range(2)]
    assert explored == [False, True]             # the second refusal in a row explores
    est.observe(1 * MS)                          # ... far faster than the seeds: the next comes sooner
    assert est.refused()
    for _ in range(3):
        est.observe(1 * MS)
    assert est.tail() == pytest.approx(1 * MS)   # min_online measured samples: the seeds are gone


def test_non_finite_samples_are_ignored():
    est = QuantileEstimator(0.99, min_online=2)
    est.seed([1 * MS, float("inf"), float("nan"), -1.0])
    est.observe(float("nan"))
    est.observe(float("inf"))
    assert est.tail() == pytest.approx(1 * MS) and est.count == 1


def test_a_segment_refused_after_a_burst_is_admitted_again(raw_frame):
    # bodies take 1 ms; then two frames see 6 ms bodies (a burst), after which a 4 ms budget would not admit
    # segment 2 while the burst guard holds: it must recover, not starve.
    body = Phase(1 * MS, [1 * MS] * 64 + [6 * MS] * 4 + [1 * MS])
    options = ControllerOptions(warmup_runs=50, margin_s=0.3 * MS, watchdog_guard_s=0.1 * MS)
    ctrl, _, _, _ = make(latency={"stem": 1 * MS, "head": 0.2 * MS, "body": body}, options=options)
    body.on = True
    for _ in range(34):
        assert ctrl.run(raw_frame, 50 * MS).status is StopReason.FINAL
    exits = [ctrl.run(raw_frame, 4.0 * MS).exit_index for _ in range(80)]
    assert exits[0] < 2                       # right after the burst the guard is conservative
    assert exits[-1] == 2                     # ... and releases: the deepest exit fits again


def test_gaussian_estimator_serves_online_and_frozen():
    online = make_estimator(EstimatorOptions(kind="gaussian"))
    online.seed([1 * MS] * 10)
    online.observe(3 * MS)
    online.refused()
    assert online.tail() > 1 * MS
    frozen = make_estimator(EstimatorOptions(kind="gaussian", online=False))
    frozen.seed([1 * MS] * 10)
    frozen.observe(3 * MS)
    assert frozen.tail() == pytest.approx(1 * MS)


def test_a_busy_warm_up_stops_mattering(raw_frame):
    # warm-up on a busy machine: every body took 5 ms; serving, bodies take 1 ms. A 4 ms budget first fits
    # exit 0 only; exploration and online samples bring the deepest exit back within a few dozen frames
    # (those first frames run their first segment alone, first_exit_only, which counts segment 1's refusals
    # so that its explorations keep their schedule).
    body = Phase(5 * MS, [1 * MS])
    options = ControllerOptions(warmup_runs=30, margin_s=0.3 * MS, watchdog_guard_s=0.1 * MS)
    ctrl, _, _, _ = make(latency={"stem": 1 * MS, "head": 0.2 * MS, "body": body}, options=options)
    body.on = True
    exits = [ctrl.run(raw_frame, 4.0 * MS).exit_index for _ in range(60)]
    assert exits[0] == 0 and ctrl.stats().explorations >= 1
    assert exits[-1] == 2 and ctrl.stats().missed_deadlines == 0


@pytest.mark.parametrize("budget_ms, expected", [(2.0, 0), (1.15, None)])
def test_first_segment_runs_whenever_it_can_finish(raw_frame, budget_ms, expected):
    # stem usually takes 1 ms but 1 run in 20 takes 3 ms. With 2 ms, segment 0 (stem + head) fits 19 times
    # in 20: refusing it would mean no result, so it runs. With 1.15 ms it never fits: refused.
    # each warm-up pass calls stem 4 times (the anytime plan and three a-priori slices): one pass in 20 is slow
    latency = {"stem": [3 * MS] + [1 * MS] * 79, "body": 1 * MS, "head": 0.2 * MS}
    options = ControllerOptions(warmup_runs=58, margin_s=0.0, watchdog_guard_s=0.0)
    ctrl, _, _, _ = make(latency=latency, options=options)
    assert ctrl.latency_estimates()["segment0.tail"] == pytest.approx(3.2 * MS)
    result = ctrl.run(raw_frame, budget_ms * MS)
    assert result.exit_index == expected


def test_required_probability_weighs_gain_against_what_an_overrun_loses():
    from edge_anytime.policy import DeadlinePolicy
    from tests.conftest import tiny_program

    program = tiny_program(3, val_accuracy=(0.5, 0.9, 0.95))
    watched = DeadlinePolicy(program, ControllerOptions(), simulated=True, threaded=False)
    inline = DeadlinePolicy(program, ControllerOptions(), simulated=False, threaded=False)
    # with a watchdog an overrun loses nothing of this frame: any segment with a real chance runs
    assert watched.required_probability(0, 0.0) == pytest.approx(0.05)
    assert watched.required_probability(2, 0.9) == pytest.approx(0.05)
    # inline, an overrun makes the current result late: a 5-point refinement must nearly surely fit
    assert inline.required_probability(1, 0.5) == pytest.approx(0.5 / 0.95)   # segment 1 leads on to 0.95
    assert inline.required_probability(2, 0.9) == pytest.approx(0.9 / 0.95)
    # frames arriving back to back: an overrun delays the next frame, as costly as the gain itself
    watched.busy = 1.0
    assert watched.required_probability(1, 0.5) == pytest.approx(0.5)
    assert watched.required_probability(2, 0.95) == float("inf")      # nothing left to gain


def test_a_measured_segment_that_never_fits_is_explored_ever_more_rarely():
    est = QuantileEstimator(0.99, min_online=4, refresh_every=1)
    for _ in range(8):
        est.observe(1 * MS)
    explored = []
    for i in range(2000):
        assert est.fit_probability(0.5 * MS) == 0.0
        if est.refused():
            explored.append(i)
            est.observe(1 * MS)      # no faster than the samples said: wait twice as long next time
    assert explored == [7, 23, 55, 119, 247, 503, 1015]


def test_exploration_relearns_a_faster_host_within_a_few_dozen_frames():
    est = QuantileEstimator(0.99, min_online=32, refresh_every=16)
    for _ in range(512):
        est.observe(5 * MS)          # a slow spell filled the whole window with measured samples
    frames = runs = 0
    while est.fit_probability(2 * MS) < 0.05:    # what a frame's first segment needs to be admitted
        frames += 1
        assert frames < 100, f"still refused after {frames} frames ({runs} explorations)"
        if est.refused():
            runs += 1
            est.observe(1 * MS)      # the host is fast again: the samples are stale, the next exploration comes sooner
    # the explorations' fast samples, once most of the latest SHIFT_SAMPLES, say the latency shifted: the slow
    # spell's samples go (latency.py) before 5% of the window (26 samples) was fast
    assert est.shifts == 1 and SHIFT_SAMPLES // 2 <= runs < 0.05 * 512


def test_runs_stopped_late_enter_the_window_so_a_slowdown_is_learnt_under_a_preempted_tail():
    # 500 runs of 1 ms and 12 preemptions of 5 ms (the tail), then the host slows down: every admitted run now
    # takes 1.8 ms and is stopped by a late step. Those censored runs must count against a 1.5 ms threshold
    # (an estimator that kept them only above the 5 ms tail would keep admitting, and every frame would overrun).
    est = QuantileEstimator(0.99, min_online=32, refresh_every=16)
    for i in range(512):
        est.observe(5 * MS if i % 43 == 0 else 1 * MS)
    assert est.tail() == 5 * MS and est.fit_probability(1.5 * MS) > 0.975
    overruns = 0
    while est.fit_probability(1.5 * MS) >= 0.976:     # what a refinement worth 2.4 points needs inline
        overruns += 1
        assert overruns <= 13, "the estimator keeps admitting a segment that overruns every time"
        est.observe_stopped(1.8 * MS)
    assert overruns >= 1


def test_runs_stopped_late_keep_the_window_unbiased_at_a_knife_edge_budget():
    # Latencies uniform in 0.8..1.2 ms, a threshold of 1.0 ms: half the runs end in time (complete samples),
    # half are stopped late (censored at their true length, as the plan adds the skipped steps' typical time).
    # The estimate must stay near one half, not drift towards 1 as it would if only the runs that fitted stayed.
    rng = np.random.default_rng(0)
    est = QuantileEstimator(0.99, min_online=32, refresh_every=16)
    for value in rng.uniform(0.8, 1.2, 2000) * MS:
        (est.observe if value <= 1.0 * MS else est.observe_stopped)(float(value))
    assert 0.4 < est.fit_probability(1.0 * MS) < 0.6


def test_a_first_segment_that_cannot_fit_is_refused_not_run_late(raw_frame):
    # stem + head take 1.2 ms, every budget is 0.8 ms: 500 frames must cost a handful of explorations, not a
    # late run every few frames (probing, which scaled the estimate down on each refusal, did that)
    options = ControllerOptions(warmup_runs=40, margin_s=0.0, watchdog_guard_s=0.0)
    ctrl, _, _, _ = make(latency={"stem": 1 * MS, "head": 0.2 * MS, "body": 1 * MS}, options=options)
    results = [ctrl.run(raw_frame, 0.8 * MS) for _ in range(500)]
    ran = sum(r.steps_run > 0 for r in results)
    assert ctrl.stats().explorations == ran and 1 <= ran <= 6
    assert all(r.best is None for r in results)


def test_planning_takes_a_nearly_sure_slice_over_a_refinement_admission_would_refuse():
    from edge_anytime.policy import DeadlinePolicy
    from tests.conftest import tiny_program

    def seeded(simulated):
        policy = DeadlinePolicy(tiny_program(2, val_accuracy=(0.9, 0.95)), ControllerOptions(),
                                simulated=simulated, threaded=False)
        policy.seed_segment(0, [1.0 * MS] * 100)
        policy.reach_estimators[0].seed([1.0 * MS] * 100)
        policy.seed_segment(1, [1.0 * MS] * 90 + [1.3 * MS] * 10)
        policy.reach_estimators[1].seed([2.0 * MS] * 90 + [2.3 * MS] * 6 + [2.6 * MS] * 4)
        policy.seed_steps({1: [0.1 * MS]})       # head 0: what exit 1's a-priori slice skips
        return policy

    # Within 2.25 ms exit 1 is reached 90% of the time, but inline its segment, started after exit 0 (1 ms),
    # fits 90% while admission needs 0.9 / 0.95 = 95% not to put exit 0's result at risk: the anytime plan
    # stops at exit 0 (worth 0.90). Exit 1's slice fits 96% (0.96 * 0.95 = 0.912): it is planned instead.
    assert seeded(simulated=False).plan_frame(0.0, 2.25 * MS) == 1
    assert seeded(simulated=False).plan_frame(0.0, 2.7 * MS) is None     # everything fits: anytime
    # with a watchdog (here a simulated clock) the refinement risks nothing: the anytime plan is worth 0.945
    assert seeded(simulated=True).plan_frame(0.0, 2.25 * MS) is None


def test_planning_counts_a_refinement_only_for_the_frames_whose_exit_before_comes_early_enough():
    from edge_anytime.policy import DeadlinePolicy
    from tests.conftest import tiny_program

    policy = DeadlinePolicy(tiny_program(3, val_accuracy=(0.9, 0.95, 0.97)), ControllerOptions(),
                            simulated=False, threaded=False)
    policy.seed_segment(0, [1.0 * MS] * 80 + [1.4 * MS] * 20)              # exit 0 arrives late one frame in 5
    policy.reach_estimators[0].seed([1.0 * MS] * 80 + [1.4 * MS] * 20)
    policy.seed_segment(1, [1.0 * MS] * 90 + [1.3 * MS] * 10)
    policy.reach_estimators[1].seed([2.0 * MS] * 100)
    policy.seed_segment(2, [5.0 * MS] * 100)
    policy.reach_estimators[2].seed([7.0 * MS] * 100)
    policy.seed_steps({1: [0.2 * MS]})       # head 0: what exit 1's a-priori slice skips
    # Inline, admission of segment 1 needs 0.9 / (0.07 + 0.9) = 93% not to risk exit 0's result: 1.3 ms. Within
    # 2.35 ms it starts only if exit 0 came by 1.05 ms, in 80% of the frames (its reach estimate says exit 1 by
    # 2.35 ms always, at the typical arrival). The anytime plan is worth 0.2 * 0.90 + 0.8 * 0.95 = 0.94;
    # exit 1's slice, which fits surely, 0.95.
    assert policy.plan_frame(0.0, 2.35 * MS) == 1
    assert policy.plan_frame(0.0, 2.8 * MS) is None      # segment 1 starts after a late exit 0 too: anytime


def test_one_stall_in_a_warm_up_does_not_become_the_tail():
    from edge_anytime.latency import without_hiccups

    warm_up = [1 * MS] * 40 + [26 * MS]                  # a preemption during one warm-up pass
    assert max(without_hiccups(warm_up)) == 1 * MS
    busy = [1 * MS] * 30 + [8 * MS] * 10                 # a quarter of the passes: the host is that slow
    assert without_hiccups(busy) == busy


def test_seed_phase_inserts_each_sample_and_the_seeds_give_way_once():
    # A profile seeds 1,000 samples (the last window's worth, 512, are kept); each online sample before min_online
    # must join them as one more sample (the estimates of seeds and samples sorted together), and at min_online
    # only the online samples remain.
    rng = np.random.default_rng(3)
    seeds = rng.uniform(1, 2, 1000) * MS
    est = QuantileEstimator(0.99, typical_quantile=0.5, min_online=32, refresh_every=16)
    est.seed(seeds)
    online = list(rng.uniform(0.5, 1.9, 32) * MS)     # below the tail: no burst guard
    for i, value in enumerate(online[:31]):
        est.observe(float(value))
        expected = np.sort(np.concatenate([seeds[-512:], online[:i + 1]]))
        np.testing.assert_array_equal(est.samples(), expected)
        assert est.tail() == expected[int(np.ceil(0.99 * expected.size)) - 1]
        assert est.typical() == expected[int(np.ceil(0.5 * expected.size)) - 1]
    est.observe(float(online[31]))
    np.testing.assert_array_equal(est.samples(), np.sort(online))
    assert est.count == 32
    est.observe(5 * MS)                 # the window goes on from there: 33 samples
    assert est.count == 33 and est.samples()[-1] == 5 * MS


def test_seed_phase_does_not_rebuild_the_sorted_samples(monkeypatch):
    # The rebuild sorts seeds + samples (500+ values, 25 us): once at seeding and once when the seeds give way,
    # never per sample (a fresh controller paid it for six estimators on each of its first 32 frames).
    est = QuantileEstimator(0.99, min_online=32)
    est.seed(np.full(1000, 1 * MS))
    rebuilds = []
    original = est._refresh
    monkeypatch.setattr(est, "_refresh", lambda: (rebuilds.append(est.online_count), original()))
    for _ in range(40):
        est.observe(1 * MS)
    assert rebuilds == [32]


def test_trusted_seeds_are_first_explored_after_many_refusals_not_a_few():
    est = QuantileEstimator(0.99, min_online=32, explore_after=8)
    est.seed([1 * MS] * 100)
    est.delay_exploration(64)
    refusals = 0
    while not est.refused():
        refusals += 1
    assert refusals == 63                 # the 64th refusal in a row explores
    est.observe(1 * MS)                   # as fast as the seeds said: the next wait doubles
    refusals = 0
    while not est.refused():
        refusals += 1
    assert refusals == 127


def test_scaling_the_seeds_leaves_online_samples_as_measured():
    est = QuantileEstimator(0.99, typical_quantile=0.5, min_online=32, refresh_every=1)
    est.seed([1 * MS] * 100)
    est.observe(3 * MS)
    est.scale_seeds(1.2)
    np.testing.assert_allclose(est.samples(), [1.2 * MS] * 100 + [3 * MS])


@pytest.mark.parametrize("kind", ["quantile", "gaussian"])
def test_lower_bound_is_where_the_fit_probability_reaches_it(kind):
    estimator = make_estimator(EstimatorOptions(kind=kind))
    estimator.seed(np.random.default_rng(3).lognormal(np.log(1e-3), 0.2, 300))
    for p in (0.01, 0.05, 0.5, 0.9):
        bound = estimator.lower_bound(p)
        assert estimator.fit_probability(bound) >= p - 1e-9
        assert estimator.fit_probability(bound * (1 - 1e-6)) < p
    assert make_estimator(EstimatorOptions()).lower_bound(0.05) == float("inf")   # nothing known: no bound


def test_planning_skips_its_candidates_below_the_slice_floor_with_the_same_choices():
    from edge_anytime.policy import DeadlinePolicy
    from tests.conftest import tiny_program

    def seeded():
        policy = DeadlinePolicy(tiny_program(3, val_accuracy=(0.9, 0.95, 0.97)), ControllerOptions(),
                                simulated=False, threaded=False)
        rng = np.random.default_rng(0)
        for position in range(3):
            policy.seed_segment(position, rng.lognormal(np.log(1 * MS), 0.15, 200))
            policy.reach_estimators[position].seed(rng.lognormal(np.log((position + 1) * MS), 0.15, 200))
        policy.seed_steps({1: [0.1 * MS], 3: [0.1 * MS]})
        return policy

    with_floor, without = seeded(), seeded()
    without._slice_floor = lambda: 0.0          # the same policy, every candidate checked every frame
    budgets = np.random.default_rng(1).uniform(0.5 * MS, 4 * MS, 400)

    def plans(policy):
        out = []
        for budget in budgets:
            policy.tick_floors()
            out.append(policy.plan_frame(0.0, budget))
        return out

    assert plans(with_floor) == plans(without)
    assert 0.0 < with_floor._plan_floor < 2 * MS
    assert with_floor.plan_frame(0.0, 0.9 * with_floor._plan_floor) is None


def test_a_shifted_latency_replaces_the_window_within_forty_samples_and_a_steady_one_never_does():
    rng = np.random.default_rng(0)
    est = QuantileEstimator(0.99, min_online=32, refresh_every=16)
    for value in rng.lognormal(np.log(1 * MS), 0.05, 600):        # served back to back: warm caches
        est.observe(value)
    for k, value in enumerate(rng.lognormal(np.log(2 * MS), 0.05, 40)):   # then a loop idling between frames
        est.observe(value)
    assert est.shifts == 1 and 1.8 * MS < est.typical() < 2.1 * MS and est.tail() > 1.9 * MS   # at most 8 old samples kept
    for value in rng.lognormal(np.log(1 * MS), 0.05, 40):        # back again: followed as fast
        est.observe(value)
    assert est.shifts == 2 and est.typical() < 1.1 * MS
    steady = QuantileEstimator(0.99, min_online=32, refresh_every=16)
    heavy = np.where(rng.random(30000) < 0.05, rng.lognormal(np.log(5 * MS), 0.5, 30000),
                     rng.lognormal(np.log(1 * MS), 0.2, 30000))    # 5% preemptions: a heavy tail, not a shift
    for value in heavy:
        steady.observe(value)
    assert steady.shifts == 0


def test_without_the_shift_check_the_old_window_would_keep_a_shifted_latency_refused():
    # the same shift, read as admission does: a segment needing 1.5 ms of a 1.6 ms budget after the shift
    est = QuantileEstimator(0.99, min_online=32, refresh_every=16)
    for _ in range(512):
        est.observe(1 * MS)
    for _ in range(40):
        est.observe(2 * MS)
    assert est.fit_probability(1.6 * MS) == 0.0                  # the window is the latest samples only
