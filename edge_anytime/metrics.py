"""Service counters: frames by status, exits reached, deadline misses, errors, latency percentiles;
rendered as log lines and in the Prometheus text format, optionally served on localhost.

>>> metrics = ServiceMetrics(window=4)
>>> print(metrics.render().splitlines()[2])
edge_anytime_frames_total{status="final"} 0

`MetricsServer(metrics, port)` serves `GET /metrics` on 127.0.0.1 only (a
daemon thread; port 0 picks a free one, see `.port`). Scrape it with
Prometheus or `curl -s localhost:9464/metrics`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import numpy as np

from .callbacks import Callbacks
from .results import FrameResult, StopReason

QUANTILES = (0.5, 0.9, 0.99)


class ServiceMetrics(Callbacks):
    """Counts every final result (thread-safe: filled by the controller's thread, read by others).

    `latency` is admission -> delivery; `age` is capture -> delivery when the frame carries a
    capture stamp (`user_data.capture_s`), i.e. what a live consumer sees.
    """

    def __init__(self, window: int = 2048, clock: Callable[[], float] = time.perf_counter) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.statuses = {reason.value: 0 for reason in StopReason}
        self.exits: dict[int, int] = {}
        self.misses = 0
        self.fallbacks = 0          # results the fallback precision's graphs computed (FrameResult.fallback)
        self.errors: dict[str, int] = {}
        self.latency_sum_s = 0.0
        self._latency = deque(maxlen=window)
        self._age = deque(maxlen=window)
        self.started_s = clock()

    # ------------------------------------------------------------------ callbacks
    def on_final(self, result: FrameResult) -> None:
        latency = result.delivered_s - result.start_s
        capture = getattr(result.user_data, "capture_s", None)
        with self._lock:
            self.statuses[result.status.value] = self.statuses.get(result.status.value, 0) + 1
            if result.exit_index is not None:
                self.exits[result.exit_index] = self.exits.get(result.exit_index, 0) + 1
            self.misses += not result.met_deadline
            self.fallbacks += result.fallback
            self.latency_sum_s += latency
            self._latency.append(latency)
            if capture is not None:
                self._age.append(result.delivered_s - capture)

    def on_error(self, error: BaseException, context: str) -> None:
        self.count_error(context.split(":", 1)[0])

    def count_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    # ------------------------------------------------------------------ views
    @property
    def frames(self) -> int:
        with self._lock:
            return sum(self.statuses.values())

    def quantiles(self, which: str = "latency") -> dict[float, float]:
        with self._lock:
            values = np.asarray(self._latency if which == "latency" else self._age, dtype=np.float64)
        return {q: float(np.quantile(values, q)) for q in QUANTILES} if values.size else {}

    def summary_line(self) -> str:
        """One log line: totals and the recent latency percentiles (milliseconds)."""
        q = self.quantiles()
        with self._lock:
            frames = sum(self.statuses.values())
            statuses = {k: v for k, v in self.statuses.items() if v}
            text = (f"frames {frames} {statuses} exits {dict(sorted(self.exits.items()))} misses {self.misses} "
                    f"fallback {self.fallbacks} errors {dict(self.errors)}")
        if q:
            text += " latency ms p50 {:.3f} p90 {:.3f} p99 {:.3f}".format(*(v * 1e3 for v in q.values()))
        return text

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        latency, age = self.quantiles("latency"), self.quantiles("age")
        with self._lock:
            lines = ["# HELP edge_anytime_frames_total Frames served, by final status.",
                     "# TYPE edge_anytime_frames_total counter"]
            lines += [f'edge_anytime_frames_total{{status="{k}"}} {v}' for k, v in self.statuses.items()]
            lines += ["# HELP edge_anytime_exit_total Frames delivered, by the exit of their result.",
                      "# TYPE edge_anytime_exit_total counter"]
            lines += [f'edge_anytime_exit_total{{exit="{k}"}} {v}' for k, v in sorted(self.exits.items())]
            lines += ["# HELP edge_anytime_deadline_misses_total Frames with no result by the deadline, or late.",
                      "# TYPE edge_anytime_deadline_misses_total counter",
                      f"edge_anytime_deadline_misses_total {self.misses}",
                      "# HELP edge_anytime_fallback_results_total Results computed by the fallback precision's "
                      "graphs (e.g. int8).",
                      "# TYPE edge_anytime_fallback_results_total counter",
                      f"edge_anytime_fallback_results_total {self.fallbacks}",
                      "# HELP edge_anytime_errors_total Problems that did not stop the service, by kind.",
                      "# TYPE edge_anytime_errors_total counter"]
            lines += [f'edge_anytime_errors_total{{kind="{k}"}} {v}' for k, v in sorted(self.errors.items())]
            count = sum(self.statuses.values())
            lines += [f"# HELP edge_anytime_latency_seconds Admission to delivery, quantiles over the last "
                      f"{self._latency.maxlen} frames.", "# TYPE edge_anytime_latency_seconds summary"]
            lines += [f'edge_anytime_latency_seconds{{quantile="{q}"}} {v:.9f}' for q, v in latency.items()]
            lines += [f"edge_anytime_latency_seconds_sum {self.latency_sum_s:.9f}",
                      f"edge_anytime_latency_seconds_count {count}"]
            if age:
                lines += ["# HELP edge_anytime_capture_age_seconds Capture to delivery, quantiles over the last "
                          f"{self._age.maxlen} frames.", "# TYPE edge_anytime_capture_age_seconds gauge"]
                lines += [f'edge_anytime_capture_age_seconds{{quantile="{q}"}} {v:.9f}' for q, v in age.items()]
            lines += ["# HELP edge_anytime_uptime_seconds Seconds since the service started.",
                      "# TYPE edge_anytime_uptime_seconds gauge",
                      f"edge_anytime_uptime_seconds {self._clock() - self.started_s:.3f}"]
        return "\n".join(lines) + "\n"


class MetricsServer:
    """`GET /metrics` on 127.0.0.1:`port` in a daemon thread; `close()` stops it."""

    def __init__(self, metrics: ServiceMetrics, port: int, host: str = "127.0.0.1") -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:                 # noqa: N802 (http.server's name)
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served")
                    return
                body = metrics.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:     # keep scrapes out of the journal
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="edge-anytime-metrics",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
