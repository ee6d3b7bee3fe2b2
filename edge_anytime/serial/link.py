"""A message link over any pyserial port, chosen by URL.

URLs: `serial:///dev/ttyTHS1?baud=921600&timeout=0.05` (our scheme: device path
plus options in the query), a plain device path (`/dev/ttyUSB0`, `COM3`), and
anything `serial.serial_for_url` accepts (`loop://`, `socket://host:port`,
`spy://...`, `rfc2217://...`). pyserial is imported only when a link is opened.

>>> with open_link("loop://") as link:                         # doctest: +SKIP
...     seq = link.send(Ping(token=1))
...     link.read(timeout=1.0)
[Ping(token=1, seq=0)]
>>> parse_url("serial:///dev/ttyTHS1?baud=921600")
('/dev/ttyTHS1', {'baudrate': 921600})
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..errors import EdgeAnytimeError, require
from .protocol import (DEFAULT_MAX_PAYLOAD, FLAG_SEQ_RESET, OVERHEAD, FrameDecoder, LinkStats, Message, ProtocolError,
                       encode)


class LinkError(EdgeAnytimeError, OSError):
    """A link cannot be opened, or its port failed."""


@dataclass(frozen=True)
class LinkOptions:
    """How to open and read a link. Query keys of `serial://` URLs are in `QUERY_KEYS`."""

    baudrate: int = 115200
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    rtscts: bool = False
    xonxoff: bool = False
    timeout_s: float = 0.02            # pyserial read timeout: how often a waiting read() wakes up
    write_timeout_s: float | None = 1.0     # a peer that never reads cannot hang the link (the write fails)
    frame_timeout_s: float = 0.25      # a partial frame idle this long is dropped as truncated
    max_payload: int = DEFAULT_MAX_PAYLOAD
    interrupt_on_header: bool = False  # see FrameDecoder: payloads are never scanned for headers


def _bool(text: str) -> bool:
    return text.lower() in ("1", "true", "yes", "on")


QUERY_KEYS = {"baud": ("baudrate", int), "baudrate": ("baudrate", int), "bytesize": ("bytesize", int),
              "parity": ("parity", str.upper), "stopbits": ("stopbits", float), "rtscts": ("rtscts", _bool),
              "xonxoff": ("xonxoff", _bool), "timeout": ("timeout_s", float),
              "write_timeout": ("write_timeout_s", float), "frame_timeout": ("frame_timeout_s", float),
              "max_payload": ("max_payload", int)}


def parse_url(url: str) -> tuple[str, dict[str, Any]]:
    """Split a link URL into what pyserial opens and the LinkOptions fields set in our query.

    Only `serial://` URLs carry our options; other URLs pass through untouched.
    """
    if not url.startswith("serial://"):
        return url, {}
    parts = urlsplit(url)
    port = parts.netloc + parts.path
    if not port:
        raise LinkError(f"{url!r} names no device; write serial:///dev/ttyTHS1?baud=921600 (three slashes)")
    found: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in QUERY_KEYS:
            raise LinkError(f"{url!r}: unknown option {key!r}; use one of {', '.join(sorted(QUERY_KEYS))}")
        name, convert = QUERY_KEYS[key]
        try:
            found[name] = convert(value)
        except ValueError as exc:
            raise LinkError(f"{url!r}: bad value for {key!r}: {value!r}") from exc
    return port, found


def open_link(url: str, options: LinkOptions | None = None, **overrides: Any) -> SerialLink:
    """Open a link by URL. Precedence: keyword overrides, then the URL query, then `options`."""
    serial = require("serial", "serial")
    port_url, from_query = parse_url(url)
    known = {f.name for f in fields(LinkOptions)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"open_link: unknown option(s) {sorted(unknown)}; LinkOptions has {sorted(known)}")
    opts = replace(options or LinkOptions(), **{**from_query, **overrides})
    try:
        port = serial.serial_for_url(port_url, baudrate=opts.baudrate, bytesize=opts.bytesize, parity=opts.parity,
                                     stopbits=opts.stopbits, rtscts=opts.rtscts, xonxoff=opts.xonxoff,
                                     timeout=opts.timeout_s, write_timeout=opts.write_timeout_s)
    except (serial.SerialException, ValueError, OSError) as exc:
        raise LinkError(f"cannot open {url!r}: {exc}. Check the device path, that no other program holds it, "
                        f"and that you may use it (on Linux: the 'dialout' group).") from exc
    return SerialLink(port, opts, url=url)


class SerialLink:
    """Messages over a port-like object (pyserial's, or anything with read(n), write(b), close()).

    `send` is thread-safe; `read`/`recv` are for one reader thread. The first
    message sent carries FLAG_SEQ_RESET so the peer starts counting afresh.
    """

    def __init__(self, port: Any, options: LinkOptions | None = None, url: str = "") -> None:
        self.port = port
        self.options = options or LinkOptions()
        self.url = url
        self._decoder = FrameDecoder(self.options.max_payload, self.options.interrupt_on_header)
        self._ready: deque[Message] = deque()
        self._write_lock = threading.Lock()
        self._seq = 0
        self._reset_sent = False
        self._last_rx = time.monotonic()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> LinkStats:
        return self._decoder.stats

    def send(self, message: Message, flags: int = 0) -> int:
        """Encode and write one message; returns the sequence number it got."""
        with self._write_lock:
            if self._closed:
                raise LinkError(f"link {self.url!r} is closed")
            seq = self._seq
            wire = encode(message, seq, flags | (0 if self._reset_sent else FLAG_SEQ_RESET))
            if len(wire) - OVERHEAD > self.options.max_payload:
                raise ProtocolError(f"{type(message).__name__} payload of {len(wire) - OVERHEAD} bytes exceeds "
                                    f"max_payload={self.options.max_payload}; the receiver would drop it. Send "
                                    f"smaller frames, or raise max_payload on both sides")
            try:
                self.port.write(wire)
            except Exception as exc:
                raise LinkError(f"write to {self.url or self.port!r} failed: {exc}") from exc
            self._seq = (seq + 1) & 0xFFFF
            self._reset_sent = True
            self._decoder.count_sent(len(wire))
            return seq

    def _read_chunk(self, block: bool) -> bytes:
        try:   # in_waiting is an ioctl: on a line that died it fails like the read itself (EIO, EBADF)
            waiting = getattr(self.port, "in_waiting", 0)
            if not waiting and not block:
                return b""
            return bytes(self.port.read(waiting or 1))
        except Exception as exc:
            if self._closed:
                return b""
            raise LinkError(f"read from {self.url or self.port!r} failed: {exc}") from exc

    def read(self, timeout: float | None = 0.0) -> list[Message]:
        """Messages received, waiting up to `timeout` seconds for at least one (None: until closed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready and not self._closed:
            now = time.monotonic()
            chunk = self._read_chunk(block=deadline is None or now < deadline)
            now = time.monotonic()
            if chunk:
                self._last_rx = now
                self._ready.extend(self._decoder.feed(chunk))
            elif self._decoder.pending and now - self._last_rx >= self.options.frame_timeout_s:
                self._ready.extend(self._decoder.flush())
            if deadline is not None and now >= deadline:
                break
        out = list(self._ready)
        self._ready.clear()
        return out

    def recv(self, timeout: float | None = 0.0) -> Message | None:
        """One message (the rest stay queued), or None after `timeout` seconds."""
        if not self._ready:
            self._ready.extend(self.read(timeout))
        return self._ready.popleft() if self._ready else None

    def close(self) -> None:
        """Close the port; a read() blocked in another thread returns."""
        if self._closed:
            return
        self._closed = True
        cancel = getattr(self.port, "cancel_read", None)
        try:
            if cancel is not None:
                cancel()
        except Exception:
            pass  # not every port supports it; closing is what matters
        with self._write_lock:
            self.port.close()

    def __enter__(self) -> SerialLink:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SerialLink({self.url or self.port!r}, closed={self._closed})"
