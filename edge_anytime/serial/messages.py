"""Typed messages of the serial protocol: frozen records that pack / unpack their payloads.

Each record knows its message type code; the numbers and struct layouts are
in `codes.py`, framing (magic, sequence number, CRCs) in `protocol.py`. Byte
layouts are specified in docs/serial-protocol.md; keep the three in step.
`seq` is filled in on receipt and ignored by `==`.

>>> import numpy as np
>>> f = Frame.from_array(7, np.zeros((2, 2, 3), np.uint8), budget_s=0.02, top_k=3)
>>> f.budget_us, f.shape, f.array.shape
(20000, (2, 2, 3), (2, 2, 3))
>>> Frame.unpack(f.pack()) == f
True
>>> r = Result(frame_id=7, status=StopReason.DEADLINE, exit_index=1, label=4, confidence=0.75)
>>> Result.unpack(r.pack()) == r
True
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import ClassVar, Union

import numpy as np

from ..results import FrameResult, StopReason
from .codes import (DTYPE_BY_CODE, DTYPE_CODES, ERROR_LAYOUT, FRAME_ABSOLUTE_DEADLINE, FRAME_HAS_CONFIDENCE,
                    FRAME_LAYOUT, FRAME_WANT_REFINEMENTS, INFO_LAYOUT, MODE_BY_CODE, MODE_CODES, NONE_U8, NONE_U16,
                    NONE_U32, PONG_LAYOUT, REFINE_LAYOUT, RESULT_LAYOUT, STATUS_BY_CODE, STATUS_CODES, TOPK_LAYOUT,
                    ErrorCode, MsgType, ProtocolError, clamp, f32, f32_topk, need, optional, pack_topk, set_fields,
                    unpack_topk, unsigned, utf8_text)


@dataclass(frozen=True)
class Hello:
    """Ask the server to describe itself; it answers with `Info`."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    client: str = ""
    seq: int = field(default=0, compare=False)

    def pack(self) -> bytes:
        return self.client.encode("utf-8")

    @classmethod
    def unpack(cls, payload: bytes, seq: int = 0) -> Hello:
        return cls(payload.decode("utf-8", "replace"), seq=seq)


@dataclass(frozen=True)
class Info:
    """What the server runs: frames must be (height, width, channels) of `dtype` (or float32)."""

    TYPE: ClassVar[MsgType] = MsgType.INFO
    model: str
    num_labels: int
    height: int
    width: int
    channels: int
    dtype: str = "uint8"
    num_coarse_labels: int = 0
    max_payload: int = 0
    seq: int = field(default=0, compare=False)

    def pack(self) -> bytes:
        fixed = INFO_LAYOUT.pack(self.num_labels, self.height, self.width, self.channels, DTYPE_CODES[self.dtype], 0,
                                 self.num_coarse_labels, self.max_payload)
        return fixed + self.model.encode("utf-8")

    @classmethod
    def unpack(cls, payload: bytes, seq: int = 0) -> Info:
        need(payload, INFO_LAYOUT.size, "INFO")
        labels, h, w, c, dtype, _, coarse, max_payload = INFO_LAYOUT.unpack_from(payload)
        if dtype not in DTYPE_BY_CODE:
            raise ProtocolError(f"INFO: unknown dtype code {dtype}")
        return cls(payload[INFO_LAYOUT.size:].decode("utf-8", "replace"), labels, h, w, c, DTYPE_BY_CODE[dtype],
                   coarse, max_payload, seq=seq)


@dataclass(frozen=True)
class Ping:
    TYPE: ClassVar[MsgType] = MsgType.PING
    token: int = 0
    seq: int = field(default=0, compare=False)

    def pack(self) -> bytes:
        return struct.pack("<I", self.token)

    @classmethod
    def unpack(cls, payload: bytes, seq: int = 0) -> Ping:
        need(payload, 4, "PING")
        return cls(struct.unpack_from("<I", payload)[0], seq=seq)


@dataclass(frozen=True)
class Pong:
    """Answer to a PING; `server_time_us` is the controller clock, for absolute deadlines."""

    TYPE: ClassVar[MsgType] = MsgType.PONG
    token: int
    server_time_us: int
    seq: int = field(default=0, compare=False)

    def pack(self) -> bytes:
        return PONG_LAYOUT.pack(self.token, 0, self.server_time_us)

    @classmethod
    def unpack(cls, payload: bytes, seq: int = 0) -> Pong:
        need(payload, PONG_LAYOUT.size, "PONG")
        token, _, now = PONG_LAYOUT.unpack_from(payload)
        return cls(token, now, seq=seq)


