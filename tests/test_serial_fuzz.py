"""Fuzzing a real server over a pseudo-terminal: valid frames mixed with garbage, corrupted, truncated and
malformed ones; every decodable FRAME is answered exactly once, with its frame id, and the server never dies.

The default run sends 3,000 inputs; `make test-slow` runs 100,000 (EDGE_ANYTIME_FUZZ overrides).
"""

from __future__ import annotations

import os
import struct
import time

import numpy as np
import pytest

from edge_anytime.serial import Error, Result, SerialLink, SerialPeer, SerialServer, ServerOptions
from edge_anytime.serial.messages import Frame, MsgType
from edge_anytime.serial.protocol import HEADER, MAGIC, VERSION, crc32, encode
from tests.test_serial_server import FdPort, make_controller, pty_pair  # noqa: F401  (fixture)

pytest.importorskip("serial")


def raw_message(msg_type: int, payload: bytes, seq: int) -> bytes:
    """A message with both CRCs valid, whatever its payload."""
    head = HEADER.pack(MAGIC, VERSION, int(msg_type), 0, 0, seq & 0xFFFF, len(payload))
    head += struct.pack("<I", crc32(head))
    return head + payload + struct.pack("<I", crc32(payload, crc32(head)))


def fuzz_stream(count: int, seed: int):
    """(wire chunks, ids that must be answered exactly once)."""
    rng = np.random.default_rng(seed)
    chunks, expected = [], set()
    seq = 0
    for i in range(count):
        kind = rng.integers(0, 6)
        seq += 1
        if kind == 0:       # a valid frame (pixels may hold anything, even headers)
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            chunks.append(encode(Frame.from_array(i, pixels, budget_s=0.05), seq))
            expected.add(i)
        elif kind == 1:     # line noise
            chunks.append(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes())
        elif kind == 2:     # a frame with a flipped byte (one of its CRCs fails): dropped, counted
            wire = bytearray(encode(Frame.from_array(i, np.zeros((8, 8, 3), np.uint8), budget_s=0.05), seq))
            wire[int(rng.integers(2, len(wire)))] ^= 0xFF
            chunks.append(bytes(wire))
        elif kind == 3:     # a frame cut short (the sender reset)
            wire = encode(Frame.from_array(i, np.zeros((8, 8, 3), np.uint8), budget_s=0.05), seq)
            chunks.append(wire[:int(rng.integers(1, len(wire) - 1))])
        elif kind == 4:     # both CRCs valid, payload malformed after the frame id: ERROR with the id
            chunks.append(raw_message(MsgType.FRAME, struct.pack("<I", i) + rng.bytes(int(rng.integers(0, 20))), seq))
            expected.add(i)
        else:               # a valid message of an unknown type
            chunks.append(raw_message(0x7F, rng.bytes(int(rng.integers(0, 16))), seq))
    return chunks, expected


def run_fuzz(pty, count: int, seed: int = 0) -> None:
    master, slave_name = pty
    chunks, expected = fuzz_stream(count, seed)
    with make_controller(simulated=False) as ctrl, \
            SerialServer(ctrl, f"serial://{slave_name}?baud=921600", ServerOptions(announce=False)) as server:
        server.start()
        answers: dict[int, int] = {}
        with SerialPeer(SerialLink(FdPort(master))) as peer:
            def drain(timeout: float) -> None:
                for message in peer.pump(timeout):
                    if isinstance(message, (Result, Error)) and message.frame_id is not None:
                        answers[message.frame_id] = answers.get(message.frame_id, 0) + 1
                peer.results.clear()                       # the peer also files them: keep memory flat
                peer.errors.clear()

            for n, chunk in enumerate(chunks):
                peer.link.port.write(chunk)
                if n % 10 == 9:                            # a peer that reads its answers as it goes
                    drain(0.001)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and set(answers) < expected:
                drain(0.2)
            missing = sorted(expected - set(answers))
            assert not missing, f"{len(missing)} decodable frames never answered, e.g. {missing[:5]}"
            twice = {k: v for k, v in answers.items() if v > 1}
            assert not twice, f"answered more than once: {list(twice.items())[:5]}"
            assert server.error is None and server.stats.send_failures == 0
        server.close()


def test_fuzzed_serial_inputs_are_each_answered_exactly_once(pty_pair):  # noqa: F811
    run_fuzz(pty_pair, int(os.environ.get("EDGE_ANYTIME_FUZZ", "3000")))


@pytest.mark.slow
def test_one_hundred_thousand_fuzzed_serial_inputs(pty_pair):  # noqa: F811
    run_fuzz(pty_pair, 100_000, seed=1)
