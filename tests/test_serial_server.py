"""SerialServer + SerialPeer end to end: over loop:// (one thread, simulated clock) and over a real
pseudo-terminal pair (server thread, real clock), with the real Controller on the fake backend."""

from __future__ import annotations

import json
import os
import select
import threading
import time

import numpy as np
import pytest

from edge_anytime import Controller, ControllerOptions, SimulatedClock, StopReason
from edge_anytime.backends.fake import FakeBackend
from edge_anytime.manifest import InputSpec, ModelInfo
from edge_anytime.serial import (Error, ErrorCode, Hello, Info, Ping, Pong, Result, SerialLink, SerialPeer,
                                 SerialServer, ServerOptions, open_link)
from edge_anytime.serial.peer import main as peer_main
from tests.conftest import tiny_model, tiny_program

pytest.importorskip("serial")
MS = 1e-3


def outputs(graph, inputs):
    """Exit k says 'class 2' with growing confidence."""
    if graph == "stem":
        return {"y": np.ones((1, 4, 8, 8), np.float32)}
    if graph == "body":
        return {"y": inputs["x"] + 1.0}
    return {"logits": np.array([[0.0, 0.0, 2.0 * float(inputs["x"].mean()), 0.0]], np.float32)}


def make_controller(simulated: bool) -> Controller:
    clock = SimulatedClock() if simulated else None
    latency = {"stem": 1 * MS, "body": 1 * MS, "head": 0.2 * MS}
    backend = FakeBackend(latency=latency, outputs=outputs, clock=clock)
    options = ControllerOptions(warmup_runs=2, margin_s=1 * MS, watchdog_guard_s=0.5 * MS)
    return Controller.from_program(tiny_program(3), tiny_model(), backend, clock=clock, options=options)


FRAME = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)


def serve_one(server: SerialServer, timeout: float = 5.0) -> None:
    """Let the server handle the one request written to a shared loop:// link.

    On loop:// the peer and the server share one link (both directions in one
    queue), so requests go one at a time: a second poll could read the
    server's own answers, which it ignores and the peer would never see.
    """
    deadline = time.monotonic() + timeout
    while server.poll(0.1) == 0:
        assert time.monotonic() < deadline, "the server got no message"


def test_loop_round_trip_single_thread():
    """On loop:// one link carries both directions: the peer writes, the server polls and answers."""
    with make_controller(simulated=True) as ctrl, open_link("loop://") as link:
        server = SerialServer(ctrl, link, ServerOptions(announce=False))
        peer = SerialPeer(link)

        link.send(Hello("test"))
        serve_one(server)
        assert peer.pump(1.0) == [Info("tiny", 4, 8, 8, 3, "uint8", 0, link.options.max_payload)]

        link.send(Ping(42))
        serve_one(server)
        (pong,) = peer.pump(1.0)
        assert isinstance(pong, Pong) and pong.token == 42 and pong.server_time_us == round(ctrl.clock.now() * 1e6)

        bad = peer.send_frame(np.zeros((16, 16, 3), np.uint8), 0.05)
        serve_one(server)
        error = peer.wait_result(bad, 1.0)
        assert isinstance(error, Error) and error.code is ErrorCode.BAD_SHAPE and "(8, 8, 3)" in error.text
        good = peer.send_frame(FRAME, 0.05, refinements=True, top_k=2)
        serve_one(server)
        result = peer.wait_result(good, 1.0)
        assert isinstance(result, Result)
        assert (result.status, result.exit_index, result.label, result.steps_run) == (StopReason.FINAL, 2, 2, 6)
        assert result.confidence > 0.5 and result.lateness_us < 0 and result.elapsed_us > 0
        assert [label for label, _ in result.top_k][:1] == [2] and len(result.top_k) == 2
        assert [r.exit_index for r in peer.refinements[good]] == [0, 1, 2]
        s = server.stats
        assert (s.frames, s.rejected, s.results, s.refinements, s.errors_sent) == (2, 1, 1, 3, 1)
        assert s.link.errors == 0 and s.link.garbage_bytes == 0
        server.close()
        assert not link.closed                           # a link passed in stays open


