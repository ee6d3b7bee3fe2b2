"""The prediction cache and the real clock with the shipped GTSRB bundle on LiteRT (skipped without it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import DEMO_BUNDLE, data_dir

pytestmark = pytest.mark.skipif(not (DEMO_BUNDLE / "manifest.json").is_file() or not (data_dir() / "gtsrb32").is_dir(),
                                reason="needs deploy/bundles/gtsrb-resann and the GTSRB data")


def test_cached_logits_are_what_the_controller_computes(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from edge_anytime import Controller, ControllerOptions
    from simulator.cache import cached_predictions
    from simulator.fast import exit_predictions
    from simulator.sources import open_stream

    stream = open_stream("gtsrb-test", frames=40, data_dir=data_dir())
    cache = cached_predictions(DEMO_BUNDLE, stream, frames=40, cache_dir=tmp_path, show_progress=False)
    assert np.isfinite(cache.logits).all() and cache.valid.all() and not cache.bad_steps.any()
    preds = exit_predictions(cache)
    with Controller.from_bundle(DEMO_BUNDLE, options=ControllerOptions(warmup_runs=1)) as ctrl:
        for item in stream:
            result = ctrl.run(item.frame, 5.0)      # a generous budget: every exit worth running runs
            ran = [e.exit_index for e in result.exits]
            assert ran and ran == sorted(ran)
            assert [e.prediction.label for e in result.exits] == list(preds.label[item.index][ran])
            np.testing.assert_allclose([e.prediction.confidence for e in result.exits],
                                       preds.confidence[item.index][ran], atol=1e-5)
    again = cached_predictions(DEMO_BUNDLE, "gtsrb-test", frames=40, cache_dir=tmp_path, data_dir=data_dir(),
                               show_progress=False)
    assert again.path == cache.path and np.array_equal(again.logits, cache.logits)   # loaded, not rebuilt


def test_real_clock_cli(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from simulator.replay import main

    out = tmp_path / "real.json"
    assert main(["--bundle", str(DEMO_BUNDLE), "--stream", "gtsrb-test", "--frames", "40", "--clock", "real",
                 "--budget", "constant:20", "--budget", "constant:0.05", "--cache-dir", str(tmp_path),
                 "--data-dir", str(data_dir()), "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    generous, tiny = report["scenarios"]
    assert report["clock"] == "real" and report["profile"]["source"] == "measured:this-host"
    assert generous["policies"]["anytime"]["deadline_met"] > 0.9
    assert generous["policies"]["anytime"]["accuracy"] > 0.5
    assert tiny["policies"]["anytime"]["exit_histogram"][-1] == 40     # 50 us: nothing fits, nothing runs late
    assert "sim:anytime" in generous["policies"] and report["real_controller"]["stats"]["frames"] >= 80


def test_a_cache_replays_the_bundles_profile_as_it_is_now(tmp_path):
    """Profiles are not part of the cache key (the manifest): a bundle profiled again after its predictions were
    cached is replayed with its new timings, not those the cache was built with."""
    pytest.importorskip("ai_edge_litert")
    import shutil

    from edge_anytime.bundle import Bundle
    from edge_anytime.profile import LatencyProfile
    from simulator.cache import cached_predictions

    bundle_dir = tmp_path / "bundle"
    shutil.copytree(DEMO_BUNDLE, bundle_dir)
    first = cached_predictions(bundle_dir, "gtsrb-test", frames=8, cache_dir=tmp_path / "cache", data_dir=data_dir(),
                               show_progress=False)
    old = Bundle.load(bundle_dir).profiles["x86-64"]
    slower = {g: {p: tuple(2 * v for v in s) for p, s in per.items()} for g, per in old.graphs.items()}
    LatencyProfile(old.target, old.backend, slower, old.threads, old.host, old.fingerprint).save(bundle_dir)
    again = cached_predictions(bundle_dir, "gtsrb-test", frames=8, cache_dir=tmp_path / "cache", data_dir=data_dir(),
                               show_progress=False)
    assert again.path == first.path and np.array_equal(again.logits, first.logits)   # loaded, not rebuilt
    np.testing.assert_allclose(again.profiles["x86-64"].samples_s("segment0", "fp32"),
                               2 * np.array(first.profiles["x86-64"].samples_s("segment0", "fp32")), rtol=1e-3)


def test_the_simulated_clock_replays_the_precision_fallback(tmp_path):
    """The demo bundle's int8 graphs answer on the simulated clock as on a real one: both engines agree frame by
    frame (--verify), and without the fallback fewer frames get a result at tight budgets."""
    pytest.importorskip("ai_edge_litert")
    from simulator.replay import main

    argv = ["--bundle", str(DEMO_BUNDLE), "--stream", "gtsrb-test", "--frames", "300", "--budget", "uniform:0.05:0.5",
            "--verify", "--cache-dir", str(tmp_path), "--data-dir", str(data_dir()), "--quiet"]
    reports = {}
    for fallback in ("auto", "none"):
        out = tmp_path / f"{fallback}.json"
        assert main(argv + ["--fallback-precision", fallback, "--json", str(out)]) == 0
        reports[fallback] = json.loads(out.read_text())["scenarios"][0]["policies"]
    assert reports["auto"]["anytime"]["fallback_results"] > 60 and reports["auto"]["apriori"]["fallback_results"] > 60
    assert reports["none"]["anytime"]["fallback_results"] == 0
    assert reports["auto"]["anytime"]["deadline_met"] > reports["none"]["anytime"]["deadline_met"] + 0.1
