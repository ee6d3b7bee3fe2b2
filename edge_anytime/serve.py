"""`edge-anytime serve` (`python -m edge_anytime.serve`): the anytime inference service of a deploy package.

A controller (`Controller.from_bundle`) fed by one source, its final results
written to sinks, until the source ends, `--max-frames`, or SIGTERM/SIGINT (the
frame in flight finishes; counters are logged on exit).

Sources by URI (edge_anytime.sources, jetson-utils conventions): v4l2:///dev/video0,
csi://0, file://clip.mp4 or clip.mp4, rtsp://..., an image folder, rec.npz
(npz:FILE and dir:FOLDER still work), serial:///dev/ttyTHS0?baud=921600 (FRAME
messages in, RESULT messages back). Frames of any size and channel count are
preprocessed as the bundle declares (colour order, resize policy); OpenCV
frames are BGR, and serve tells the preprocessor so. Frames from video sources
are stamped at capture: their deadline is capture time + budget.
Sinks: stdout (a line per frame), none, jsonl:FILE, serial:URL.

Service settings (flag, or environment for the systemd unit): --cpus / EA_CPUS,
--fifo-priority / EA_FIFO_PRIORITY (SCHED_FIFO), --lock-memory / EA_LOCK_MEMORY=1
(mlockall), each reported applied or refused; --log-level / EA_LOG_LEVEL;
--stats-every / EA_STATS_EVERY (counters logged every N s); --metrics-port /
EA_METRICS_PORT (Prometheus text on 127.0.0.1). Under systemd (Type=notify) it
reports READY and pings the watchdog (WatchdogSec) while it makes progress.

    edge-anytime serve --bundle bundle --source clip.mp4 --resize stretch --budget-ms 20 --sink jsonl:out.jsonl
    edge-anytime serve --bundle bundle --source v4l2:///dev/video0 --budget-ms 33 --metrics-port 9464
    edge-anytime serve --bundle bundle --source serial:///dev/ttyTHS0?baud=921600 --sink none
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from typing import Iterator

import numpy as np

from .callbacks import Callbacks
from .errors import EdgeAnytimeError, FrameError
from .manifest import INTERPOLATIONS, RESIZE_POLICIES
from .metrics import ServiceMetrics
from .preprocess import PreprocessOptions, Preprocessor
from .results import FrameResult, StopReason
from .service_log import LEVELS, setup_logging
from .sinks import JsonlSink, NullSink, SerialSink, Sink, StdoutSink, open_sink, record  # noqa: F401
from .sources import FRAME_KEYS, USAGE, SourceFrame, fit, load_image, npz_source, parse_source, read_pnm  # noqa: F401
from .systemd import Notifier

CAPTURE_STAMPED = ("video", "stream", "v4l2", "csi")     # deadline = capture time + budget


class Counters(Callbacks):
    """Frames per status, deadlines met, accuracy when the source has labels."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.met = self.labelled = self.correct = 0

    def on_final(self, result: FrameResult) -> None:
        self.counts[result.status.value] = self.counts.get(result.status.value, 0) + 1
        self.met += bool(result.met_deadline)
        source = result.user_data if isinstance(result.user_data, SourceFrame) else None
        if source is not None and source.label is not None:
            self.labelled += 1
            self.correct += result.label == source.label

    def summary(self, stats, elapsed_s: float, sink_errors: int = 0) -> str:
        frames = sum(self.counts.values())
        parts = [f"served {frames} frames in {elapsed_s:.2f} s", f"statuses {self.counts}",
                 f"deadlines met {self.met}/{frames}"]
        if self.labelled:
            parts.append(f"accuracy {self.correct}/{self.labelled}")
        parts.append(f"sink errors {sink_errors}")
        return "; ".join(parts) + f"\ncontroller: {stats}"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: list[str] | None, prog: str = "python -m edge_anytime.serve") -> argparse.Namespace:
    from .profiling import parse_cpus
    from .selftest import add_runtime_arguments

    env = os.environ.get
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runtime_arguments(p)
    p.add_argument("--source", required=True, help=USAGE)
    p.add_argument("--sink", action="append", help="stdout (default) | none | jsonl:FILE | serial:URL; repeatable")
    p.add_argument("--budget-ms", type=float, help="budget per frame (frames may carry their own)")
    p.add_argument("--mode", choices=("anytime", "apriori"), default="anytime")
    p.add_argument("--confidence", type=float, help="stop refining at this calibrated confidence")
    p.add_argument("--resize", choices=RESIZE_POLICIES, help="override the bundle's resize policy (v1 bundles: exact)")
    p.add_argument("--interpolation", choices=INTERPOLATIONS, help="override the bundle's resize filter")
    p.add_argument("--profile-target", help="seed the deadline monitor from bundle/profiles/TARGET.json if present")
    p.add_argument("--cpus", type=parse_cpus, default=env("EA_CPUS", ""),
                   help="pin the process to these CPUs, e.g. 4,5 (env EA_CPUS)")
    p.add_argument("--fifo-priority", type=int, default=env("EA_FIFO_PRIORITY") or None,
                   help="run with SCHED_FIFO at this priority 1-99 (env EA_FIFO_PRIORITY; needs root, "
                        "CAP_SYS_NICE or LimitRTPRIO)")
    p.add_argument("--lock-memory", action="store_true", default=_env_flag("EA_LOCK_MEMORY"),
                   help="mlockall: never page out (env EA_LOCK_MEMORY=1; needs CAP_IPC_LOCK or LimitMEMLOCK)")
    p.add_argument("--log-level", choices=LEVELS, default=env("EA_LOG_LEVEL", "info"), help="(env EA_LOG_LEVEL)")
    p.add_argument("--stats-every", type=float, default=env("EA_STATS_EVERY", "60"),
                   help="log the counters every N seconds, 0 never (env EA_STATS_EVERY; default 60)")
    p.add_argument("--metrics-port", type=int, default=env("EA_METRICS_PORT") or None,
                   help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (env EA_METRICS_PORT)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: until the source ends)")
    p.add_argument("--loop", type=int, default=1, help="replay file sources N times (0: forever)")
    p.add_argument("--rate-hz", type=float, default=0.0, help="pace replayed frames like a camera (0: back to back)")
    return p.parse_args(argv)


