"""Serial protocol records and framing: round trips, the documented test vectors, encode errors."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from edge_anytime.results import ExitResult, FrameResult, Prediction, StopReason
from edge_anytime.serial.codes import STATUS_CODES
from edge_anytime.serial.protocol import (FLAG_SEQ_RESET, HEADER_SIZE, OVERHEAD, Error, ErrorCode, Frame,
                                          FrameDecoder, Hello, Info, Malformed, MsgType, Ping, Pong, ProtocolError,
                                          Refinement, Result, crc32, decode_payload, encode)

# The test vectors of docs/serial-protocol.md (keep both in step).
PING_VECTOR = "ea7e010301000100040000008447f82b78563412a7870beb"
FRAME_VECTOR = ("ea7e011000000500220000005a8bd76c"                          # header, seq 5, length 34
                "07000000" "01" "00" "00" "03" "20a1070000000000" "00000000"  # id, mode, dtype, flags, k, us, target
                "0100" "0200" "0300" "0000" "000102030405"                     # H, W, C, reserved, pixels
                "5e20eaf5")                                                    # frame CRC-32

RESULT_VECTOR = ("ea7e01110000060030000000a3722807"                          # header, seq 6, length 48
                 "07000000" "01" "01" "01" "02" "0400" "ffff" "0000403f"     # id status exit mode k label coarse conf
                 "c4090000" "d4feffff" "0400" "0200" "0000" "0000"          # elapsed lateness run skipped late 0
                 "04000000" "0000403f" "01000000" "0000003e"                # top-k (label, reserved, probability) x 2
                 "50fed7e6")                                                # frame CRC-32


def bitwise_crc32(data: bytes) -> int:
    """The bit-at-a-time CRC-32 that docs/serial-protocol.md gives in C, for firmware without zlib."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def one(wire: bytes):
    messages = FrameDecoder().feed(wire)
    assert len(messages) == 1, messages
    return messages[0]


def test_crc32_check_value_and_ping_vector():
    assert crc32(b"123456789") == bitwise_crc32(b"123456789") == 0xCBF43926
    wire = encode(Ping(token=0x12345678), seq=1, flags=FLAG_SEQ_RESET)
    assert wire.hex() == PING_VECTOR
    assert len(wire) == OVERHEAD + 4
    assert struct.unpack_from("<I", wire, 12)[0] == crc32(wire[:12])
    assert struct.unpack_from("<I", wire, len(wire) - 4)[0] == crc32(wire[:-4]) == bitwise_crc32(wire[:-4])


def test_frame_vector():
    pixels = np.arange(6, dtype=np.uint8).reshape(1, 2, 3)
    frame = Frame.from_array(7, pixels, budget_s=0.5, mode="anytime", top_k=3)
    wire = encode(frame, seq=5)
    assert wire.hex() == FRAME_VECTOR
    assert one(wire) == frame
    np.testing.assert_array_equal(one(wire).array, pixels)


def test_result_vector():
    result = Result(7, StopReason.DEADLINE, exit_index=1, label=4, confidence=0.75, elapsed_us=2500, lateness_us=-300,
                    steps_run=4, steps_skipped=2, mode="anytime", top_k=((4, 0.75), (1, 0.125)))
    assert encode(result, seq=6).hex() == RESULT_VECTOR
    assert one(bytes.fromhex(RESULT_VECTOR)) == result


MESSAGES = [
    Hello(), Hello("stm32-cam ü"),
    Info("gtsrb-resann", 43, 32, 32, 3, "uint8", 7, 1 << 20),
    Ping(0), Ping(0xFFFFFFFF), Pong(9, 123456789012),
    Frame.from_array(0, np.zeros((32, 32, 3), np.uint8), budget_s=0.003),
    Frame.from_array(1, np.linspace(0, 255, 12, dtype=np.float32).reshape(2, 2, 3), deadline_s=1234.5,
                     mode="apriori", confidence_target=0.9, refinements=True, top_k=5),
    Frame.from_array(0xFFFFFFFF, np.ones((1, 1, 1), np.uint8)),
    Result(3, StopReason.FINAL, 2, 5, 0.875, 1, 1500, -200, 6, 0, 0, "anytime", ((5, 0.875), (1, 0.1))),
    Result(4, StopReason.NO_RESULT, error="frame 4: deadline already passed"),
    Result(5, "confidence", 0, 0, 0.99, lateness_us=-(1 << 31)),
    Refinement(3, 0, 5, 0.5, None, 700, 2), Refinement(3, 1, 5, 0.7, 2, 900, 4, ((5, 0.7),)),
    Error(ErrorCode.BAD_SHAPE, "frame 7: shape (16, 16, 3)", 7, 12), Error(ErrorCode.INTERNAL),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message):
    decoded = one(encode(message, seq=77))
    assert decoded == message
    assert decoded.seq == 77
    assert type(decoded) is type(message)


def test_every_stop_reason_has_a_wire_code():
    assert set(STATUS_CODES) == set(StopReason)
    assert sorted(STATUS_CODES.values()) == list(range(len(StopReason)))
    for reason in StopReason:
        assert one(encode(Result(1, reason))).status is reason