@dataclass(frozen=True)
class Frame:
    """One raw HWC frame and how long the server may spend on it.

    `budget_us` is relative to the frame's arrival at the server (0: the
    controller's default); `deadline_us`, if given, is absolute on the server
    clock (see `Pong`). `mode` None lets the controller choose.
    """

    TYPE: ClassVar[MsgType] = MsgType.FRAME
    frame_id: int
    pixels: bytes
    shape: tuple[int, int, int]
    dtype: str = "uint8"
    budget_us: int = 0
    deadline_us: int | None = None
    mode: str | None = None
    confidence_target: float | None = None
    refinements: bool = False
    top_k: int = 0
    seq: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        set_fields(self, shape=tuple(int(d) for d in self.shape), confidence_target=f32(self.confidence_target))
        if self.dtype not in DTYPE_CODES:
            raise ProtocolError(f"frame dtype {self.dtype!r} is not supported; send one of {sorted(DTYPE_CODES)}")
        if self.mode not in MODE_CODES:
            raise ProtocolError(f"frame mode {self.mode!r} is not one of 'anytime', 'apriori' or None")
        if len(self.shape) != 3:
            raise ProtocolError(f"frame shape {self.shape} must be (height, width, channels)")
        expected = int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize
        if len(self.pixels) != expected:
            raise ProtocolError(f"frame {self.frame_id}: {len(self.pixels)} pixel bytes, but shape {self.shape} "
                                f"of {self.dtype} needs {expected}")
        if self.deadline_us is not None and self.budget_us:
            raise ProtocolError("give a frame either budget_us or deadline_us, not both")
        if not 0 <= self.top_k <= 0xFF:
            raise ProtocolError(f"top_k={self.top_k} must be in 0..255")

    @classmethod
    def from_array(cls, frame_id: int, array: np.ndarray, *, budget_s: float | None = None,
                   deadline_s: float | None = None, mode: str | None = None,
                   confidence_target: float | None = None, refinements: bool = False, top_k: int = 0) -> Frame:
        """Build from an HWC uint8 or float32 array; times in seconds."""
        array = np.ascontiguousarray(array)
        if array.ndim != 3:
            raise ProtocolError(f"frame array must be HWC (3 dimensions), got shape {array.shape}")
        return cls(frame_id, array.tobytes(), tuple(int(d) for d in array.shape), array.dtype.name,
                   0 if budget_s is None else max(1, round(budget_s * 1e6)),
                   None if deadline_s is None else round(deadline_s * 1e6),
                   mode, f32(confidence_target), refinements, top_k)

    @property
    def array(self) -> np.ndarray:
        """The pixels as a read-only HWC array."""
        return np.frombuffer(self.pixels, dtype=self.dtype).reshape(self.shape)

    def pack(self) -> bytes:
        flags = ((FRAME_ABSOLUTE_DEADLINE if self.deadline_us is not None else 0)
                 | (FRAME_HAS_CONFIDENCE if self.confidence_target is not None else 0)
                 | (FRAME_WANT_REFINEMENTS if self.refinements else 0))
        time_us = self.deadline_us if self.deadline_us is not None else self.budget_us
        if not 0 <= time_us < 1 << 64:
            raise ProtocolError(f"frame {self.frame_id}: time {time_us} us is out of range")
        h, w, c = self.shape
        header = FRAME_LAYOUT.pack(self.frame_id, MODE_CODES[self.mode], DTYPE_CODES[self.dtype], flags, self.top_k,
                                   time_us, self.confidence_target or 0.0, h, w, c, 0)
        return header + self.pixels

    @classmethod
    def unpack(cls, payload: bytes, seq: int = 0) -> Frame:
        need(payload, FRAME_LAYOUT.size, "FRAME")
        frame_id, mode, dtype, flags, top_k, time_us, target, h, w, c, _ = FRAME_LAYOUT.unpack_from(payload)
        if mode not in MODE_BY_CODE:
            raise ProtocolError(f"FRAME {frame_id}: unknown mode code {mode}")
        if dtype not in DTYPE_BY_CODE:
            raise ProtocolError(f"FRAME {frame_id}: unknown dtype code {dtype}")
        absolute = bool(flags & FRAME_ABSOLUTE_DEADLINE)
        return cls(frame_id, bytes(payload[FRAME_LAYOUT.size:]), (h, w, c), DTYPE_BY_CODE[dtype],
                   0 if absolute else time_us, time_us if absolute else None, MODE_BY_CODE[mode],
                   target if flags & FRAME_HAS_CONFIDENCE else None, bool(flags & FRAME_WANT_REFINEMENTS),
                   top_k, seq=seq)


