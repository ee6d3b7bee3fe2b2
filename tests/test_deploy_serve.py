"""The device side: self-test and profiling APIs, and the `edge_anytime.serve` launcher with its sources
(npz replay, image folder, serial link) and sinks (stdout, JSON lines), SIGTERM and counters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edge_anytime import Bundle
from edge_anytime.profiling import ProfileOptions, profile_bundle
from edge_anytime.profile import load_profile
from edge_anytime.selftest import TOLERANCES, parse_precision, run_selftest
from edge_anytime.serve import fit, main as serve_main, read_pnm
from tests.conftest import REPO
from tests.test_deploy_support import copy_bundle, tiny_bundle  # noqa: F401 (fixture)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "stem=int8,*=fp32"])
def test_selftest_passes_at_every_precision_with_its_tolerance(tiny_bundle, precision):
    report = run_selftest(tiny_bundle, "litert", 1, parse_precision(precision))
    assert report.passed, str(report)
    assert [c.samples for c in report.checks] == [6, 6, 6]
    if precision.startswith("stem=int8"):      # every exit depends on the int8 stem
        assert {c.precision for c in report.checks} == {"int8"}
    assert str(report).startswith("self-test PASS")


def test_tolerances_get_looser_with_lower_precision():
    assert TOLERANCES["fp32"] < TOLERANCES["fp16"] < TOLERANCES["int8"]


def test_profile_bundle_samples_every_graph_in_plan_order(tiny_bundle, tmp_path):
    bundle_dir = copy_bundle(tiny_bundle, tmp_path / "b")
    profile = profile_bundle(bundle_dir, "x86-64", precision="fp16", options=ProfileOptions(warmup=3, samples=40))
    path = profile.save(bundle_dir)
    loaded = load_profile(path, Bundle.load(bundle_dir).program)
    assert {g: sorted(p) for g, p in loaded.graphs.items()} == {"stem": ["fp16"], "body": ["fp16"], "head": ["fp16"]}
    assert all(len(v["fp16"]) == 40 for v in loaded.graphs.values())
    assert Bundle.load(bundle_dir).profiles["x86-64"].threads == 1


def test_serve_replays_an_npz_stream_to_stdout_and_jsonl(tiny_bundle, tmp_path, capsys):
    frames = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    stream = tmp_path / "stream.npz"
    np.savez(stream, frames=frames, budget_ms=np.full(5, 200.0), labels=np.array([0, 1, 2, 3, 0]))
    log = tmp_path / "results.jsonl"
    assert serve_main(["--bundle", str(tiny_bundle), "--source", f"npz:{stream}", "--sink", "stdout",
                       "--sink", f"jsonl:{log}", "--precision", "fp32"]) == 0
    out, err = capsys.readouterr()
    lines = [l for l in out.splitlines() if l.startswith("frame ")]
    assert len(lines) == 5 and all("final exit 2" in l for l in lines)
    records = [json.loads(l) for l in log.read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2, 3, 4]
    assert all(r["status"] == "final" and r["met_deadline"] and r["budget_ms"] == 200.0 for r in records)
    assert [r["truth"] for r in records] == [0, 1, 2, 3, 0]
    assert "served 5 frames" in err and "deadlines met 5/5" in err and "accuracy" in err
    assert "ControllerStats(frames=5" in err


def test_serve_reads_an_image_folder(tiny_bundle, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    big = np.random.default_rng(2).integers(0, 256, (20, 16, 3), dtype=np.uint8)
    (folder / "a.ppm").write_bytes(b"P6\n# a comment\n16 20\n255\n" + big.tobytes())
    np.save(folder / "b.npy", big[:8, :8])
    assert np.array_equal(read_pnm(folder / "a.ppm"), big)
    assert fit(big, 8, 8).shape == (8, 8, 3) and fit(big[:, :, 0], 4, 4).shape == (4, 4, 3)
    assert serve_main(["--bundle", str(tiny_bundle), "--source", f"dir:{folder}", "--budget-ms", "200"]) == 0
    out, err = capsys.readouterr()
    assert len([l for l in out.splitlines() if l.startswith("frame ")]) == 2
    assert "served 2 frames" in err


@pytest.mark.parametrize("args, message", [
    (["--source", "npz:{stream}"], "has no budget: pass --budget-ms"),
    (["--source", "camera:0", "--budget-ms", "5"], "unknown source 'camera:0'"),
    (["--source", "npz:{stream}", "--budget-ms", "5", "--sink", "udp:1"], "unknown sink 'udp:1'"),
])
def test_serve_bad_input_is_a_clear_error(tiny_bundle, tmp_path, capsys, args, message):
    stream = tmp_path / "s.npz"
    np.savez(stream, frames=np.zeros((2, 8, 8, 3), np.uint8))
    argv = ["--bundle", str(tiny_bundle)] + [a.format(stream=stream) for a in args]
    assert serve_main(argv) == 1
    assert message in capsys.readouterr().err


def test_sigterm_stops_the_service_gracefully_and_prints_counters(tiny_bundle, tmp_path):
    stream = tmp_path / "s.npz"
    np.savez(stream, frames=np.zeros((3, 8, 8, 3), np.uint8))
    log = tmp_path / "log.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "edge_anytime.serve", "--bundle", str(tiny_bundle), "--source",
                             f"npz:{stream}", "--loop", "0", "--rate-hz", "100", "--budget-ms", "50",
                             "--sink", f"jsonl:{log}"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 5):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    served = len(log.read_text().splitlines())
    assert served >= 5 and f"served {served} frames" in err, err


class FdPort:
    """The master side of a pseudo-terminal as a pyserial-like port (read/write/close)."""

    in_waiting = 0

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def read(self, n: int) -> bytes:
        import select

        if not select.select([self.fd], [], [], 0.05)[0]:
            return b""
        try:
            return os.read(self.fd, max(n, 4096))
        except BlockingIOError:
            return b""

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                time.sleep(0.001)
        return len(data)

    def close(self) -> None:
        os.close(self.fd)


def test_serve_over_a_serial_link_end_to_end(tiny_bundle, tmp_path):
    pytest.importorskip("serial")
    from edge_anytime.serial.link import SerialLink
    from edge_anytime.serial.peer import SerialPeer
    from edge_anytime.serial.protocol import Result

    master, slave = os.openpty()
    log = tmp_path / "log.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "edge_anytime.serve", "--bundle", str(tiny_bundle), "--source",
                             f"serial://{os.ttyname(slave)}?baud=115200", "--sink", f"jsonl:{log}",
                             "--budget-ms", "200", "--max-frames", "3"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        with SerialPeer(SerialLink(FdPort(master))) as peer:
            info = peer.hello(20.0)
            assert (info.model, info.height, info.width, info.channels) == ("tiny", 8, 8, 3)
            frame = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
            answers = [peer.infer(frame, None, timeout=10.0) for _ in range(3)]
        assert all(isinstance(a, Result) and a.exit_index == 2 for a in answers), answers
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(slave)
    assert proc.returncode == 0, err
    assert len(log.read_text().splitlines()) == 3 and "served 3 frames" in err


def test_serve_seeds_from_a_matching_profile_only(tiny_bundle, tmp_path, capsys):
    bundle_dir = copy_bundle(tiny_bundle, tmp_path / "b")
    profile_bundle(bundle_dir, "x86-64", precision="fp32", options=ProfileOptions(warmup=1, samples=10)).save(bundle_dir)
    stream = tmp_path / "s.npz"
    np.savez(stream, frames=np.zeros((2, 8, 8, 3), np.uint8))
    base = ["--bundle", str(bundle_dir), "--source", f"npz:{stream}", "--budget-ms", "100", "--profile-target", "x86-64"]
    assert serve_main(base + ["--precision", "fp32"]) == 0
    assert "seeding latencies by warm-up" not in capsys.readouterr().err
    assert serve_main(base + ["--precision", "fp16"]) == 0
    assert "a profile measured at other precisions 'x86-64'" in capsys.readouterr().err
