"""The numbers on the wire: message types, error/status/dtype/mode codes, sentinels, payload layouts.

A firmware author maps these one to one onto C enums and packed structs
(docs/serial-protocol.md has the tables). Everything is little-endian.

>>> FRAME_LAYOUT.size, RESULT_LAYOUT.size, TOPK_LAYOUT.size
(28, 32, 8)
>>> STATUS_CODES[StopReason.DEADLINE], MsgType.RESULT
(1, <MsgType.RESULT: 17>)
"""

from __future__ import annotations

import struct
from enum import IntEnum

import numpy as np

from ..errors import EdgeAnytimeError
from ..results import StopReason


class ProtocolError(EdgeAnytimeError, ValueError):
    """A message cannot be encoded or a payload cannot be decoded."""


class MsgType(IntEnum):
    HELLO = 0x01        # client -> server: who are you? (payload: optional client name)
    INFO = 0x02         # server -> client: model name, label count, input shape
    PING = 0x03
    PONG = 0x04
    FRAME = 0x10        # client -> server: one input frame with its budget
    RESULT = 0x11       # server -> client: the final answer for a frame
    REFINEMENT = 0x12   # server -> client: one exit's intermediate answer (optional)
    ERROR = 0x7F


class ErrorCode(IntEnum):
    BAD_MESSAGE = 1      # payload malformed (length, field value)
    UNSUPPORTED = 2      # unknown or unexpected message type
    BAD_SHAPE = 3        # frame H, W, C differ from the model input
    BAD_DTYPE = 4        # reserved: frame dtype not accepted by this server
    BAD_FRAME = 5        # the controller rejected the frame (NaN, bad budget, ...)
    BUSY = 6             # too many frames in flight
    INTERNAL = 7         # the controller or a callback failed


STATUS_CODES: dict[StopReason, int] = {
    StopReason.FINAL: 0, StopReason.DEADLINE: 1, StopReason.CONFIDENCE: 2,
    StopReason.INTERRUPTED: 3, StopReason.DEGRADED: 4, StopReason.NO_RESULT: 5,
}
STATUS_BY_CODE = {code: reason for reason, code in STATUS_CODES.items()}
DTYPE_CODES = {"uint8": 0, "float32": 1}
DTYPE_BY_CODE = {code: name for name, code in DTYPE_CODES.items()}
MODE_CODES = {None: 0, "anytime": 1, "apriori": 2}
MODE_BY_CODE = {code: name for name, code in MODE_CODES.items()}

NONE_U8, NONE_U16, NONE_U32 = 0xFF, 0xFFFF, 0xFFFFFFFF
FRAME_ABSOLUTE_DEADLINE, FRAME_HAS_CONFIDENCE, FRAME_WANT_REFINEMENTS = 0x01, 0x02, 0x04

INFO_LAYOUT = struct.Struct("<HHHHBBHI")          # 16 bytes, then name (utf-8, rest of payload)
PONG_LAYOUT = struct.Struct("<IIQ")               # 16 bytes
FRAME_LAYOUT = struct.Struct("<IBBBBQfHHHH")      # 28 bytes, then raw pixels
RESULT_LAYOUT = struct.Struct("<IBBBBHHfIiHHHH")  # 32 bytes, then top-k, then error text
REFINE_LAYOUT = struct.Struct("<IBBHHHfI")        # 20 bytes, then top-k
TOPK_LAYOUT = struct.Struct("<HHf")               # 8 bytes per entry
ERROR_LAYOUT = struct.Struct("<HBBIH")            # 10 bytes, then text (utf-8, rest of payload)


# Helpers shared by the message records.

def f32(value: float | None) -> float | None:
    """Round to the nearest float32, so records compare equal after a round trip."""
    return None if value is None else float(np.float32(value))


def set_fields(record, **values) -> None:
    for name, value in values.items():
        object.__setattr__(record, name, value)


def f32_topk(top_k) -> tuple[tuple[int, float], ...]:
    return tuple((int(label), f32(prob)) for label, prob in top_k)


def optional(value: int, none: int) -> int | None:
    return None if value == none else value


def unsigned(value: int | None, none: int, what: str) -> int:
    if value is None:
        return none
    if not 0 <= value < none:
        raise ProtocolError(f"{what}={value} does not fit the wire field (0..{none - 1})")
    return int(value)


def clamp(value: float, lo: int, hi: int) -> int:
    return int(min(max(round(value), lo), hi))


def pack_topk(top_k: tuple[tuple[int, float], ...]) -> bytes:
    if len(top_k) > NONE_U8:
        raise ProtocolError(f"{len(top_k)} top-k entries do not fit the wire (at most 255)")
    return b"".join(TOPK_LAYOUT.pack(unsigned(label, NONE_U16, "top-k label"), 0, prob) for label, prob in top_k)


def unpack_topk(payload: bytes, offset: int, k: int) -> tuple[tuple[int, float], ...]:
    end = offset + k * TOPK_LAYOUT.size
    if len(payload) < end:
        raise ProtocolError(f"payload of {len(payload)} bytes is too short for {k} top-k entries")
    return tuple((label, prob) for label, _, prob in TOPK_LAYOUT.iter_unpack(payload[offset:end]))


MAX_TEXT = 240  # bytes of UTF-8 text in ERROR and RESULT payloads


def utf8_text(text: str) -> bytes:
    """Text for the wire: UTF-8, cut to MAX_TEXT bytes at a character boundary."""
    return text.encode("utf-8")[:MAX_TEXT].decode("utf-8", "ignore").encode("utf-8")


def need(payload: bytes, size: int, what: str) -> None:
    if len(payload) < size:
        raise ProtocolError(f"{what} payload has {len(payload)} bytes, needs at least {size}")