@dataclass(frozen=True)
class Result:
    """The final answer for one frame (a wire form of `FrameResult`)."""

    TYPE: ClassVar[MsgType] = MsgType.RESULT
    frame_id: int
    status: StopReason
    exit_index: int | None = None
    label: int | None = None
    confidence: float | None = None
    coarse_label: int | None = None
    elapsed_us: int = 0
    lateness_us: int = 0          # delivery minus deadline; negative: early
    steps_run: int = 0
    steps_skipped: int = 0
    late_steps: int = 0
    mode: str | None = None
    top_k: tuple[tuple[int, float], ...] = ()
    error: str = ""
    seq: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        set_fields(self, status=StopReason(self.status), confidence=f32(self.confidence), top_k=f32_topk(self.top_k))

    @classmethod
    def from_frame_result(cls, result: FrameResult, frame_id: int | None = None, top_k: int = 0) -> Result:
        best = result.best
        pred = None if best is None else best.prediction
        return cls(
            frame_id=result.frame_id if frame_id is None else frame_id, status=StopReason(result.status),
            exit_index=None if best is None else best.exit_index, label=None if pred is None else pred.label,
            confidence=None if pred is None else pred.confidence,
            coarse_label=None if pred is None else pred.coarse_label,
            elapsed_us=clamp((result.delivered_s - result.start_s) * 1e6, 0, NONE_U32),
            lateness_us=clamp(result.lateness_s * 1e6, -(1 << 31), (1 << 31) - 1),
            steps_run=min(result.steps_run, NONE_U16), steps_skipped=min(result.steps_skipped, NONE_U16),
            late_steps=min(result.late_steps, NONE_U16), mode=result.mode if result.mode in MODE_CODES else None,
            top_k=() if pred is None else tuple(pred.top_k[:top_k]),
            error=result.error or "")

    def pack(self) -> bytes:
        conf = math.nan if self.confidence is None else self.confidence
        header = RESULT_LAYOUT.pack(
            self.frame_id, STATUS_CODES[StopReason(self.status)], unsigned(self.exit_index, NONE_U8, "exit_index"),
            MODE_CODES[self.mode], len(self.top_k), unsigned(self.label, NONE_U16, "label"),
            unsigned(self.coarse_label, NONE_U16, "coarse_label"), conf, self.elapsed_us, self.lateness_us,
            self.steps_run, self.steps_skipped, self.late_steps, 0)
        return header + pack_topk(self.top_k) + utf8_text(self.error)

    @classmethod
    def unpack(cls, payload: bytes, seq: int = 0) -> Result:
        need(payload, RESULT_LAYOUT.size, "RESULT")
        (frame_id, status, exit_index, mode, k, label, coarse, conf, elapsed, late_us, run, skipped, late,
         _) = RESULT_LAYOUT.unpack_from(payload)
        if status not in STATUS_BY_CODE or mode not in MODE_BY_CODE:
            raise ProtocolError(f"RESULT {frame_id}: unknown status {status} or mode {mode}")
        top = unpack_topk(payload, RESULT_LAYOUT.size, k)
        text = payload[RESULT_LAYOUT.size + k * TOPK_LAYOUT.size:].decode("utf-8", "replace")
        return cls(frame_id, STATUS_BY_CODE[status], optional(exit_index, NONE_U8), optional(label, NONE_U16),
                   None if math.isnan(conf) else conf, optional(coarse, NONE_U16), elapsed, late_us, run, skipped,
                   late, MODE_BY_CODE[mode], top, text, seq=seq)