def test_frames_the_controller_rejects_get_a_no_result_answer():
    with make_controller(simulated=True) as ctrl, open_link("loop://") as link:
        server = SerialServer(ctrl, link, ServerOptions(announce=False))
        peer = SerialPeer(link)
        answers = []
        for frame, budget_s, deadline_s in [(np.full((8, 8, 3), np.nan, np.float32), 0.05, None),
                                            (FRAME, None, None),      # no budget, no server default
                                            (FRAME, None, 1e-6)]:     # long gone on the server clock
            frame_id = peer.send_frame(frame, budget_s, deadline_s=deadline_s)
            serve_one(server)
            answers.append(peer.wait_result(frame_id, 1.0))
        first, second, third = answers
        assert isinstance(first, Result) and first.status is StopReason.NO_RESULT and "NaN" in first.error
        assert isinstance(second, Error) and second.code is ErrorCode.BAD_FRAME and "--budget-ms" in second.text
        assert isinstance(third, Result) and third.status is StopReason.NO_RESULT and "passed" in third.error
        assert server.stats.controller_errors >= 2


class StuckController:
    """A duck-typed stand-in that accepts frames and never answers (or fails on request)."""

    def __init__(self, fail: bool = False):
        self.model = ModelInfo("stub", "stub", ("a", "b"), InputSpec("x", (1, 4, 4, 3), layout="NHWC"))
        self.clock = SimulatedClock()
        self.fail = fail
        self.callbacks = []

    def add_callbacks(self, callbacks):
        self.callbacks.append(callbacks)

    def submit(self, frame, budget_s=None, **kwargs):
        if self.fail:
            raise RuntimeError("backend on fire")


@pytest.mark.parametrize("fail", [False, True])
def test_busy_and_failing_submit_answer_errors_and_the_loop_goes_on(fail):
    with open_link("loop://") as link:
        server = SerialServer(StuckController(fail), link,
                              ServerOptions(announce=False, max_pending=1, default_budget_s=0.01))
        peer = SerialPeer(link)
        ids = []
        for _ in range(2):
            ids.append(peer.send_frame(np.zeros((4, 4, 3), np.uint8)))
            serve_one(server)
            peer.pump(0.3)
        link.port.write(b"\xEA\x7E garbage \x00\xff")
        link.send(Ping(1))
        serve_one(server)
        peer.pump(0.3)
        answers = [peer.frame_errors.get(i) for i in ids]
        if fail:
            assert [a.code for a in answers] == [ErrorCode.INTERNAL] * 2 and "backend on fire" in answers[0].text
        else:
            assert answers[0] is None and answers[1].code is ErrorCode.BUSY
        assert 1 in peer._pongs and server.stats.link.garbage_bytes > 0


class FdPort:
    """The master side of a pseudo-terminal as a port-like object for SerialLink."""

    def __init__(self, fd: int, timeout: float = 0.02):
        self.fd, self.timeout = fd, timeout

    def read(self, n: int) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], self.timeout)
        return os.read(self.fd, 65536) if ready else b""

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        return len(data)

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def pty_pair():
    """(master fd, slave device path); the test closes the master (through its SerialLink)."""
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(slave)


