"""Where `serve` writes final results: stdout, a JSON-lines file, a serial link, or nowhere.

>>> open_sink("none").write(None, None)
>>> open_sink("udp:1")
Traceback (most recent call last):
...
edge_anytime.errors.EdgeAnytimeError: unknown sink 'udp:1'; use stdout, none, jsonl:FILE or serial:URL
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .callbacks import Callbacks
from .errors import EdgeAnytimeError
from .results import FrameResult
from .sources import SourceFrame

log = logging.getLogger("edge_anytime.serve")


class Sink(Callbacks):
    """Writes every final result; subclasses format it. A failing write is reported, never fatal."""

    errors = 0

    def on_final(self, result: FrameResult) -> None:
        self.write(result, result.user_data if isinstance(result.user_data, SourceFrame) else None)

    def on_error(self, error, context) -> None:
        if context.startswith("callback:"):
            self.errors += 1
            if self.errors <= 5:
                log.error("%s failed: %s", type(self).__name__, error)

    def write(self, result: FrameResult, source: SourceFrame | None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def record(result: FrameResult, source: SourceFrame | None) -> dict[str, Any]:
    out = {"frame": result.frame_id, "status": result.status.value, "exit": result.exit_index,
           "label": result.label, "label_name": result.label_name,
           "confidence": None if result.confidence is None else round(float(result.confidence), 5),
           "elapsed_ms": round((result.delivered_s - result.start_s) * 1e3, 4),
           "budget_ms": round(result.budget_s * 1e3, 4), "met_deadline": result.met_deadline,
           "steps_run": result.steps_run}
    if source is not None:
        out["source"] = source.name
        if source.label is not None:
            out["truth"] = source.label
        if source.capture_s is not None:
            out["age_ms"] = round((result.delivered_s - source.capture_s) * 1e3, 4)
    if result.error:
        out["error"] = result.error
    return out


class NullSink(Sink):
    """Drops results (a service whose answers go back over its serial source, watched through metrics)."""

    def write(self, result, source) -> None:
        pass


class StdoutSink(Sink):
    def write(self, result, source) -> None:
        r = record(result, source)
        text = (f"frame {r['frame']}: {r['status']} exit {r['exit']} {r['label_name']!r} conf {r['confidence']} "
                f"in {r['elapsed_ms']:.3f}/{r['budget_ms']:.3f} ms")
        print(text + (f" error: {r['error']}" if "error" in r else ""), flush=True)


class JsonlSink(Sink):
    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")

    def write(self, result, source) -> None:
        self._file.write(json.dumps(record(result, source)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class SerialSink(Sink):
    def __init__(self, url: str) -> None:
        from .serial.link import open_link

        self._link = open_link(url)

    def write(self, result, source) -> None:
        from .serial.messages import Result

        self._link.send(Result.from_frame_result(result))

    def close(self) -> None:
        self._link.close()


def open_sink(url: str) -> Sink:
    if url == "stdout":
        return StdoutSink()
    if url in ("none", "null"):
        return NullSink()
    if url.startswith("jsonl:"):
        return JsonlSink(url[len("jsonl:"):])
    if url.startswith("serial:"):
        return SerialSink(url)
    raise EdgeAnytimeError(f"unknown sink {url!r}; use stdout, none, jsonl:FILE or serial:URL")
