"""Serve a controller over a serial link: FRAME messages in, RESULT (and REFINEMENT) messages out.

>>> from edge_anytime import Controller
>>> with Controller.from_bundle("deploy/bundles/gtsrb-resann") as ctrl:           # doctest: +SKIP
...     with SerialServer(ctrl, "serial:///dev/ttyTHS1?baud=921600") as server:
...         server.serve_forever()               # Ctrl-C to stop; or server.start() for a thread

Threads: the server's reader thread ("edge-anytime-serial", or the caller of
`serve_forever`/`poll`) decodes messages, validates frames and submits them;
results are written from the controller's delivery thread (`SerialLink.send`
is thread-safe). Every FRAME gets exactly one answer: a RESULT once the
controller accepted it (a frame the controller rejects gets a `no_result`
RESULT whose error text says why), or an ERROR carrying its frame id when the
server rejected it (wrong shape, no budget, too many in flight). A bad message
never stops the loop. Budgets are relative to the frame's arrival (when its
last byte was decoded), on `controller.clock`.

Command line: python -m edge_anytime.serial.server --bundle B --url URL [--budget-ms 20]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from ..errors import FrameError
from .link import LinkError, LinkOptions, SerialLink, open_link
from .messages import MESSAGE_TYPES
from .protocol import (Error, ErrorCode, Frame, Hello, Info, LinkStats, Malformed, Message, Ping, Pong, Refinement,
                       Result)

try:  # subclass the runtime's callback interface (no-op defaults) when it is there
    from ..callbacks import Callbacks as _CallbackBase
except ImportError:  # pragma: no cover - older runtime
    _CallbackBase = object


@dataclass(frozen=True)
class ServerOptions:
    """How the server answers.

    refinements: send a REFINEMENT for every exit of every frame (a frame can also ask for them).
    max_top_k: cap on the top-k entries a frame may ask for.
    default_budget_s: budget of frames sent with budget_us == 0 (None: answer them with an ERROR).
    max_pending: frames in flight before new ones get ERROR BUSY.
    announce: send INFO when `serve_forever`/`start` begins, so a peer learns the server (re)started.
    poll_s: how often the reader loop checks whether it was asked to stop.
    link: options for a link opened from a URL.
    """

    refinements: bool = False
    max_top_k: int = 10
    default_budget_s: float | None = None
    max_pending: int = 64
    announce: bool = True
    poll_s: float = 0.1
    link: LinkOptions = field(default_factory=LinkOptions)


@dataclass(frozen=True)
class ServerStats:
    frames: int = 0              # FRAME messages received
    rejected: int = 0            # frames answered with an ERROR (shape, budget, busy, submit failure)
    results: int = 0             # RESULT messages sent
    refinements: int = 0         # REFINEMENT messages sent
    errors_sent: int = 0         # ERROR messages sent (rejected frames, malformed messages)
    misses: int = 0              # frames the controller reported as missed (on_miss)
    ignored: int = 0             # well-formed messages a server does not take (RESULT, INFO, ...)
    controller_errors: int = 0   # problems the controller reported through on_error
    send_failures: int = 0       # answers that could not be written (link closed or failing)
    link: LinkStats = field(default_factory=LinkStats)


@dataclass(frozen=True)
class _Pending:
    """Attached to a submitted frame as user_data, so results are matched to this server and request."""

    server_id: int
    frame_id: int
    seq: int
    deadline_s: float
    refinements: bool
    top_k: int


def hwc_shape(model) -> tuple[int, int, int]:
    """(height, width, channels) of raw frames for a ModelInfo."""
    spec = model.input
    if spec.layout == "NCHW":
        _, c, h, w = spec.shape
    else:
        _, h, w, c = spec.shape
    return int(h), int(w), int(c)


class _Relay(_CallbackBase):
    """The server's callbacks on the controller (delivery thread)."""

    def __init__(self, server: SerialServer) -> None:
        self._server = server

    def on_result(self, result) -> None:
        self._server._on_exit(result)

    def on_final(self, result) -> None:
        self._server._on_final(result)

    def on_miss(self, result) -> None:
        if self._server._ours(result):
            self._server._count("misses")

    def on_error(self, error, context) -> None:
        self._server._count("controller_errors")