def test_pty_end_to_end_with_a_server_thread(pty_pair):
    master, slave_name = pty_pair
    with make_controller(simulated=False) as ctrl, \
            SerialServer(ctrl, f"serial://{slave_name}?baud=921600", ServerOptions(refinements=True)) as server:
        assert server.link.port.baudrate == 921600
        server.start()
        with SerialPeer(SerialLink(FdPort(master))) as peer:
            info = peer.hello(2.0)
            assert (info.model, info.height, info.width, info.channels) == ("tiny", 8, 8, 3)
            rtt, _ = peer.ping(2.0)
            assert rtt < 1.0
            bad = peer.infer(np.zeros((4, 4, 3), np.uint8), 0.05, timeout=2.0)
            assert isinstance(bad, Error) and bad.code is ErrorCode.BAD_SHAPE
            peer.link.port.write(b"\x00junk\xEA\x7E\x01more junk")         # line noise between frames
            answers = [peer.infer(FRAME, 0.2, timeout=3.0, top_k=3) for _ in range(5)]
            assert all(isinstance(a, Result) and a.label == 2 for a in answers), answers
            assert all(a.status in (StopReason.FINAL, StopReason.DEADLINE) for a in answers)
            assert len(peer.refinements[answers[-1].frame_id]) == answers[-1].exit_index + 1
            time.sleep(0.05)
            s = server.stats
            assert (s.frames, s.rejected, s.results) == (6, 1, 5)
            assert s.link.garbage_bytes > 0 and s.link.lost == 0 and s.link.bad_crc == 0
            assert peer.link.stats.errors == 0
        assert server.error is None
        server.close()
        peer.link.close()


def test_peer_command_line_against_a_server_on_the_master_side(pty_pair, capsys, tmp_path):
    master, slave_name = pty_pair
    frames = tmp_path / "frames.npz"
    np.savez(frames, frames=np.stack([FRAME] * 3))
    with make_controller(simulated=False) as ctrl, SerialLink(FdPort(master)) as link, \
            SerialServer(ctrl, link, ServerOptions(announce=False)) as server:
        server.start()
        assert peer_main(["--url", f"serial://{slave_name}?baud=115200", "--frames", str(frames),
                          "--budget-ms", "200", "--top-k", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["server"] == "tiny"
    assert [line["label"] for line in lines[1:4]] == [2, 2, 2]
    assert lines[-1]["link"]["messages"] == 4


def test_server_command_line_serves_until_the_line_dies(pty_pair, monkeypatch, capsys):
    from edge_anytime.serial.server import main as server_main

    master, slave_name = pty_pair
    monkeypatch.setattr(Controller, "from_bundle", classmethod(lambda cls, bundle, **kw: make_controller(False)))
    status = []
    thread = threading.Thread(target=lambda: status.append(server_main(
        ["--bundle", "unused", "--url", f"serial://{slave_name}?baud=921600", "--budget-ms", "200"])))
    thread.start()
    peer = SerialPeer(SerialLink(FdPort(master)))
    assert isinstance(peer.pump(5.0)[0], Info)                      # announced at start
    answer = peer.wait_result(peer.send_frame(FRAME), 5.0)           # no budget in the frame: --budget-ms
    assert isinstance(answer, Result) and answer.label == 2
    peer.link.close()                                                # hang up the master side
    thread.join(10.0)
    assert not thread.is_alive() and status == [1]
    err = capsys.readouterr().err
    assert "serving tiny (8x8x3 uint8 frames)" in err and "serial link failed" in err


def test_a_malformed_frame_is_answered_with_its_frame_id():
    import struct

    from edge_anytime.serial.messages import MsgType
    from edge_anytime.serial.protocol import HEADER, MAGIC, VERSION, crc32

    with make_controller(simulated=True) as ctrl, open_link("loop://") as link:
        server = SerialServer(ctrl, link, ServerOptions(announce=False))
        peer = SerialPeer(link)
        payload = struct.pack("<I", 4242) + b"\x07\x00"              # a FRAME payload cut after its id
        head = HEADER.pack(MAGIC, VERSION, int(MsgType.FRAME), 0, 0, 9, len(payload))
        head += struct.pack("<I", crc32(head))
        link.port.write(head + payload + struct.pack("<I", crc32(payload, crc32(head))))   # both CRCs valid
        serve_one(server)
        (error,) = peer.pump(1.0)
        assert isinstance(error, Error) and error.code is ErrorCode.BAD_MESSAGE
        assert error.frame_id == 4242 and error.ref_seq == 9
