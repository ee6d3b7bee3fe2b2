"""A frame that planning leaves without any chance of a result explores the first exit's fallback slice now and
then (DeadlinePolicy._explore_starved): slow samples in its window must not starve tight budgets for good."""

from __future__ import annotations

from edge_anytime import ControllerOptions
from edge_anytime.policy import TRUSTED_EXPLORE_AFTER, DeadlinePolicy, fallback_key
from tests.conftest import tiny_program


def _starved_policy() -> DeadlinePolicy:
    policy = DeadlinePolicy(tiny_program(val_accuracy=(0.97, 0.989, 0.991)), ControllerOptions(),
                            simulated=False, threaded=False, fallbacks={0: 0.999, 1: 0.999})
    for position, (segment, reach) in enumerate(((1.5e-3, 1.5e-3), (1e-3, 2.5e-3), (2e-3, 4.5e-3))):
        for _ in range(64):
            policy.segment_estimators[position].observe(segment)
            policy.reach_estimators[position].observe(reach)
    for key, seconds in ((fallback_key(0), 2e-3), (fallback_key(1), 3e-3), (0, 1e-3), (1, 2e-3), (2, 4e-3)):
        for _ in range(64):                       # the fallback slices' samples: a slow spell (2 ms, 3 ms)
            policy.slice_estimators[key].observe(seconds)
    policy.tick_floors()
    return policy


def test_a_starved_frame_explores_the_first_exits_fallback_slice_after_its_wait():
    policy = _starved_policy()
    remaining = 1.2e-3       # nothing fits by the estimates (first exit 1.5 ms, its int8 slice 2 ms): no result
    plans = [policy.plan_frame(0.0, remaining) for _ in range(TRUSTED_EXPLORE_AFTER)]
    assert plans[:-1] == [None] * (TRUSTED_EXPLORE_AFTER - 1)
    assert plans[-1] == fallback_key(0) and policy.counts["explorations"] == 1
    policy.slice_estimators[fallback_key(0)].observe(0.3e-3)   # it ran fast: the samples were stale ...
    waits = 0
    while policy.plan_frame(0.0, remaining) is None:
        waits += 1
    assert waits < TRUSTED_EXPLORE_AFTER - 1      # ... so the next exploration comes sooner


def test_a_starved_frame_far_below_the_fallback_slices_time_explores_nothing_nor_a_frame_the_anytime_plan_serves():
    policy = _starved_policy()
    assert all(policy.plan_frame(0.0, 0.5e-3) is None for _ in range(300))   # 0.5 ms for a 2 ms slice: hopeless
    assert all(policy.plan_frame(0.0, 1.6e-3) is None for _ in range(300))   # the fp32 first exit fits
    assert policy.counts["explorations"] == 0


def test_without_a_fallback_precision_nothing_is_explored_for_a_starved_frame():
    policy = DeadlinePolicy(tiny_program(), ControllerOptions(), simulated=False, threaded=False)
    for position in range(len(policy.segments)):
        for _ in range(64):
            policy.reach_estimators[position].observe(1e-3 * (position + 1))
    policy.tick_floors()
    assert all(policy.plan_frame(0.0, 0.2e-3) is None for _ in range(300))
    assert policy.counts["explorations"] == 0
