"""A serial link to a microcontroller or another board: frames in, results out.

The wire format (docs/serial-protocol.md) is a framed binary protocol with a
sequence number and CRC-32s; the decoder counts and skips garbage, corrupted
and truncated frames and resynchronises. pyserial is needed only to open a
link (`pip install pyserial`); the protocol itself is pure Python.

>>> from edge_anytime.serial import FrameDecoder, Ping, encode
>>> FrameDecoder().feed(encode(Ping(token=7)))
[Ping(token=7, seq=0)]
"""

from .link import LinkError, LinkOptions, SerialLink, open_link, parse_url
from .protocol import (DEFAULT_MAX_PAYLOAD, FLAG_SEQ_RESET, MAGIC, OVERHEAD, VERSION, Error, ErrorCode, Frame,
                       FrameDecoder, Hello, Info, LinkStats, Malformed, Message, MsgType, Ping, Pong, ProtocolError,
                       Refinement, Result, crc32, decode_payload, encode)

_LAZY = {"SerialServer": "server", "ServerOptions": "server", "ServerStats": "server", "SerialPeer": "peer"}


def __getattr__(name: str):
    # server and peer are also command-line modules (python -m ...): import them on first use only
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_MAX_PAYLOAD", "FLAG_SEQ_RESET", "MAGIC", "OVERHEAD", "VERSION", "Error", "ErrorCode", "Frame",
    "FrameDecoder", "Hello", "Info", "LinkError", "LinkOptions", "LinkStats", "Malformed", "Message", "MsgType",
    "Ping", "Pong", "ProtocolError", "Refinement", "Result", "SerialLink", "SerialPeer", "SerialServer",
    "ServerOptions", "ServerStats", "crc32", "decode_payload", "encode", "open_link", "parse_url",
]