def build_controller(args, callbacks: list[Callbacks], log):
    from .bundle import Bundle
    from .controller import Controller
    from .options import ControllerOptions
    from .selftest import resolve_precisions

    bundle = Bundle.load(args.bundle)
    precisions = resolve_precisions(bundle, args.precision)
    profile = bundle.profiles.get(args.profile_target) if args.profile_target else None
    usable = profile is not None and all(p in profile.graphs.get(g, {}) for g, p in precisions.items())
    profile_target = args.profile_target if usable else None
    if args.profile_target and not usable:
        why = "no profile" if profile is None else "a profile measured at other precisions"
        log.warning("%s %r in the bundle; seeding latencies by warm-up (run profile.sh on the device to measure one)",
                    why, args.profile_target)

    options = ControllerOptions(mode=args.mode, confidence_target=args.confidence, profile_target=profile_target,
                                precision=precisions, num_threads=args.threads)
    ctrl = Controller.from_bundle(bundle, backend=args.backend, options=options)
    for cb in callbacks:
        ctrl.add_callbacks(cb)
    return ctrl


class FramePreparer:
    """Source frames -> model input tensors, one Preprocessor per colour order the source delivers."""

    def __init__(self, spec, resize: str | None, interpolation: str | None) -> None:
        self.spec, self.resize, self.interpolation = spec, resize, interpolation
        self._by_order: dict[str, Preprocessor] = {}

    def __call__(self, item: SourceFrame) -> np.ndarray:
        prepare = self._by_order.get(item.color_order)
        if prepare is None:
            options = PreprocessOptions(frame_order=item.color_order, resize=self.resize,
                                        interpolation=self.interpolation)
            prepare = self._by_order[item.color_order] = Preprocessor(self.spec, options)
        return prepare(np.asarray(item.frame))


class Service:
    """One run of the service: the controller, its callbacks, the notifier and the periodic counters."""

    def __init__(self, args, log, notifier: Notifier) -> None:
        self.args, self.log, self.notifier = args, log, notifier
        self.stop = threading.Event()
        self.counters = Counters()
        self.metrics = ServiceMetrics()
        self.sinks: list[Sink] = []
        self.rejected = 0
        self._next_stats = time.monotonic() + args.stats_every if args.stats_every > 0 else None

    def tick(self) -> None:
        """Called on progress: watchdog ping, and the counters every --stats-every seconds."""
        self.notifier.ping()
        if self._next_stats is not None and time.monotonic() >= self._next_stats:
            self._next_stats += self.args.stats_every
            line = self.metrics.summary_line()
            self.log.info("counters: %s", line)
            self.notifier.status(line[:200])

    def reject(self, ctrl, frame_id: int, item: SourceFrame, budget: float, error: FrameError) -> None:
        """A frame the preprocessing refused: a no_result to every callback, like the controller's own."""
        now = ctrl.clock.now()
        result = FrameResult(frame_id, StopReason.NO_RESULT, None, (), budget, now, now + budget, now,
                             error=str(error), user_data=item)
        for callback in (self.counters, self.metrics, *self.sinks):
            callback.on_final(result)
        self.metrics.count_error("frame")
        self.rejected += 1
        if self.rejected <= 5 or self.rejected % 100 == 0:
            self.log.warning("frame %d (%s) rejected (%d so far): %s", frame_id, item.name, self.rejected, error)

    def serve_frames(self, ctrl, source: Iterator[SourceFrame], prepare: FramePreparer, stamped: bool,
                     default_budget: float | None) -> int:
        """Serve until the source ends, --max-frames or a stop; returns the number of frames served."""
        args = self.args
        period = 1.0 / args.rate_hz if args.rate_hz > 0 else 0.0
        next_at = time.perf_counter()
        count = 0
        for item in source:
            if self.stop.is_set() or (args.max_frames and count >= args.max_frames):
                break
            budget = item.budget_s if item.budget_s is not None else default_budget
            if budget is None:
                raise EdgeAnytimeError(f"frame {item.name} has no budget: pass --budget-ms or store budget_ms in "
                                       f"the source")
            try:
                tensor = prepare(item)
            except FrameError as exc:
                self.reject(ctrl, count, item, budget, exc)
            else:
                if stamped and item.capture_s is not None:
                    ctrl.run(tensor, deadline_s=item.capture_s + budget, frame_id=count, user_data=item)
                else:
                    ctrl.run(tensor, budget_s=budget, frame_id=count, user_data=item)
            count += 1
            self.tick()
            if period:
                next_at += period
                self.stop.wait(max(0.0, next_at - time.perf_counter()))
        return count

    def serve_serial(self, ctrl, url: str, default_budget) -> None:
        from .serial.server import SerialServer, ServerOptions

        with SerialServer(ctrl, url, ServerOptions(default_budget_s=default_budget)) as server:
            server.start()
            self.log.info("serving %s on %s", ctrl.model.name, url)
            self.notifier.ready(f"serving {ctrl.model.name} on {url}")
            while not self.stop.wait(0.2):
                if server.error is not None:
                    raise server.error
                self.tick()
                if self.args.max_frames and sum(self.counters.counts.values()) >= self.args.max_frames:
                    break
            self.log.info("serial: %s", server.stats)


