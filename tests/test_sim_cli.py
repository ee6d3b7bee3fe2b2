"""`python -m simulator.replay`: the JSON report's schema, the sweep table, plots, and bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from simulator.replay import REPORT_SCHEMA, main
from simulator.synthetic import synthetic_cache, synthetic_profile
from tests.conftest import REPO

METRIC_KEYS = {"frames", "labelled", "accuracy", "accuracy_delivered", "deadline_met", "missed", "miss_rate", "errors",
               "exit_histogram", "mean_exit", "latency_ms", "coarse_accuracy", "reported_accuracy", "status",
               "late_steps", "fallback_results"}


@pytest.fixture(scope="module")
def saved_cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim")
    profile = synthetic_profile(spread=0.4, target="x86-64")
    cache = synthetic_cache(frames=900, fail=(4,), reject=(9,), coarse=3, val_accuracy=(0.5, 0.7, 0.9),
                            profiles=[profile])
    return cache.save(folder / "cache.npz"), folder


def test_json_report_schema_and_plot(saved_cache, tmp_path, capsys):
    path, _ = saved_cache
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    rc = main(["--cache", str(path), "--budget", "uniform:1:6", "--budget", "large:1:6?jitter=0.1",
               "--json", str(out), "--plot", str(png), "--timeline", "--coarse-below", "0.6", "--quiet"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["schema"] == REPORT_SCHEMA and report["version"] == 1
    assert report["clock"] == "sim" and report["engine"] == "fast"     # several budgets: the vectorised replay
    assert report["stream"] == {"spec": "synthetic?frames=900&seed=0", "frames": 900, "labelled": 900,
                                "rejected_frames": 1, "failed_frames": 1, "tracks": 30}
    assert report["profile"]["source"] == "bundle:x86-64"
    assert set(report["profile"]["graphs"]) == {"stem", "body", "head"}
    assert [e["index"] for e in report["exits"]] == [0, 1, 2]
    assert {"accuracy", "latency_ms", "min_budget_ms", "segment_estimate_ms", "val_accuracy"} <= set(report["exits"][0])
    assert [s["budget"] for s in report["scenarios"]] == ["uniform:1:6", "large:1:6?jitter=0.1"]
    for scenario in report["scenarios"]:
        assert set(scenario["policies"]) == {"anytime", "apriori", "static:0", "static:1", "static:2", "best-static",
                                             "threshold:0.9"}
        for metrics in scenario["policies"].values():
            assert set(metrics) == METRIC_KEYS
            assert len(metrics["exit_histogram"]) == 4 and sum(metrics["exit_histogram"]) == 900
            assert metrics["coarse_accuracy"] is not None
        assert scenario["policies"]["anytime"]["errors"] >= 1
        assert len(scenario["timeline"]["exit"]) == 900
        assert 1 <= scenario["budget_ms"]["min"] <= scenario["budget_ms"]["mean"] <= 6.5
    assert png.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "uniform:1:6" in printed and "best-static" in printed


def test_single_budget_runs_the_live_controller_and_verify_agrees(saved_cache, tmp_path):
    path, _ = saved_cache
    out = tmp_path / "r.json"
    assert main(["--cache", str(path), "--budget", "normal:4:1.5", "--verify", "--json", str(out), "--quiet",
                 "--latency-scale", "1.4", "--dispatch-ms", "0.2"]) == 0
    report = json.loads(out.read_text())
    assert report["engine"] == "live" and report["scenarios"][0]["policies"]["anytime"]["late_steps"] > 0


def test_sweep_prints_budget_table(saved_cache, capsys):
    path, _ = saved_cache
    assert main(["--cache", str(path), "--sweep", "constant:1:7:2", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("constant:")]
    assert [row.split()[0] for row in rows] == ["constant:1", "constant:3", "constant:5", "constant:7"]
    assert "99.9%   0.0% |" in rows[-1]   # met by all but the corrupt frame, no misses


def test_profile_file_and_missing_profile(saved_cache, tmp_path, capsys):
    path, _ = saved_cache
    assert main(["--cache", str(path), "--budget", "constant:3", "--target", "jetson-orin-nano", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "python -m edge_anytime.deploy --target jetson-orin-nano --profile" in err and "--profile FILE" in err
    profile_file = tmp_path / "p.json"
    profile_file.write_text(json.dumps(synthetic_profile({"stem": 0.5, "body": 0.5, "head": 0.1}).to_json()))
    out = tmp_path / "r.json"
    assert main(["--cache", str(path), "--budget", "constant:3", "--profile", str(profile_file), "--json", str(out),
                 "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["profile"]["source"].startswith("file:")
    assert report["scenarios"][0]["policies"]["anytime"]["exit_histogram"][2] > 800  # faster steps: last exit


@pytest.mark.parametrize("argv, message", [
    (["--budget", "constant:-2"], "must be > 0 milliseconds"),
    (["--budget", "constant:4000000"], "microseconds"),
    (["--budget", "poisson:3"], "unknown budget"),
    ([], "give --budget"),
    (["--budget", "constant:1", "--stream", "kitti", "--bundle", "nowhere"], "unknown stream"),
    (["--budget", "constant:1", "--stream", "gtsrb-test", "--bundle", "nowhere"], "does not exist"),
    (["--budget", "constant:1", "--cache", "nowhere.npz"], "does not exist"),
])
def test_bad_inputs_give_clear_errors(argv, message, capsys):
    assert main(argv + ["--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_empty_and_truncated_recordings_are_reported(tmp_path, capsys):
    empty = tmp_path / "empty.npz"
    np.savez(empty, frames=np.zeros((0, 8, 8, 3), np.uint8))
    assert main(["--budget", "constant:1", "--stream", f"npz:{empty}", "--bundle", "b", "--quiet"]) == 2
    assert "empty" in capsys.readouterr().err
    truncated = tmp_path / "t.npz"
    truncated.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["--budget", "constant:1", "--stream", f"npz:{truncated}", "--bundle", "b", "--quiet"]) == 2
    assert "truncated" in capsys.readouterr().err


def test_module_entry_point_help():
    done = subprocess.run([sys.executable, "-m", "simulator.replay", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "--sweep" in done.stdout and "--clock" in done.stdout
