"""The client side of the serial protocol: send frames, collect results. Also a reference for firmware authors.

>>> import numpy as np
>>> with SerialPeer("serial:///dev/ttyUSB0?baud=921600") as peer:           # doctest: +SKIP
...     info = peer.hello()                          # Info(model='gtsrb-resann', height=32, ...)
...     answer = peer.infer(np.zeros((32, 32, 3), np.uint8), budget_s=0.02)
...     answer.status.value, answer.label, answer.confidence
('final', 1, 0.93)

A firmware client does the same: keep one u16 sequence counter (first message
flagged SEQ_RESET), send FRAME, then read and decode messages until the RESULT
(or an ERROR) with its frame id arrives; match answers by frame id, not order.

Command line: python -m edge_anytime.serial.peer --url URL [--frames file.npz] [--budget-ms 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from collections import defaultdict, deque
from typing import Any

import numpy as np

from .link import LinkOptions, SerialLink, open_link
from .protocol import Error, Frame, Hello, Info, Message, Ping, Pong, Refinement, Result


class SerialPeer:
    """Sends frames over `link` (a URL or an open SerialLink) and sorts what comes back.

    Answers are kept until asked for: `results` (frame id -> Result), `frame_errors`
    (frame id -> Error), `refinements` (frame id -> [Refinement]), `errors` (every
    ERROR, in order), `info` (the last INFO), `other` (anything else).
    """

    def __init__(self, link: str | SerialLink, options: LinkOptions | None = None) -> None:
        self._owns_link = isinstance(link, str)
        self.link = open_link(link, options) if isinstance(link, str) else link
        self._ids = itertools.count()
        self._tokens = itertools.count(1)
        self.results: dict[int, Result] = {}
        self.frame_errors: dict[int, Error] = {}
        self.refinements: dict[int, list[Refinement]] = defaultdict(list)
        self.errors: list[Error] = []
        self.info: Info | None = None
        self.other: deque[Message] = deque(maxlen=256)
        self._pongs: dict[int, tuple[Pong, float]] = {}

    def pump(self, timeout: float | None = 0.0) -> list[Message]:
        """Read what arrives within `timeout` seconds and file it; returns the messages."""
        messages = self.link.read(timeout)
        now = time.monotonic()
        for m in messages:
            if isinstance(m, Result):
                self.results[m.frame_id] = m
            elif isinstance(m, Refinement):
                self.refinements[m.frame_id].append(m)
            elif isinstance(m, Error):
                self.errors.append(m)
                if m.frame_id is not None:
                    self.frame_errors[m.frame_id] = m
            elif isinstance(m, Info):
                self.info = m
            elif isinstance(m, Pong):
                self._pongs[m.token] = (m, now)
            else:
                self.other.append(m)
        return messages

    def _wait(self, ready, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            found = ready()
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {what} within {timeout:.3f} s on {self.link.url or self.link!r}; "
                                   f"is the server running, and are both sides at the same baud rate?")
            self.pump(min(remaining, 0.05))

    def hello(self, timeout: float = 2.0) -> Info:
        """Ask the server what it runs."""
        self.info = None
        self.link.send(Hello("edge_anytime.serial.peer"))
        return self._wait(lambda: self.info, timeout, "INFO")

    def ping(self, timeout: float = 1.0) -> tuple[float, int]:
        """Round-trip time in seconds, and the server clock (us) when it answered."""
        token = next(self._tokens) & 0xFFFFFFFF
        sent = time.monotonic()
        self.link.send(Ping(token))
        pong, received = self._wait(lambda: self._pongs.pop(token, None), timeout, "PONG")
        return received - sent, pong.server_time_us

    def send_frame(self, array: np.ndarray, budget_s: float | None = None, *, deadline_s: float | None = None,
                   frame_id: int | None = None, mode: str | None = None, confidence_target: float | None = None,
                   refinements: bool = False, top_k: int = 0) -> int:
        """Send one HWC uint8/float32 frame; returns its frame id (answers are matched by it)."""
        frame_id = next(self._ids) & 0xFFFFFFFF if frame_id is None else frame_id
        self.link.send(Frame.from_array(frame_id, array, budget_s=budget_s, deadline_s=deadline_s, mode=mode,
                                        confidence_target=confidence_target, refinements=refinements, top_k=top_k))
        return frame_id

    def wait_result(self, frame_id: int, timeout: float = 2.0) -> Result | Error:
        """The RESULT for `frame_id`, or the ERROR the server answered it with; TimeoutError if none came."""
        def ready():
            if frame_id in self.results:
                return self.results.pop(frame_id)
            return self.frame_errors.pop(frame_id, None)
        return self._wait(ready, timeout, f"answer to frame {frame_id}")

    def infer(self, array: np.ndarray, budget_s: float | None = None, timeout: float | None = None,
              **frame_options: Any) -> Result | Error:
        """Send a frame and wait for its answer (timeout: the budget plus one second by default)."""
        frame_id = self.send_frame(array, budget_s, **frame_options)
        return self.wait_result(frame_id, (budget_s or 0.0) + 1.0 if timeout is None else timeout)

    def close(self) -> None:
        if self._owns_link:
            self.link.close()

    def __enter__(self) -> SerialPeer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _load_frames(path: str | None, key: str | None, info: Info, count: int) -> np.ndarray:
    if path is None:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (count, info.height, info.width, info.channels), dtype=np.uint8)
    with np.load(path, allow_pickle=False) as data:
        name = key or ("frames" if "frames" in data.files else data.files[0])
        frames = np.asarray(data[name])
    if frames.ndim == 3:
        frames = frames[None]
    return frames[:count] if count else frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_anytime.serial.peer", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="serial:///dev/ttyUSB0?baud=921600, socket://host:port, ...")
    parser.add_argument("--frames", help=".npz with (N, H, W, C) uint8 frames (key 'frames' or the first array); "
                                         "random frames of the server's input shape if omitted")
    parser.add_argument("--key", help="array name in the .npz")
    parser.add_argument("--count", type=int, default=0, help="frames to send (0: all; 10 random ones by default)")
    parser.add_argument("--budget-ms", type=float, default=20.0)
    parser.add_argument("--mode", choices=("anytime", "apriori"))
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each answer")
    args = parser.parse_args(argv)
    with SerialPeer(args.url) as peer:
        info = peer.hello(args.timeout)
        print(json.dumps({"server": info.model, "input": [info.height, info.width, info.channels],
                          "labels": info.num_labels}))
        frames = _load_frames(args.frames, args.key, info, args.count or (0 if args.frames else 10))
        for frame in frames:
            sent = time.monotonic()
            answer = peer.infer(frame, args.budget_ms / 1e3, args.timeout, mode=args.mode, top_k=args.top_k)
            rtt_ms = round((time.monotonic() - sent) * 1e3, 3)
            if isinstance(answer, Error):
                print(json.dumps({"error": answer.code.name if hasattr(answer.code, "name") else answer.code,
                                  "frame_id": answer.frame_id, "text": answer.text}))
                continue
            print(json.dumps({"frame_id": answer.frame_id, "status": answer.status.value, "exit": answer.exit_index,
                              "label": answer.label, "confidence": answer.confidence,
                              "elapsed_us": answer.elapsed_us, "lateness_us": answer.lateness_us,
                              "top_k": answer.top_k, "rtt_ms": rtt_ms}))
        print(json.dumps({"link": dataclasses.asdict(peer.link.stats)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