class SerialServer:
    """Reads FRAME messages from `link` (a URL or an open SerialLink), answers through the controller.

    The controller must offer `model`, `clock.now()`, `submit(frame, deadline_s=..., frame_id=..., mode=...,
    confidence_target=..., user_data=...)` and `add_callbacks(callbacks)`. A link opened from a URL is
    closed by `close()`; a link passed in is left open. The controller is never closed here.
    """

    _ids = itertools.count(1)  # tells this server's frames from other users' of the same controller

    def __init__(self, controller: Any, link: str | SerialLink, options: ServerOptions | None = None) -> None:
        self.controller = controller
        self._id = next(SerialServer._ids)
        self.options = options or ServerOptions()
        self._owns_link = isinstance(link, str)
        self.link = open_link(link, self.options.link) if isinstance(link, str) else link
        self.input_shape = hwc_shape(controller.model)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._counts = {name: 0 for name in ServerStats.__dataclass_fields__ if name != "link"}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.error: BaseException | None = None  # what ended a background serve loop, if anything
        self._relay = _Relay(self)
        controller.add_callbacks(self._relay)

    # ------------------------------------------------------------------ lifecycle
    @property
    def stats(self) -> ServerStats:
        with self._lock:
            return ServerStats(**self._counts, link=self.link.stats)

    def info(self) -> Info:
        model = self.controller.model
        h, w, c = self.input_shape
        return Info(model.name, len(model.labels), h, w, c, "uint8", len(model.coarse_labels),
                    self.link.options.max_payload)

    def poll(self, timeout: float | None = 0.0) -> int:
        """Handle the messages that arrive within `timeout` seconds; returns how many."""
        messages = self.link.read(timeout)
        for message in messages:
            self._handle(message)
        return len(messages)

    def serve_forever(self) -> None:
        """Serve until `stop()`/`close()` (from another thread) or a link failure (raised)."""
        self._serve()
        if self.error is not None:
            raise self.error

    def start(self) -> SerialServer:
        """Serve from a background thread ("edge-anytime-serial"); check `error` if it ends early."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="edge-anytime-serial", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        remove = getattr(self.controller, "remove_callbacks", None)
        if remove is not None:
            remove(self._relay)
        if self._owns_link:
            self.link.close()  # wakes a blocked read
        self.stop()

    def __enter__(self) -> SerialServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _serve(self) -> None:
        try:
            if self.options.announce:
                self._send(self.info())
            while not self._stop.is_set() and not self.link.closed:
                self.poll(self.options.poll_s)
        except LinkError as exc:
            if not (self._stop.is_set() or self.link.closed):
                self.error = exc

    # ------------------------------------------------------------------ requests
    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _send(self, message: Message) -> bool:
        try:
            self.link.send(message)
            return True
        except LinkError:
            self._count("send_failures")
            return False

    def _reject(self, code: ErrorCode, text: str, frame_id: int | None, ref_seq: int | None) -> None:
        self._count("errors_sent")
        self._send(Error(code, text, frame_id, ref_seq))

    def _handle(self, message: Message) -> None:
        if isinstance(message, Frame):
            self._on_frame(message)
        elif isinstance(message, Hello):
            self._send(self.info())
        elif isinstance(message, Ping):
            self._send(Pong(message.token, max(0, round(self.controller.clock.now() * 1e6))))
        elif isinstance(message, Malformed):
            code = ErrorCode.BAD_MESSAGE if message.msg_type in MESSAGE_TYPES else ErrorCode.UNSUPPORTED
            self._reject(code, message.reason, message.frame_id, message.seq)   # a FRAME's answer carries its id
        else:
            self._count("ignored")

    def _on_frame(self, frame: Frame) -> None:
        now = self.controller.clock.now()
        self._count("frames")

        def reject(code: ErrorCode, text: str) -> None:
            self._count("rejected")
            self._reject(code, f"frame {frame.frame_id}: {text}", frame.frame_id, frame.seq)

        if frame.shape != self.input_shape:
            return reject(ErrorCode.BAD_SHAPE, f"shape {frame.shape} (HWC) does not match the model input "
                                               f"{self.input_shape}; resize on the sender")
        if frame.deadline_us is not None:
            deadline = frame.deadline_us / 1e6
        elif frame.budget_us:
            deadline = now + frame.budget_us / 1e6
        elif self.options.default_budget_s is not None:
            deadline = now + self.options.default_budget_s
        else:
            return reject(ErrorCode.BAD_FRAME, "no budget (budget_us=0); send one, or start the server with "
                                               "a default budget (--budget-ms)")
        pending = _Pending(self._id, frame.frame_id, frame.seq, deadline,
                           frame.refinements or self.options.refinements, min(frame.top_k, self.options.max_top_k))
        with self._lock:
            if len(self._pending) >= self.options.max_pending:  # forget frames long past their deadline
                stale = [k for k, p in self._pending.items() if p.deadline_s < now - 1.0]
                for key in stale:
                    del self._pending[key]
            busy = len(self._pending) >= self.options.max_pending
            duplicate = frame.frame_id in self._pending
            if not (busy or duplicate):
                self._pending[frame.frame_id] = pending
        if busy:
            return reject(ErrorCode.BUSY, f"{self.options.max_pending} frames in flight; wait for their results")
        if duplicate:
            return reject(ErrorCode.BAD_FRAME, "this frame id is still in flight; use a new id per frame")
        try:
            self.controller.submit(frame.array, deadline_s=deadline, frame_id=frame.frame_id, mode=frame.mode,
                                   confidence_target=frame.confidence_target, user_data=pending)
        except Exception as exc:  # a frame must never stop the loop
            with self._lock:
                self._pending.pop(frame.frame_id, None)
            code = ErrorCode.BAD_FRAME if isinstance(exc, (FrameError, ValueError)) else ErrorCode.INTERNAL
            reject(code, f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ results (delivery thread)
    def _ours(self, result) -> bool:
        pending = getattr(result, "user_data", None)
        return isinstance(pending, _Pending) and pending.server_id == self._id

    def _on_exit(self, result) -> None:
        with self._lock:
            pending = self._pending.get(result.frame_id)
        if pending is not None and pending.refinements and not self._closed:
            if self._send(Refinement.from_exit_result(result, pending.frame_id, pending.top_k)):
                self._count("refinements")

    def _on_final(self, result) -> None:
        if not self._ours(result):
            return
        pending: _Pending = result.user_data
        with self._lock:
            if self._pending.get(pending.frame_id) is pending:
                del self._pending[pending.frame_id]
        if not self._closed and self._send(Result.from_frame_result(result, pending.frame_id, pending.top_k)):
            self._count("results")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_anytime.serial.server", description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", required=True, help="bundle folder")
    parser.add_argument("--url", required=True, help="serial:///dev/ttyTHS1?baud=921600, /dev/ttyUSB0, socket://...")
    parser.add_argument("--backend", default="litert")
    parser.add_argument("--budget-ms", type=float, default=None, help="budget of frames sent without one")
    parser.add_argument("--refinements", action="store_true", help="send a REFINEMENT for every exit")
    args = parser.parse_args(argv)
    from ..controller import Controller

    options = ServerOptions(refinements=args.refinements,
                            default_budget_s=None if args.budget_ms is None else args.budget_ms / 1e3)
    with Controller.from_bundle(args.bundle, backend=args.backend) as ctrl, \
            SerialServer(ctrl, args.url, options) as server:
        h, w, c = server.input_shape
        print(f"serving {ctrl.model.name} ({h}x{w}x{c} uint8 frames) on {args.url}; Ctrl-C to stop", file=sys.stderr)
        status = 0
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        except LinkError as exc:
            print(f"serial link failed: {exc}", file=sys.stderr)
            status = 1
        print(server.stats, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
