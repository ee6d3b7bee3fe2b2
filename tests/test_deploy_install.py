"""The whole --host flow against an emulated device on this machine (about 20-30 s).

ssh/scp are replaced by a runner that executes each remote command with bash in a fake home folder, so
the real package is archived, unpacked, installed into a fresh venv by its own install.sh (pinned numpy +
ai-edge-litert + pyserial from the package index, the runtime wheel with its own dependencies), profiled and self-tested by its
profile.sh, and the profile is fetched back; then the installed launcher serves a replayed npz stream.
No network host is contacted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
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
    # the wheel's command is installed, and run.sh works out of the box with the x86-64 default, a serial
    # source (pyserial comes with the package), pointed by the environment at a pseudo-terminal
    inspect = subprocess.run([str(installed / "venv" / "bin" / "edge-anytime"), "inspect", "--bundle",
                              str(installed / "bundle")], capture_output=True, text=True, env=env, timeout=60)
    assert inspect.returncode == 0 and "format v2" in inspect.stdout, inspect.stderr
    assert "pyserial" in names
    serve_over_a_pty(installed, env)
    # a redeploy keeps the device's venv and its edited serve.env
    (installed / "serve.env").write_text("EA_SOURCE=npz:mine.npz\n")
    (installed / "venv" / "marker").write_text("kept")
    status = deploy_main(["--target", "x86-64", "--bundle", str(tiny_bundle), "--out", str(out), "--host",
                          "user@device", "--samples", "20", "--force", "--wheel", str(runtime_wheel)])
    assert status == 0
    assert (installed / "venv" / "marker").exists() and "mine.npz" in (installed / "serve.env").read_text()
    assert not (installed / "served.jsonl").exists()


def serve_over_a_pty(installed: Path, env: dict) -> None:
    from edge_anytime.serial.link import SerialLink
    from edge_anytime.serial.peer import SerialPeer
    from edge_anytime.serial.protocol import Result
    from tests.test_deploy_serve import FdPort

    master, slave = os.openpty()
    proc = subprocess.Popen([str(installed / "run.sh"), "--max-frames", "2"], cwd=installed,
                            env=dict(env, EA_SOURCE=f"serial://{os.ttyname(slave)}?baud=115200"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with SerialPeer(SerialLink(FdPort(master))) as peer:
            peer.hello(30.0)
            answers = [peer.infer(np.zeros((8, 8, 3), np.uint8), 0.2, timeout=10.0) for _ in range(2)]
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(slave)
    assert proc.returncode == 0, err
    assert all(isinstance(a, Result) for a in answers) and "served 2 frames" in err


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


def _python38():
    for candidate in [*sorted(Path.home().glob(".pyenv/versions/3.8*/bin/python3.8")), shutil.which("python3.8")]:
        if candidate and subprocess.run([str(candidate), "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


PY38 = _python38()


@pytest.mark.slow
@pytest.mark.skipif(PY38 is None, reason="needs a Python 3.8 interpreter (pyenv)")
def test_old_image_pins_install_and_self_test_on_python38_with_tflite_runtime(tmp_path, tiny_bundle, runtime_wheel):
    """The jetson-nano pins (Python 3.8, numpy 1.24.4, tflite-runtime 2.13.0), on this machine's x86 wheels."""
    out = tmp_path / "nano"
    assert deploy_main(["--target", "jetson-nano", "--bundle", str(tiny_bundle), "--out", str(out),
                        "--wheel", str(runtime_wheel)]) == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env["PYTHON"] = str(PY38)
    for script in ("install.sh", "selftest.sh"):
        result = subprocess.run([str(out / script)], capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    assert "backend tflite_runtime, precision int8" in result.stdout and "PASS" in result.stdout
