"""training.weighting: hand-computed static schemes, SIEVE oscillation, AdaLoss, Impatient DNNs."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from training.weighting import (WEIGHTINGS, AdaLoss, impatient_weights, make_weighting, sieve_oscillate,
                                sieve_weights, static_weights)


def approx(values):
    return pytest.approx(values, rel=1e-12, abs=1e-12)


def test_const_linear_half_end_anytimenet():
    assert static_weights("const", 4) == [1.0] * 4
    assert static_weights("linear", 4) == approx([0.25, 0.5, 0.75, 1.0])
    assert static_weights("half_end", 5) == approx([0.25, 0.25, 0.25, 0.25, 1.0])  # final = half of the total
    assert static_weights("anytimenet", 4) == approx([1 / 16, 1 / 9, 1 / 4, 1.0])
    for scheme in ("const", "linear", "half_end", "sieve", "anytimenet"):
        assert static_weights(scheme, 1) == [1.0]
    with pytest.raises(ValueError, match="const"):
        static_weights("exp", 3)


def test_sieve_by_hand():
    # L = 8: units at round(8/2)=4; round(2,4,6); round(1..7) -> B1..B7 = 1,2,1,3,1,2,1 (sum 11), B8 = 1
    assert sieve_weights(8) == approx([1 / 11, 2 / 11, 1 / 11, 3 / 11, 1 / 11, 2 / 11, 1 / 11, 1.0])
    # L = 5: round(2.5)=3; round(1.25, 2.5, 3.75) = 1,3,4; then eighths give 1,1,2,3,3,4,4 -> 3,1,4,3 (sum 11)
    assert sieve_weights(5) == approx([3 / 11, 1 / 11, 4 / 11, 3 / 11, 1.0])
    assert sieve_weights(3) == approx([0.25, 0.75, 1.0])
    assert sieve_weights(2) == [1.0, 1.0]
    for n in range(2, 40):
        w = sieve_weights(n)
        assert sum(w[:-1]) == pytest.approx(1.0) and w[-1] == 1.0 and min(w) > 0


def test_sieve_oscillation_samples_proportionally():
    base = sieve_weights(4)  # [0.25, 0.5, 0.25, 1.0], total 2
    rng = random.Random(0)
    picks = Counter()
    for _ in range(20000):
        w = sieve_oscillate(base, rng)
        changed = [i for i, (a, b) in enumerate(zip(w, base)) if a != b]
        assert len(changed) == 1 and w[changed[0]] == pytest.approx(base[changed[0]] + base[-1])
        picks[changed[0]] += 1
    for i, b in enumerate(base):
        assert picks[i] / 20000 == pytest.approx(b / sum(base), abs=0.015)
    assert base == sieve_weights(4)  # the input is not modified


def test_adaloss_converges_to_inverse_loss_ratios():
    ada = AdaLoss(3, gamma=0.0)
    losses = [4.0, 2.0, 0.5]
    ada.step([1.0, 1.0, 1.0])  # a different start that the EMA must forget
    for _ in range(300):
        weights = ada.step(losses)
    assert weights == pytest.approx([0.5 / 4, 0.5 / 2, 1.0], rel=1e-6)  # proportional to 1/loss, max 1
    mixed = AdaLoss(3)  # gamma = 0.05 (App. C.1): 0.95 * min/l_i + 0.05
    assert mixed.step(losses) == pytest.approx([0.95 / 8 + 0.05, 0.95 / 4 + 0.05, 1.0])


def test_adaloss_state_round_trip_and_update_period():
    ada = AdaLoss(2, update_every=3)
    first = ada.step([2.0, 1.0])
    assert ada.step([10.0, 1.0]) == first  # weights held between updates
    clone = AdaLoss(2, update_every=3)
    clone.load_state_dict(ada.state_dict())
    assert clone.step([3.0, 1.0]) == ada.step([3.0, 1.0])


def test_impatient_by_hand():
    # costs 1,2,3 with t_max = 4 (default 3 * 4/3): intervals [1,2), [2,3), [3,4]
    assert impatient_weights("uniform", [1, 2, 3]) == approx([1.0, 1.0, 1.0])
    # large budgets likely, F = (t/4)^2: 3/16, 5/16, 7/16 -> scaled to max 1
    assert impatient_weights("large", [1, 2, 3]) == approx([3 / 7, 5 / 7, 1.0])
    # small budgets likely, F = 1 - (1 - t/4)^2: 5/16, 3/16, 1/16
    assert impatient_weights("small", [1, 2, 3]) == approx([1.0, 3 / 5, 1 / 5])
    normal = impatient_weights("normal", [1, 2, 3])
    # N(2, (4/6)^2): P(1<T<2) = P(2<T<3) = Phi(1.5) - 0.5 = 0.43319; P(3<T<4) = Phi(3) - Phi(1.5) = 0.06546
    assert normal == pytest.approx([1.0, 1.0, 0.06546 / 0.43319], rel=1e-4)
    assert impatient_weights("uniform", [1, 2, 3], t_max=6) == approx([1 / 3, 1 / 3, 1.0])
    with pytest.raises(ValueError, match="increasing"):
        impatient_weights("uniform", [2, 1])
    with pytest.raises(ValueError, match="t_max"):
        impatient_weights("uniform", [1, 2], t_max=2)


def test_every_cli_weighting_builds():
    for name in WEIGHTINGS:
        weights = make_weighting(name, 4, exit_costs=[1, 2, 3, 4]).step([1.0, 1.0, 1.0, 1.0])
        assert len(weights) == 4 and max(weights) >= 1.0 - 1e-12 and min(weights) > 0
    with pytest.raises(ValueError, match="exit_costs"):
        make_weighting("impatient-uniform", 3)


def test_grouped_weighting_is_each_member_on_its_own():
    grouped = make_weighting("adaloss", 5, groups=[2, 3])
    alone = [AdaLoss(2), AdaLoss(3)]
    for losses in ([4.0, 2.0, 8.0, 2.0, 1.0], [3.0, 2.5, 6.0, 1.0, 0.5], [2.0, 2.0, 1.0, 1.0, 3.0]):
        expected = alone[0].step(losses[:2]) + alone[1].step(losses[2:])
        assert grouped.step(losses) == approx(expected)
    # each member's final exit keeps B_L = 1 under a static scheme; a flat scheme would give it less
    sieve = make_weighting("half_end", 7, groups=[3, 4])
    assert sieve.step([1.0] * 7) == approx([0.5, 0.5, 1.0, 1 / 3, 1 / 3, 1 / 3, 1.0])
    flat = make_weighting("anytimenet", 7)
    assert flat.step([1.0] * 7)[2] < 0.1
    state = grouped.state_dict()
    again = make_weighting("adaloss", 5, groups=[2, 3])
    again.load_state_dict(state)
    assert again.step([1.0] * 5) == grouped.step([1.0] * 5)
    # budgets are over the whole anytime program: never split
    assert make_weighting("impatient-uniform", 3, exit_costs=[1, 2, 3], groups=[1, 2]).step([1.0] * 3) == [1.0] * 3
    with pytest.raises(ValueError, match="cover the 5 exits"):
        make_weighting("const", 5, groups=[2, 2])