def _frame_result(status=StopReason.DEADLINE, with_best=True):
    pred = Prediction(label=3, label_name="c3", confidence=0.8123, margin=0.5, entropy=0.3,
                      top_k=((3, 0.8123), (0, 0.1), (1, 0.05)), probabilities=np.zeros(4), coarse_label=1)
    best = ExitResult(frame_id=11, exit_index=1, prediction=pred, elapsed_s=0.0021, steps_run=4)
    return FrameResult(frame_id=11, status=status, best=best if with_best else None,
                       exits=(best,) if with_best else (), budget_s=0.004, start_s=10.0, deadline_s=10.004,
                       delivered_s=10.0035, steps_run=4, steps_skipped=2, late_steps=1, mode="anytime",
                       error=None if with_best else "backend failed")


def test_result_from_frame_result():
    result = Result.from_frame_result(_frame_result(), top_k=2)
    assert (result.frame_id, result.status, result.exit_index, result.label, result.coarse_label) == \
        (11, StopReason.DEADLINE, 1, 3, 1)
    assert result.confidence == pytest.approx(0.8123, rel=1e-6)
    assert (result.elapsed_us, result.lateness_us, result.steps_run, result.steps_skipped, result.late_steps) == \
        (3500, -500, 4, 2, 1)
    assert [label for label, _ in result.top_k] == [3, 0]
    assert one(encode(result)) == result
    empty = Result.from_frame_result(_frame_result(StopReason.NO_RESULT, with_best=False), frame_id=99)
    assert (empty.frame_id, empty.exit_index, empty.label, empty.confidence, empty.error) == \
        (99, None, None, None, "backend failed")
    assert one(encode(empty)) == empty
    refinement = Refinement.from_exit_result(_frame_result().best, top_k=1)
    assert (refinement.exit_index, refinement.label, refinement.elapsed_us, refinement.top_k[0][0]) == (1, 3, 2100, 3)


def test_bad_records_raise_protocol_errors_that_say_what_fits():
    with pytest.raises(ProtocolError, match="pixel bytes"):
        Frame(1, b"\x00" * 5, (2, 1, 3))
    with pytest.raises(ProtocolError, match="HWC"):
        Frame.from_array(1, np.zeros((4, 4), np.uint8))
    with pytest.raises(ProtocolError, match="dtype"):
        Frame.from_array(1, np.zeros((1, 1, 1), np.int16))
    with pytest.raises(ProtocolError, match="mode"):
        Frame.from_array(1, np.zeros((1, 1, 1), np.uint8), mode="fast")
    with pytest.raises(ProtocolError, match="not both"):
        Frame(1, b"\x00", (1, 1, 1), budget_us=5, deadline_us=9)
    with pytest.raises(ProtocolError, match="label=70000"):
        encode(Result(1, StopReason.FINAL, 0, 70000, 0.5))
    with pytest.raises(ProtocolError, match="cannot encode"):
        encode(Malformed(0x55, "x"))


def test_undecodable_payloads_become_malformed_messages():
    assert isinstance(decode_payload(0x55, b""), Malformed)
    short = decode_payload(MsgType.RESULT, b"\x00" * 10, seq=4)
    assert isinstance(short, Malformed) and "RESULT" in short.reason and short.seq == 4
    frame = Frame.from_array(1, np.zeros((2, 2, 3), np.uint8)).pack()
    cut = decode_payload(MsgType.FRAME, frame[:-1])
    assert isinstance(cut, Malformed) and "pixel bytes" in cut.reason
    bad_status = bytearray(Result(1, StopReason.FINAL).pack())
    bad_status[4] = 42
    assert isinstance(decode_payload(MsgType.RESULT, bytes(bad_status)), Malformed)


def test_header_layout():
    wire = encode(Error(ErrorCode.BUSY, "x"), seq=0x1234, flags=FLAG_SEQ_RESET)
    magic, version, msg_type, flags, reserved, seq, length = struct.unpack_from("<2sBBBBHI", wire)
    assert (magic, version, msg_type, flags, reserved, seq) == (b"\xEA\x7E", 1, 0x7F, 1, 0, 0x1234)
    assert length == len(wire) - OVERHEAD == 11
    assert HEADER_SIZE == 16
    assert math.isnan(struct.unpack_from("<f", Result(1, StopReason.NO_RESULT).pack(), 12)[0])


def test_the_documented_test_vectors_decode():
    """Every hex block of docs/serial-protocol.md section 7 is a valid wire frame (doc and code agree)."""
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "serial-protocol.md"
    blocks = re.findall(r"```\n(ea7e.*?)```", doc.read_text(), re.S)
    wires = ["".join(re.sub(r"\s{2,}[a-zA-Z].*$", "", line).replace(" ", "") for line in block.strip().splitlines())
             for block in blocks]
    assert wires[0] == PING_VECTOR and wires[2] == FRAME_VECTOR and wires[3] == RESULT_VECTOR
    assert wires[1] == encode(Hello(), seq=0, flags=FLAG_SEQ_RESET).hex()


def test_long_texts_are_cut_to_240_bytes_on_a_character_boundary():
    got = one(encode(Error(ErrorCode.INTERNAL, "é" * 300)))
    assert got.text == "é" * 120
    assert one(encode(Result(1, StopReason.NO_RESULT, error="x" * 500))).error == "x" * 240