def apply_service_realtime(args, log) -> None:
    """CPU affinity and SCHED_FIFO before the controller's threads exist (they inherit both), mlockall."""
    if not (args.cpus or args.fifo_priority is not None or args.lock_memory):
        return
    from .realtime import RealtimeOptions, apply_realtime

    report = apply_realtime(RealtimeOptions(cpus=args.cpus or None, fifo_priority=args.fifo_priority,
                                            lock_memory=args.lock_memory, freeze_gc=False))
    for step in report.steps:
        if step.applied:
            log.info("realtime %s: applied%s", step.name, f" ({step.detail})" if step.detail else "")
        else:
            log.warning("realtime %s: refused (%s)", step.name, step.detail)


def serve(args: argparse.Namespace) -> int:
    """Run the service until the source ends, --max-frames, or SIGTERM/SIGINT; counters are logged."""
    log = setup_logging(args.log_level)
    notifier = Notifier.from_environment()
    service = Service(args, log, notifier)
    previous = {sig: signal.signal(sig, lambda *_: service.stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    metrics_server = None
    try:
        apply_service_realtime(args, log)
        default_budget = None if args.budget_ms is None else args.budget_ms / 1e3
        uri = parse_source(args.source)
        for url in args.sink or ["stdout"]:
            if url != args.source:       # a serial source answers over its own link
                service.sinks.append(open_sink(url))
        started = time.perf_counter()
        ctrl = build_controller(args, [service.counters, service.metrics, *service.sinks], log)
        gc.collect()
        gc.freeze()                      # models and buffers out of the collector's view
        try:
            if args.metrics_port is not None:
                from .metrics import MetricsServer

                metrics_server = MetricsServer(service.metrics, args.metrics_port)
                log.info("metrics on http://127.0.0.1:%d/metrics", metrics_server.port)
            if uri.kind == "serial":
                service.serve_serial(ctrl, args.source, default_budget)
            else:
                from .sources import open_source

                resize, interpolation = args.resize, args.interpolation
                if uri.kind == "folder" and resize is None and ctrl.model.input.resize == "exact":
                    resize, interpolation = "stretch", interpolation or "nearest"     # v1's folder behaviour
                with open_source(uri, args.loop, clock=ctrl.clock.now) as source:
                    notifier.ready(f"serving {ctrl.model.name} from {args.source}")
                    served = service.serve_frames(ctrl, iter(source),
                                                  FramePreparer(ctrl.model.input, resize, interpolation),
                                                  uri.kind in CAPTURE_STAMPED, default_budget)
                    if source.live and not service.stop.is_set() and not (args.max_frames and
                                                                          served >= args.max_frames):
                        raise EdgeAnytimeError(f"the live source {args.source} stopped delivering frames after "
                                               f"{served}; exiting with an error so that systemd restarts the "
                                               f"service (Restart=on-failure)")
            ctrl.flush()
        finally:
            notifier.stopping()
            ctrl.close()
            log.info("%s", service.counters.summary(ctrl.stats(), time.perf_counter() - started,
                                                    sum(k.errors for k in service.sinks)))
    finally:
        if metrics_server is not None:
            metrics_server.close()
        for sink in service.sinks:
            sink.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m edge_anytime.serve") -> int:
    args = parse_args(argv, prog)
    try:
        return serve(args)
    except (EdgeAnytimeError, OSError, ValueError) as exc:
        log = logging.getLogger("edge_anytime.serve")
        if log.handlers:                       # levelled (<3> under the journal)
            log.error("error: %s", exc)
        else:
            print(f"serve: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
