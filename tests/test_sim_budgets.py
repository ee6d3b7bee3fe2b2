"""Budget models against their definitions: means, bounds, shapes, seeds, and errors that name the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simulator.budgets import BudgetError, parse_budget, parse_sweep

N = 200_000


@pytest.mark.parametrize("spec", ["constant:2", "uniform:1:3", "normal:2:0.5", "normal:0.5:1", "large:0.5:3",
                                  "small:0.5:3", "large:1:2:0", "small:1:5:4"])
def test_sample_mean_and_cdf_match_the_definition(spec):
    model = parse_budget(spec)
    ms = model.sample(N, seed=3) * 1e3
    assert ms.mean() == pytest.approx(model.mean_ms(), rel=0.01)
    assert (ms > 0).all()
    for q in (0.1, 0.5, 0.9):
        x = float(np.quantile(ms, q))
        if model.kind != "constant":
            assert model.cdf_ms(x) == pytest.approx(q, abs=0.01)
    bounds = model.bounds_ms()
    if bounds is not None:
        assert bounds[0] <= ms.min() and ms.max() <= bounds[1]


def test_large_and_small_budgets_are_mirror_images_with_the_tables_shape():
    large, small, uniform = (parse_budget(f"{kind}:0.01:2.2") for kind in ("large", "small", "uniform"))
    assert large.mean_ms() + small.mean_ms() == pytest.approx(2 * uniform.mean_ms())
    assert large.mean_ms() / uniform.mean_ms() == pytest.approx(1.5, abs=0.01)   # Table 1: 1.72 / 1.11 = 1.55
    assert small.mean_ms() / uniform.mean_ms() == pytest.approx(0.5, abs=0.01)   # Table 1: 0.50 / 1.11 = 0.45
    b = large.sample(N, seed=0) * 1e3
    assert (b > 1.1).mean() > 0.8                     # large budgets are likely
    assert (small.sample(N, seed=0) * 1e3 < 1.1).mean() > 0.8


def test_normal_is_truncated_not_clipped():
    ms = parse_budget("normal:0.5:1").sample(N, seed=0) * 1e3
    assert ms.min() > 0 and (ms < 0.01).mean() < 0.01  # no pile-up at a clip value


def test_seeds_reproduce_and_differ():
    model = parse_budget("uniform:1:3")
    assert np.array_equal(model.sample(100, seed=7), model.sample(100, seed=7))
    assert not np.array_equal(model.sample(100, seed=7), model.sample(100, seed=8))
    other = parse_budget("uniform:1:3.0")  # a different spec string draws a different stream
    assert not np.array_equal(model.sample(100, seed=7), other.sample(100, seed=7))


def test_jitter_adds_noise_and_stays_positive():
    base = parse_budget("constant:1").sample(N, seed=0)
    jittered = parse_budget("constant:1?jitter=0.2").sample(N, seed=0) * 1e3
    assert np.all(base == 0.001)
    assert jittered.std() == pytest.approx(0.2, rel=0.02) and jittered.min() > 0


def test_speed_budget_shrinks_as_speed_grows(tmp_path):
    model = parse_budget("speed:0.05:30:130")
    t = np.arange(3000) / 30.0
    ms = model.sample(3000, seed=0, timestamps=t) * 1e3
    lo, hi = model.bounds_ms()
    assert lo == pytest.approx(50 / (130 / 3.6)) and hi == pytest.approx(50 / (30 / 3.6))
    assert lo - 1e-9 <= ms.min() and ms.max() <= hi + 1e-9
    assert np.abs(np.diff(ms)).max() < 0.2  # a smooth trace, not white noise
    trace = tmp_path / "speed.csv"
    trace.write_text("time_s,speed_kmh\n0,36\n10,72\n")
    from_file = parse_budget(f"speed:0.01:{trace}").sample(3, timestamps=np.array([0.0, 5.0, 10.0])) * 1e3
    assert from_file == pytest.approx([1.0, 2 / 3, 0.5])


def test_trace_files(tmp_path):
    csv_file = tmp_path / "b.csv"
    csv_file.write_text("frame,budget_ms\n0,1.5\n1,2.5\n2,0.75\n")
    assert parse_budget(f"trace:{csv_file}").sample(3) * 1e3 == pytest.approx([1.5, 2.5, 0.75])
    plain = tmp_path / "plain.csv"
    plain.write_text("1\n2\n")
    assert parse_budget(f"trace:{plain}").sample(2) * 1e3 == pytest.approx([1, 2])
    js = tmp_path / "b.json"
    js.write_text(json.dumps({"budget_ms": [1, 2, 3]}))
    assert parse_budget(f"trace:{js}").sample(2) * 1e3 == pytest.approx([1, 2])
    with pytest.raises(BudgetError, match="--frames 3"):
        parse_budget(f"trace:{js}").sample(10)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([1, 2, 25000]))
    with pytest.raises(BudgetError, match="microseconds"):
        parse_budget(f"trace:{bad}")


@pytest.mark.parametrize("spec, message", [
    ("gaussian:1:2", "unknown budget"),
    ("uniform:3:1", "LO must be < HI"),
    ("uniform:1", "uniform:LO:HI"),
    ("constant:-1", "must be > 0 milliseconds"),
    ("constant:0", "must be > 0 milliseconds"),
    ("constant:2500000", "microseconds"),
    ("uniform:1:20000", "microseconds"),
    ("normal:2:0", "STD must be > 0"),
    ("constant:abc", "numbers in milliseconds"),
    ("constant:1?jiter=1", "jitter=MS"),
    ("speed:0.05:130:30", "VMIN_KMH must be <= VMAX_KMH"),
    ("trace:/nonexistent.csv", "does not exist"),
    ("large:1:3:-1", "shape K"),
])
def test_bad_specs_name_the_fix(spec, message):
    with pytest.raises(BudgetError, match=message):
        parse_budget(spec)


def test_sweep_parsing():
    specs = [m.spec for m in parse_sweep("constant:0.5:5:0.25")]
    assert len(specs) == 19 and specs[0] == "constant:0.5" and specs[-1] == "constant:5"
    with pytest.raises(BudgetError, match="repeat --budget"):
        parse_sweep("uniform:1:2:3")
    with pytest.raises(BudgetError, match="STEP > 0"):
        parse_sweep("constant:1:5:0")


def test_background_cpu_load_is_bounded_and_stops():
    from simulator.load import BackgroundLoad

    with pytest.raises(ValueError, match="fraction of one core"):
        BackgroundLoad(1.5)
    load = BackgroundLoad(0.2, max_seconds=20)
    with load:
        process = load._process
        assert process.is_alive()
    assert not process.is_alive()
