"""The whole --host flow against an emulated device on this machine (about 20-30 s).

ssh/scp are replaced by a runner that executes each remote command with bash in a fake home folder, so
the real package is archived, unpacked, installed into a fresh venv by its own install.sh (pinned numpy +
ai-edge-litert from the package index, the runtime wheel with --no-deps), profiled and self-tested by its
profile.sh, and the profile is fetched back; then the installed launcher serves a replayed npz stream.
No network host is contacted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

import edge_anytime.deploy.remote as remote_mod
from edge_anytime import Bundle
from edge_anytime.deploy.__main__ import main as deploy_main
from tests.test_deploy_support import runtime_wheel, tiny_bundle  # noqa: F401 (fixtures)


def emulated_device(home, log):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env["HOME"] = str(home)

    def run(argv):
        log.append(argv)
        if argv[0] == "ssh":
            return subprocess.run(["bash", "-c", argv[-1]], cwd=home, env=env, capture_output=True, text=True,
                                  timeout=300)
        src, dst = argv[-2], argv[-1]
        if src.startswith("user@device:"):
            shutil.copy(home / src.split(":", 1)[1], dst)
        else:
            shutil.copy(src, home / dst.split(":", 1)[1])
        return subprocess.CompletedProcess(argv, 0, "", "")

    return run, env


def test_host_flow_installs_profiles_self_tests_and_serves(tmp_path, tiny_bundle, runtime_wheel, monkeypatch, capsys):
    home = tmp_path / "device-home"
    home.mkdir()
    log = []
    runner, env = emulated_device(home, log)
    monkeypatch.setattr(remote_mod, "_run", runner)
    monkeypatch.setattr("edge_anytime.deploy.__main__.reach", lambda remote: log.append(remote.reach_check()))
    out = tmp_path / "pkg-x86"
    status = deploy_main(["--target", "x86-64", "--bundle", str(tiny_bundle), "--out", str(out), "--host",
                          "user@device", "--samples", "100", "--wheel", str(runtime_wheel)])
    assert status == 0, capsys.readouterr()
    assert [argv[0] for argv in log] == ["ssh", "ssh", "scp", "ssh", "ssh", "ssh", "scp"]
    installed = home / "edge-anytime" / "pkg-x86"
    assert (installed / "venv" / "bin" / "python").exists()
    # the fetched profile is in the local package and valid for the simulator
    bundle = Bundle.load(out / "bundle")
    profile = bundle.profiles["x86-64"]
    assert all(len(per["fp32"]) == 100 for per in profile.graphs.values())
    assert not (tmp_path / ".pkg-x86.upload.tar.gz").exists()
    # the venv holds only the runtime and its pins
    freeze = subprocess.run([str(installed / "venv" / "bin" / "python"), "-m", "pip", "freeze"], capture_output=True,
                            text=True, env=env).stdout
    names = {line.replace(" @ ", "==").split("==")[0].lower() for line in freeze.splitlines() if line.strip()}
    assert {"numpy", "ai-edge-litert", "edge-anytime"} <= names
    assert not names & {"torch", "tensorflow", "tensorflow-cpu", "onnx", "keras"}
    # the installed launcher serves a replayed stream
    result = subprocess.run([str(installed / "run.sh"), "--source", "npz:bundle/reference/self_test.npz",
                             "--sink", "jsonl:served.jsonl", "--budget-ms", "100"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (installed / "served.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["status"] == "final" for r in records)
    assert "served 6 frames" in result.stderr


def test_remote_failure_is_reported_and_nothing_is_written(tmp_path, tiny_bundle, runtime_wheel, monkeypatch,
                                                           capsys):
    def failing(argv):
        if argv[0] == "ssh" and "install.sh" in argv[-1]:
            return subprocess.CompletedProcess(argv, 1, "", "install.sh: python3.10 not found")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(remote_mod, "_run", failing)
    monkeypatch.setattr("edge_anytime.deploy.__main__.reach", lambda remote: None)
    out = tmp_path / "pkg"
    assert deploy_main(["--target", "jetson", "--bundle", str(tiny_bundle), "--out", str(out), "--host",
                        "user@device", "--wheel", str(runtime_wheel)]) == 1
    err = capsys.readouterr().err
    assert "on user@device: install failed (exit 1)" in err and "python3.10 not found" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.fixture(autouse=True)
def _no_real_ssh(monkeypatch):
    """Belt and braces: these tests never run the real ssh or scp."""
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to run real ssh/scp")

    monkeypatch.setattr(remote_mod, "check_tools", refuse)
