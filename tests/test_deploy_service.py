"""The hardened service: generated units pass `systemd-analyze verify`, run.sh lets the environment win over
serve.env, serve speaks sd_notify (READY, WATCHDOG, STOPPING) over a real datagram socket, reports each
real-time setting applied or refused, logs levelled lines and periodic counters, and serves Prometheus
metrics on localhost."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from pathlib import Path

import numpy as np
import pytest

from edge_anytime.deploy import files
from edge_anytime.deploy.targets import load_target
from edge_anytime.metrics import MetricsServer, ServiceMetrics
from edge_anytime.service_log import setup_logging
from edge_anytime.systemd import Notifier
from tests.conftest import REPO
from tests.test_deploy_support import tiny_bundle  # noqa: F401 (fixture)

TARGETS = ["jetson-orin-nano", "jetson-agx-orin", "jetson-nano", "raspberry-pi-5", "x86-64"]


def make_executable(path, text="#!/bin/sh\nexit 0\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("name", TARGETS)
def test_generated_unit_passes_systemd_analyze_verify(tmp_path, name):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (apt-get install systemd); the unit was not verified")
    target = load_target(name)
    app = tmp_path / "app"
    make_executable(app / "run.sh")
    unit = files.systemd_unit(target, "tiny").replace("@APP_DIR@", str(app)).replace("@USER@", "root")
    stubbed = []
    for command in target.service.pre_start:    # nvpmodel / jetson_clocks exist on the board only
        binary = command.split()[0]
        if not os.access(binary, os.X_OK):
            stub = make_executable(tmp_path / "stubs" / binary.lstrip("/"))
            unit = unit.replace(f"+{binary} ", f"+{stub} ").replace(f"+{binary}\n", f"+{stub}\n")
            stubbed.append(binary)
    path = tmp_path / files.UNIT_NAME
    path.write_text(unit)
    out = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    print(f"systemd-analyze verify {name}: rc {out.returncode}, stubbed {stubbed}")
    assert out.returncode == 0 and out.stdout.strip() == "" and out.stderr.strip() == "", out.stdout + out.stderr
    for key in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30", "StartLimitIntervalSec=300",
                "StartLimitBurst=5", "LimitMEMLOCK=infinity", "Restart=on-failure"):
        assert key in unit
    assert "EnvironmentFile" not in unit          # serve.env is read by run.sh, below the environment
    assert ("LimitRTPRIO=50" in unit) == (target.service.fifo_priority == 50)


def test_run_sh_takes_the_environment_over_serve_env(tmp_path):
    target = load_target("x86-64")
    app = tmp_path / "app"
    make_executable(app / "run.sh", files.run_sh(target, {"g": "fp32"}))
    (app / "serve.env").write_text(files.serve_env(target) + "EA_EXTRA=from-file\n")
    make_executable(app / "venv" / "bin" / "python",
                    '#!/bin/sh\necho "ARGS $*"; echo "EXTRA $EA_EXTRA"; echo "LEVEL $EA_LOG_LEVEL"\n')
    env = {"PATH": os.environ["PATH"], "EA_SOURCE": "csi://0", "EA_LOG_LEVEL": "debug"}
    out = subprocess.run([str(app / "run.sh"), "--max-frames", "3"], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert "--source csi://0 --sink none --budget-ms 10 --max-frames 3" in out.stdout
    assert "EXTRA from-file" in out.stdout and "LEVEL debug" in out.stdout


def test_notifier_sends_datagrams_and_rate_limits_the_watchdog(tmp_path):
    for address in (str(tmp_path / "notify.sock"), f"@edge-anytime-test-{os.getpid()}"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("\0" + address[1:] if address.startswith("@") else address)
            sock.settimeout(5)
            notifier = Notifier.from_environment({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"})
            assert notifier.enabled and notifier.watchdog_interval_s == 2.0
            assert notifier.ready("up")
            assert sock.recv(256) == b"READY=1\nSTATUS=up"
            assert notifier.ping(now=100.0) and not notifier.ping(now=100.5) and notifier.ping(now=101.1)
            assert [sock.recv(64) for _ in range(2)] == [b"WATCHDOG=1", b"WATCHDOG=1"]
    other_pid = Notifier.from_environment({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other_pid.watchdog_interval_s is None


def test_journal_lines_carry_the_priority(capsys):
    log = setup_logging("info", journal=True)
    log.debug("hidden")
    log.info("started")
    log.warning("camera stalled")
    log.error("failed")
    assert capsys.readouterr().err.splitlines() == ["<6>serve: started", "<4>serve: camera stalled",
                                                    "<3>serve: failed"]
    setup_logging("warning", journal=False).info("quiet")
    assert capsys.readouterr().err == ""


def test_metrics_render_and_are_served_on_localhost_only():
    from edge_anytime.results import FrameResult, StopReason

    metrics = ServiceMetrics(window=100)
    for i in range(10):
        late = i == 9
        metrics.on_final(FrameResult(i, StopReason.DEADLINE if late else StopReason.FINAL, None, (), 0.01, 0.0,
                                     0.01, 0.001 * (i + 1) + (0.1 if late else 0.0)))
    metrics.on_error(ValueError("x"), "frame")
    text = metrics.render()
    assert 'edge_anytime_frames_total{status="final"} 9' in text
    assert "edge_anytime_deadline_misses_total 10" in text        # no result (best None) counts as a miss
    assert "edge_anytime_fallback_results_total 0" in text
    assert 'edge_anytime_errors_total{kind="frame"} 1' in text and "edge_anytime_latency_seconds_count 10" in text
    assert 'edge_anytime_latency_seconds{quantile="0.5"} 0.005' in text
    server = MetricsServer(metrics, 0)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
        def stable(text):
            return [line for line in text.splitlines() if not line.startswith("edge_anytime_uptime_seconds ")]

        assert stable(body) == stable(metrics.render()) and body.endswith("\n")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other", timeout=5)
        assert server._server.server_address[0] == "127.0.0.1"
    finally:
        server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_under_systemd_notifies_pings_logs_counters_and_serves_metrics(tiny_bundle, tmp_path):
    """serve as the unit runs it: NOTIFY_SOCKET + WATCHDOG_USEC + JOURNAL_STREAM-style logs, --stats-every,
    --metrics-port scraped mid-run, then SIGTERM: READY, WATCHDOG pings, STOPPING, counters."""
    stream = tmp_path / "s.npz"
    np.savez(stream, frames=np.zeros((3, 8, 8, 3), np.uint8))
    address = str(tmp_path / "notify.sock")
    port = free_port()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(30)
        env = dict(os.environ, NOTIFY_SOCKET=address, WATCHDOG_USEC="400000", EA_METRICS_PORT=str(port),
                   EA_STATS_EVERY="0.2")
        proc = subprocess.Popen([sys.executable, "-m", "edge_anytime.serve", "--bundle", str(tiny_bundle),
                                 "--source", f"npz:{stream}", "--loop", "0", "--rate-hz", "100", "--budget-ms", "50",
                                 "--sink", "none"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            messages = [sock.recv(256).decode()]
            assert messages[0].startswith("READY=1")
            deadline = time.monotonic() + 20
            while messages.count("WATCHDOG=1") < 3 and time.monotonic() < deadline:
                messages.append(sock.recv(256).decode())
            scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
            while True:
                try:
                    messages.append(sock.recv(256).decode())
                except socket.timeout:
                    break
                if messages[-1] == "STOPPING=1":
                    break
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert messages.count("WATCHDOG=1") >= 3 and messages[-1] == "STOPPING=1"
    assert 'edge_anytime_frames_total{status="final"}' in scraped and "edge_anytime_latency_seconds_count" in scraped
    assert "counters: frames" in err and "latency ms p50" in err and "served" in err
    assert f"metrics on http://127.0.0.1:{port}/metrics" in err


def run_serve_as(user: str | None, tiny_bundle, tmp_path, *flags) -> subprocess.CompletedProcess:
    stream = tmp_path / "s.npz"
    np.savez(stream, frames=np.zeros((2, 8, 8, 3), np.uint8))
    if user is not None:                     # pytest's tmp folders are private to root: read the bundle's own
        stream = tiny_bundle / "reference" / "self_test.npz"
    cmd = [sys.executable, "-m", "edge_anytime.serve", "--bundle", str(tiny_bundle), "--source", f"npz:{stream}",
           "--budget-ms", "100", "--sink", "none", *flags]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", "--inh-caps=-all", *cmd]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, HOME=str(tmp_path)))


def test_realtime_settings_are_each_reported_applied_or_refused(tiny_bundle, tmp_path):
    cpu = sorted(os.sched_getaffinity(0))[0]
    out = run_serve_as(None, tiny_bundle, tmp_path, "--cpus", str(cpu), "--fifo-priority", "10", "--lock-memory")
    assert out.returncode == 0, out.stderr
    assert f"realtime cpu_affinity: applied (cpus [{cpu}])" in out.stderr
    for step in ("sched_fifo", "lock_memory"):      # root here may or may not hold CAP_SYS_NICE / CAP_IPC_LOCK
        assert f"realtime {step}: applied" in out.stderr or f"realtime {step}: refused (" in out.stderr, out.stderr
    print([line for line in out.stderr.splitlines() if "realtime" in line])


def test_realtime_refusals_name_the_fix_for_an_unprivileged_user(tiny_bundle, tmp_path):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to run serve as an unprivileged user")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user here")
    probe = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
                            "import edge_anytime"], cwd=REPO, capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot read the checkout or the venv here: {probe.stderr.strip()[-200:]}")
    public = Path(tempfile.mkdtemp(prefix="edge-anytime-nobody-"))   # pytest's tmp folders are private to root
    try:
        shutil.copytree(tiny_bundle, public / "bundle")
        for path in [public, *public.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        out = run_serve_as("nobody", public / "bundle", tmp_path, "--fifo-priority", "10", "--lock-memory")
    finally:
        shutil.rmtree(public, ignore_errors=True)
    assert out.returncode == 0, out.stderr
    assert "realtime sched_fifo: refused" in out.stderr and "CAP_SYS_NICE" in out.stderr
    memlock = subprocess.run(["bash", "-c", "ulimit -l"], capture_output=True, text=True).stdout.strip()
    if memlock != "unlimited":
        assert "realtime lock_memory: refused" in out.stderr and "ulimit -l" in out.stderr
    assert "served " in out.stderr and "deadlines met" in out.stderr


def test_a_fatal_error_is_a_levelled_log_line(tiny_bundle, capsys):
    from edge_anytime.serve import main as serve_main

    assert serve_main(["--bundle", str(tiny_bundle), "--source", "camera:0", "--budget-ms", "5"]) == 1
    err = capsys.readouterr().err
    assert " ERROR serve: error: unknown source 'camera:0'" in err


def test_a_csi_target_installs_into_a_venv_that_sees_jetpacks_opencv():
    import dataclasses

    orin = load_target("jetson-orin-nano")
    csi = dataclasses.replace(orin, service=dataclasses.replace(orin.service, source="csi://0"))
    install = files.install_sh(csi, "edge_anytime-0.1.0-py3-none-any.whl")
    assert '-m venv ${VENV_FLAGS:---system-site-packages} venv' in install and csi.service.extras == ()
    assert '"wheels/edge_anytime-0.1.0-py3-none-any.whl"' in install          # no opencv wheel shadowing it
    usb = dataclasses.replace(orin, service=dataclasses.replace(orin.service, source="v4l2:///dev/video0"))
    assert usb.service.extras == ("video",) and "whl[video]" in files.install_sh(usb, "edge_anytime-0.1.0-py3-none-any.whl")