@dataclass(frozen=True)
class Refinement:
    """One exit's answer, sent as soon as it is computed (when refinements are on)."""

    TYPE: ClassVar[MsgType] = MsgType.REFINEMENT
    frame_id: int
    exit_index: int
    label: int
    confidence: float
    coarse_label: int | None = None
    elapsed_us: int = 0
    steps_run: int = 0
    top_k: tuple[tuple[int, float], ...] = ()
    seq: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        set_fields(self, confidence=f32(self.confidence), top_k=f32_topk(self.top_k))

    @classmethod
    def from_exit_result(cls, result, frame_id: int | None = None, top_k: int = 0) -> Refinement:
        pred = result.prediction
        return cls(result.frame_id if frame_id is None else frame_id, result.exit_index, pred.label,
                   pred.confidence, pred.coarse_label, clamp(result.elapsed_s * 1e6, 0, NONE_U32),
                   min(result.steps_run, NONE_U16), tuple(pred.top_k[:top_k]))

    def pack(self) -> bytes:
        fixed = REFINE_LAYOUT.pack(
            self.frame_id, unsigned(self.exit_index, NONE_U8, "exit_index"), len(self.top_k),
            unsigned(self.label, NONE_U16, "label"), unsigned(self.coarse_label, NONE_U16, "coarse_label"),
            self.steps_run, self.confidence, self.elapsed_us)
        return fixed + pack_topk(self.top_k)

    @classmethod
    def unpack(cls, payload: bytes, seq: int = 0) -> Refinement:
        need(payload, REFINE_LAYOUT.size, "REFINEMENT")
        frame_id, exit_index, k, label, coarse, run, conf, elapsed = REFINE_LAYOUT.unpack_from(payload)
        return cls(frame_id, exit_index, label, conf, optional(coarse, NONE_U16), elapsed, run,
                   unpack_topk(payload, REFINE_LAYOUT.size, k), seq=seq)


@dataclass(frozen=True)
class Error:
    """Something the peer sent could not be served; `ref_seq` is the offending message's sequence number."""

    TYPE: ClassVar[MsgType] = MsgType.ERROR
    code: ErrorCode
    text: str = ""
    frame_id: int | None = None
    ref_seq: int | None = None
    seq: int = field(default=0, compare=False)

    def pack(self) -> bytes:
        bits = (1 if self.frame_id is not None else 0) | (2 if self.ref_seq is not None else 0)
        fixed = ERROR_LAYOUT.pack(int(self.code), bits, 0, self.frame_id or 0, self.ref_seq or 0)
        return fixed + utf8_text(self.text)

    @classmethod
    def unpack(cls, payload: bytes, seq: int = 0) -> Error:
        need(payload, ERROR_LAYOUT.size, "ERROR")
        code, bits, _, frame_id, ref_seq = ERROR_LAYOUT.unpack_from(payload)
        try:
            code = ErrorCode(code)
        except ValueError:
            pass  # a newer peer's code: keep the number
        return cls(code, payload[ERROR_LAYOUT.size:].decode("utf-8", "replace"), frame_id if bits & 1 else None,
                   ref_seq if bits & 2 else None, seq=seq)


@dataclass(frozen=True)
class Malformed:
    """A frame that passed both CRCs but whose payload could not be decoded (or whose type is unknown).

    The decoder delivers it (instead of dropping it silently) so a server can answer with an ERROR.
    """

    msg_type: int
    reason: str
    seq: int = field(default=0, compare=False)
    frame_id: int | None = None     # a FRAME's id when its payload holds one (the answer carries it)


Message = Union[Hello, Info, Ping, Pong, Frame, Result, Refinement, Error, Malformed]
MESSAGE_TYPES: dict[int, type] = {cls.TYPE: cls for cls in (Hello, Info, Ping, Pong, Frame, Result, Refinement, Error)}


def decode_payload(msg_type: int, payload: bytes, seq: int = 0) -> Message:
    """Turn a checked frame's payload into a message record; never raises."""
    cls = MESSAGE_TYPES.get(msg_type)
    if cls is None:
        return Malformed(msg_type, f"unknown message type 0x{msg_type:02X}", seq=seq)
    try:
        return cls.unpack(payload, seq)
    except (ProtocolError, struct.error, ValueError) as exc:
        frame_id = struct.unpack_from("<I", payload)[0] if msg_type == MsgType.FRAME and len(payload) >= 4 else None
        return Malformed(msg_type, f"{MsgType(msg_type).name}: {exc}", seq=seq, frame_id=frame_id)
