"""Framing of the serial protocol: header, CRCs, encoder and a resynchronising stream decoder.

Pure Python (struct + zlib), no pyserial: a wire frame is

    0  magic 0xEA 0x7E | 2 version | 3 type | 4 flags | 5 reserved (0)
    6  seq u16 | 8 payload length u32 | 12 header CRC-32 of bytes 0..11
    16 payload | 16+len frame CRC-32 of bytes 0..16+len-1

all little-endian; CRC-32 is zlib's (IEEE 802.3, reflected 0xEDB88320).
docs/serial-protocol.md specifies every byte and gives test vectors.

>>> wire = encode(Ping(token=0x12345678), seq=1)
>>> len(wire), wire[:2].hex()
(24, 'ea7e')
>>> dec = FrameDecoder()
>>> dec.feed(b"noise" + wire[:10]), dec.feed(wire[10:])
([], [Ping(token=305419896, seq=1)])
>>> s = dec.stats; s.messages, s.garbage_bytes
(1, 5)
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, fields

from .messages import (MESSAGE_TYPES, Error, ErrorCode, Frame, Hello, Info, Malformed, Message, MsgType, Ping, Pong,
                       ProtocolError, Refinement, Result, decode_payload)

MAGIC = b"\xEA\x7E"
VERSION = 1
HEADER = struct.Struct("<2sBBBBHI")      # magic, version, type, flags, reserved, seq, length (12 bytes)
HEADER_SIZE = HEADER.size + 4            # + header CRC
CRC_SIZE = 4
OVERHEAD = HEADER_SIZE + CRC_SIZE        # 20 bytes per message
DEFAULT_MAX_PAYLOAD = 1 << 20            # 1 MiB: a 224x224x3 float32 frame fits
FLAG_SEQ_RESET = 0x01                    # the sender (re)started its sequence: take this seq as the new base


def crc32(data: bytes, crc: int = 0) -> int:
    """CRC-32/ISO-HDLC (zlib): init 0xFFFFFFFF, reflected poly 0xEDB88320, xorout 0xFFFFFFFF.

    >>> hex(crc32(b"123456789"))
    '0xcbf43926'
    """
    return zlib.crc32(data, crc) & 0xFFFFFFFF


def encode(message: Message, seq: int = 0, flags: int = 0) -> bytes:
    """One message as wire bytes; `seq` is taken modulo 2**16."""
    if isinstance(message, Malformed) or type(message) not in MESSAGE_TYPES.values():
        raise ProtocolError(f"cannot encode {type(message).__name__}; send one of the message records")
    payload = message.pack()
    head = HEADER.pack(MAGIC, VERSION, int(message.TYPE), flags & 0xFF, 0, seq & 0xFFFF, len(payload))
    head += struct.pack("<I", crc32(head))
    return head + payload + struct.pack("<I", crc32(payload, crc32(head)))


@dataclass(frozen=True)
class LinkStats:
    """Counters of a link (a snapshot; all counts since the decoder was created).

    Every byte received ends up in a delivered message, a dropped duplicate, or `garbage_bytes`.
    """

    bytes_received: int = 0
    messages: int = 0            # delivered messages (Malformed ones included)
    garbage_bytes: int = 0       # bytes skipped outside valid frames (noise, rejected frames)
    resyncs: int = 0             # valid frames found after skipping bytes
    bad_header_crc: int = 0      # magic seen but the header CRC failed (often just noise)
    bad_crc: int = 0             # header fine, frame CRC failed (corrupted in transit)
    truncated: int = 0           # a frame cut short: a valid header inside it, or `flush()` (idle line)
    oversize: int = 0            # header fine but length above max_payload
    bad_version: int = 0         # header fine but another protocol version
    malformed: int = 0           # both CRCs fine, payload undecodable or type unknown (delivered as Malformed)
    duplicates: int = 0          # same seq and same bytes as the previous frame: dropped
    reused_seq: int = 0          # same seq as the previous frame but another message: delivered
    lost: int = 0                # messages missing according to sequence gaps
    out_of_order: int = 0        # seq went backwards (sender restarted without FLAG_SEQ_RESET): delivered
    messages_sent: int = 0
    bytes_sent: int = 0

    @property
    def errors(self) -> int:
        """Frames rejected or missing, whatever the cause."""
        return (self.bad_crc + self.truncated + self.oversize + self.bad_version + self.malformed
                + self.duplicates + self.lost + self.out_of_order)


class FrameDecoder:
    """Streaming decoder: `feed(bytes) -> [messages]`, any chunking, resynchronises after garbage.

    On any rejected frame it skips one byte and scans for the next magic, so a
    valid frame that started inside the rejected one is still found. Once a
    header's CRC is valid, the frame's payload is never scanned for headers
    while it arrives (pixels may contain any bytes, a valid header included):
    the decoder waits for the declared length. A frame cut short by a sender
    reset is then found when its frame CRC fails, or when the line has been
    idle and `flush()` is called (counted as truncated; the bytes after its
    magic are rescanned). `interrupt_on_header=True` restores the older,
    faster but hijackable rule of cutting a pending frame at the first valid
    header inside it.

    Sequence policy: a seq equal to the previous one with the same frame bytes
    is a duplicate (counted, dropped); the same seq with another message is
    delivered and counted as reused_seq; a forward jump counts the skipped
    messages as lost; a backward jump counts out_of_order and is delivered (the
    sender restarted); a frame flagged FLAG_SEQ_RESET starts a new sequence
    silently.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD, interrupt_on_header: bool = False) -> None:
        self.max_payload = int(max_payload)
        self.interrupt_on_header = interrupt_on_header
        self._buf = bytearray()
        self._scan_from = 0          # where the search for an interrupting header resumes
        self._skipped = False        # bytes were skipped since the last valid frame
        self._last_seq: int | None = None
        self._last_crc: int | None = None
        self._counts = {f.name: 0 for f in fields(LinkStats)}

    @property
    def stats(self) -> LinkStats:
        return LinkStats(**self._counts)

    @property
    def pending(self) -> int:
        """Bytes buffered, waiting for the rest of a frame."""
        return len(self._buf)

    def count_sent(self, nbytes: int) -> None:
        """Record an outgoing message (the link calls this, so one LinkStats covers both directions)."""
        self._counts["messages_sent"] += 1
        self._counts["bytes_sent"] += nbytes

    def feed(self, data: bytes) -> list[Message]:
        self._counts["bytes_received"] += len(data)
        self._buf += data
        return self._decode(final=False)

    def flush(self) -> list[Message]:
        """No more bytes are coming for what is buffered: give up on partial frames, rescan the rest."""
        return self._decode(final=True)

    def _skip(self, n: int) -> None:
        del self._buf[:n]
        self._counts["garbage_bytes"] += n
        self._scan_from = 0
        self._skipped = True

    def _header(self, at: int):
        """Parse and check the header at `at` (assumed complete); None if its CRC fails."""
        head = bytes(self._buf[at:at + HEADER.size])
        (want,) = struct.unpack_from("<I", self._buf, at + HEADER.size)
        return HEADER.unpack(head) if crc32(head) == want else None

    def _decode(self, final: bool) -> list[Message]:
        out: list[Message] = []
        counts = self._counts
        while self._buf:
            start = self._buf.find(MAGIC)
            if start < 0:  # keep a trailing first magic byte, it may be completed by the next chunk
                keep = 1 if self._buf[-1] == MAGIC[0] and not final else 0
                self._skip(len(self._buf) - keep)
                break
            if start:
                self._skip(start)
            if len(self._buf) < HEADER_SIZE:
                if final:
                    self._skip(1)
                    continue
                break
            header = self._header(0)
            if header is None:
                counts["bad_header_crc"] += 1
                self._skip(1)
                continue
            _, version, msg_type, flags, _, seq, length = header
            if version != VERSION:
                counts["bad_version"] += 1
                self._skip(1)
                continue
            if length > self.max_payload:
                counts["oversize"] += 1
                self._skip(1)
                continue
            total = HEADER_SIZE + length + CRC_SIZE
            if len(self._buf) < total:
                if final or self._interrupted():
                    counts["truncated"] += 1
                    self._skip(1)
                    continue
                break
            frame = bytes(self._buf[:total])
            (want,) = struct.unpack_from("<I", frame, total - CRC_SIZE)
            if crc32(frame[:-CRC_SIZE]) != want:  # cut short by the next frame, or corrupted
                counts["truncated" if self._header_inside(1, total) else "bad_crc"] += 1
                self._skip(1)
                continue
            del self._buf[:total]
            self._scan_from = 0
            if self._skipped:
                counts["resyncs"] += 1
                self._skipped = False
            if self._accept_seq(seq, flags, want):
                message = decode_payload(msg_type, frame[HEADER_SIZE:-CRC_SIZE], seq)
                counts["messages"] += 1
                counts["malformed"] += isinstance(message, Malformed)
                out.append(message)
        return out

    def _interrupted(self) -> bool:
        """Does a valid header start inside the pending (incomplete) frame at offset 0?"""
        if not self.interrupt_on_header:
            return False
        found = self._header_inside(max(self._scan_from, 1), len(self._buf))
        if not found:  # resume there next time: a header may still be arriving
            self._scan_from = max(1, len(self._buf) - HEADER_SIZE + 1)
        return found

    def _header_inside(self, start: int, end: int) -> bool:
        """Is there a complete header with a good CRC and our version starting in buf[start:end]?"""
        at = start
        while True:
            at = self._buf.find(MAGIC, at, end + 1)
            if at < 0 or len(self._buf) - at < HEADER_SIZE:
                return False
            header = self._header(at)
            if header is not None and header[1] == VERSION:
                return True
            at += 1

    def _accept_seq(self, seq: int, flags: int, crc: int) -> bool:
        last, self._last_seq = self._last_seq, seq
        last_crc, self._last_crc = self._last_crc, crc
        if last is None or flags & FLAG_SEQ_RESET:
            return True
        gap = (seq - last) & 0xFFFF
        if gap == 0:
            if crc == last_crc:                  # the very same frame again: the sender repeated itself
                self._counts["duplicates"] += 1
                return False
            self._counts["reused_seq"] += 1      # another message under the same seq: never lose it
            return True
        if gap < 0x8000:
            self._counts["lost"] += gap - 1
        else:
            self._counts["out_of_order"] += 1
        return True


__all__ = ["MAGIC", "VERSION", "HEADER_SIZE", "OVERHEAD", "DEFAULT_MAX_PAYLOAD", "FLAG_SEQ_RESET", "LinkStats",
           "FrameDecoder", "crc32", "encode", "decode_payload", "Message", "MsgType", "ErrorCode", "ProtocolError",
           "Hello", "Info", "Ping", "Pong", "Frame", "Result", "Refinement", "Error", "Malformed"]
