"""Planning's near-tie rule (DeadlinePolicy.pick, ControllerOptions.value_tie): the fastest of the slices worth
nearly the same runs, on the controller and on the simulator's vectorised twin alike."""

from __future__ import annotations

import numpy as np
import pytest

from edge_anytime import ControllerOptions
from edge_anytime.policy import DeadlinePolicy, fallback_key
from tests.conftest import tiny_program


def _policy(value_tie: float = 0.003, accuracies=(0.97, 0.989, 0.991)) -> DeadlinePolicy:
    return DeadlinePolicy(tiny_program(val_accuracy=accuracies), ControllerOptions(value_tie=value_tie),
                          simulated=True, threaded=False, fallbacks={1: 0.999})


class _Typical:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def typical(self) -> float:
        return self.seconds


def _slice(worth: float, p: float, typical: float, key):
    return (worth, p, key, _Typical(typical), 0.0)      # pick()'s candidates


def test_pick_takes_the_fastest_of_the_slices_within_the_tie_of_the_best_unless_the_best_has_room():
    policy = _policy()
    slow_best = _slice(0.990, 1.0, 5e-4, 2)
    fast_near = _slice(0.988, 1.0, 2e-4, fallback_key(1))
    far = _slice(0.960, 1.0, 1e-4, 0)
    tight = 6e-4                                 # less than TIE_ROOM times the best's typical latency
    assert policy.pick([slow_best, fast_near, far], 0.5, tight) is fast_near
    assert policy.pick([slow_best, fast_near, far], 0.5, 1e-3) is slow_best    # room to spare: the best
    assert policy.pick([slow_best, fast_near, far], 0.995, tight) is None      # none beats the anytime plan
    # the best must beat the floor; the tie is measured from the best, not the floor
    assert policy.pick([slow_best, fast_near], 0.989, tight) is fast_near
    # equal speed: the likelier to fit; strict order with value_tie=0
    likelier = _slice(0.9885, 1.0, 5e-4, 1)
    assert policy.pick([_slice(0.990, 0.999, 5e-4, 2), likelier], 0.0, tight) is likelier
    strict = _policy(value_tie=0.0)
    assert strict.pick([slow_best, fast_near, far], 0.5, tight) is slow_best


def test_plan_frame_runs_the_faster_of_two_nearly_equal_slices():
    """The int8 slice of exit 2 is worth 0.2 points more than exit 1's (by validation) and takes twice as long;
    both fit surely, the whole anytime plan does not (it is worth exit 1's value): the near-tie rule runs
    exit 1's; with value_tie=0, exit 2's."""
    decisions = {}
    for tie in (0.003, 0.0):
        policy = DeadlinePolicy(tiny_program(val_accuracy=(0.97, 0.989, 0.991)), ControllerOptions(value_tie=tie),
                                simulated=True, threaded=False, fallbacks={1: 0.999, 2: 0.999})
        for position, (segment, reach) in enumerate(((1e-3, 1e-3), (1e-3, 2e-3), (2e-3, 4e-3))):
            policy.seed_segment(position, [segment] * 40)
            policy.reach_estimators[position].seed([reach] * 40)
        policy.seed_slice(fallback_key(1), [1.5e-3] * 40)
        policy.seed_slice(fallback_key(2), [3e-3] * 40)
        policy.tick_floors()
        decisions[tie] = policy.plan_frame(0.0, 3.5e-3)
    assert decisions == {0.003: fallback_key(1), 0.0: fallback_key(2)}


@pytest.mark.parametrize("value", [-0.1, 1.0, "0.003"])
def test_value_tie_is_checked(value):
    with pytest.raises(ValueError, match="value_tie"):
        ControllerOptions(value_tie=value)
