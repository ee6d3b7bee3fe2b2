"""`python -m edge_anytime.serve`: the anytime inference service of a deploy package.

A controller (`Controller.from_bundle`) fed by one source, its final results
written to one or more sinks, until the source ends, `--max-frames`, or
SIGTERM/SIGINT (the frame in flight finishes; counters go to stderr on exit).

Sources: `npz:FILE` replays arrays (`frames`/`images`/`x`/`input`, optional
per-frame `budget_ms`/`budget_s` and `labels`), `dir:FOLDER` reads images in
name order (.npy, .ppm/.pgm natively; .png/.jpg with Pillow; resized to the
model input by nearest neighbour), `serial:URL` takes FRAME messages over the
serial link and answers with RESULT messages (edge_anytime.serial, pyserial).
Sinks: `stdout` (one line per frame), `jsonl:FILE` (one JSON object per
frame), `serial:URL` (RESULT messages). Budget: `--budget-ms`, or per frame
from the source (npz arrays, serial frames).

    python -m edge_anytime.serve --bundle bundle --source npz:stream.npz --sink stdout --budget-ms 5
    python -m edge_anytime.serve --bundle bundle --source serial:///dev/ttyTHS0?baud=921600 --sink jsonl:log.jsonl
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .callbacks import Callbacks
from .errors import EdgeAnytimeError, require
from .results import FrameResult

FRAME_KEYS = ("frames", "images", "x", "input")


@dataclass(frozen=True)
class SourceFrame:
    frame: np.ndarray
    budget_s: float | None = None
    label: int | None = None
    name: str = ""


def _first(data, keys, what: str, path: str, required: bool = True):
    for key in keys:
        if key in data:
            return data[key]
    if required:
        raise EdgeAnytimeError(f"{path}: no {what} array; store one of {list(keys)} (it has {sorted(data)})")
    return None


def npz_source(path: str, loop: int = 1) -> Iterator[SourceFrame]:
    """Frames of an .npz (a recorded stream or a bundle's reference/self_test.npz); `loop` 0 repeats forever."""
    with np.load(path, allow_pickle=False) as data:
        frames = _first(data, FRAME_KEYS, "frames", path)
        budgets = _first(data, ("budget_ms", "budgets_ms"), "", path, required=False)
        budgets = budgets / 1e3 if budgets is not None else _first(data, ("budget_s", "budgets_s"), "", path, False)
        labels = _first(data, ("labels", "y", "label"), "", path, required=False)
    if frames.ndim == 5 and frames.shape[1] == 1:          # (N, 1, C, H, W) preprocessed reference inputs
        frames = frames.astype(np.float32)
    count = 0
    while loop == 0 or count < loop:
        for i, frame in enumerate(frames):
            yield SourceFrame(frame, None if budgets is None else float(budgets[i]),
                              None if labels is None else int(labels[i]), f"{Path(path).name}[{i}]")
        count += 1


def read_pnm(path: Path) -> np.ndarray:
    """A binary PPM (P6) or PGM (P5) image as uint8 HWC (GTSRB ships .ppm)."""
    data = path.read_bytes()
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    magic, width, height, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    if magic not in (b"P6", b"P5") or maxval > 255:
        raise EdgeAnytimeError(f"{path}: only 8-bit binary PPM (P6) / PGM (P5) are read natively")
    channels = 3 if magic == b"P6" else 1
    pixels = np.frombuffer(data, np.uint8, width * height * channels, pos + 1)
    return pixels.reshape(height, width, channels)


def load_image(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix in (".ppm", ".pgm", ".pnm"):
        return read_pnm(path)
    image = require("PIL.Image", "sim").open(path)
    return np.asarray(image.convert("RGB"))


def fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize to (height, width), grey -> RGB, alpha dropped."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[:, :, :3]
    if image.shape[:2] != (height, width):
        rows = (np.arange(height) * image.shape[0] // height)
        cols = (np.arange(width) * image.shape[1] // width)
        image = image[rows][:, cols]
    return np.ascontiguousarray(image)


IMAGE_SUFFIXES = (".npy", ".ppm", ".pgm", ".pnm", ".png", ".jpg", ".jpeg", ".bmp")


def dir_source(folder: str, height: int, width: int, loop: int = 1) -> Iterator[SourceFrame]:
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise EdgeAnytimeError(f"dir:{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    count = 0
    while loop == 0 or count < loop:
        for path in paths:
            image = load_image(path)
            yield SourceFrame(fit(image, height, width) if image.ndim in (2, 3) and image.dtype == np.uint8 else image,
                              name=path.name)
        count += 1


class Sink(Callbacks):
    """Writes every final result; subclasses format it. A failing write is reported, never fatal."""

    errors = 0

    def on_final(self, result: FrameResult) -> None:
        self.write(result, result.user_data if isinstance(result.user_data, SourceFrame) else None)

    def on_error(self, error, context) -> None:
        if context.startswith("callback:"):
            self.errors += 1
            if self.errors <= 5:
                print(f"serve: {type(self).__name__} failed: {error}", file=sys.stderr, flush=True)

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
    if result.error:
        out["error"] = result.error
    return out


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
    if url.startswith("jsonl:"):
        return JsonlSink(url[len("jsonl:"):])
    if url.startswith("serial:"):
        return SerialSink(url)
    raise EdgeAnytimeError(f"unknown sink {url!r}; use stdout, jsonl:FILE or serial:URL")


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from .profiling import parse_cpus
    from .selftest import add_runtime_arguments

    p = argparse.ArgumentParser(prog="python -m edge_anytime.serve", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runtime_arguments(p)
    p.add_argument("--source", required=True, help="npz:FILE | dir:FOLDER | serial:URL")
    p.add_argument("--sink", action="append", help="stdout (default) | jsonl:FILE | serial:URL; repeatable")
    p.add_argument("--budget-ms", type=float, help="budget per frame (frames may carry their own)")
    p.add_argument("--mode", choices=("anytime", "apriori"), default="anytime")
    p.add_argument("--confidence", type=float, help="stop refining at this calibrated confidence")
    p.add_argument("--profile-target", help="seed the deadline monitor from bundle/profiles/TARGET.json if present")
    p.add_argument("--cpus", type=parse_cpus, default=(), help="pin the process to these CPUs, e.g. 4,5")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: until the source ends)")
    p.add_argument("--loop", type=int, default=1, help="replay npz/dir sources N times (0: forever)")
    p.add_argument("--rate-hz", type=float, default=0.0, help="pace replayed frames like a camera (0: back to back)")
    return p.parse_args(argv)


def build_controller(args, callbacks: list[Callbacks]):
    from .bundle import Bundle
    from .controller import Controller
    from .options import ControllerOptions

    bundle = Bundle.load(args.bundle)
    from .selftest import resolve_precisions

    precisions = resolve_precisions(bundle, args.precision)
    profile = bundle.profiles.get(args.profile_target) if args.profile_target else None
    usable = profile is not None and all(p in profile.graphs.get(g, {}) for g, p in precisions.items())
    profile_target = args.profile_target if usable else None
    if args.profile_target and not usable:
        why = "no profile" if profile is None else "a profile measured at other precisions"
        print(f"serve: {why} {args.profile_target!r} in the bundle; seeding latencies by warm-up "
              f"(run profile.sh on the device to measure one)", file=sys.stderr)

    options = ControllerOptions(mode=args.mode, confidence_target=args.confidence, profile_target=profile_target,
                                precision=precisions, num_threads=args.threads)
    ctrl = Controller.from_bundle(bundle, backend=args.backend, options=options)
    for cb in callbacks:
        ctrl.add_callbacks(cb)
    return ctrl


def serve(args: argparse.Namespace) -> int:
    """Run the service until the source ends, --max-frames, or SIGTERM/SIGINT; counters go to stderr."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    sinks: list[Sink] = []
    try:
        if args.cpus:
            from .realtime import RealtimeOptions, apply_realtime

            print(f"serve: {apply_realtime(RealtimeOptions(cpus=args.cpus))}", file=sys.stderr)
        default_budget = None if args.budget_ms is None else args.budget_ms / 1e3
        for url in args.sink or ["stdout"]:
            if url != args.source:       # a serial source answers over its own link
                sinks.append(open_sink(url))
        counters = Counters()
        started = time.perf_counter()
        ctrl = build_controller(args, [counters, *sinks])
        try:
            if args.source.startswith("serial:"):
                serve_serial(ctrl, args.source, default_budget, stop, args.max_frames, counters)
            else:
                serve_frames(ctrl, make_source(args, ctrl.model.input), default_budget, stop, args)
            ctrl.flush()
        finally:
            ctrl.close()
            print(counters.summary(ctrl.stats(), time.perf_counter() - started, sum(k.errors for k in sinks)),
                  file=sys.stderr, flush=True)
    finally:
        for sink in sinks:
            sink.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def make_source(args, spec) -> Iterator[SourceFrame]:
    kind, _, where = args.source.partition(":")
    if kind == "npz":
        return npz_source(where, args.loop)
    if kind == "dir":
        height, width = (spec.shape[2], spec.shape[3]) if spec.layout == "NCHW" else (spec.shape[1], spec.shape[2])
        return dir_source(where, height, width, args.loop)
    raise EdgeAnytimeError(f"unknown source {args.source!r}; use npz:FILE, dir:FOLDER or serial:URL")


def serve_frames(ctrl, source: Iterator[SourceFrame], default_budget, stop: threading.Event, args) -> None:
    period = 1.0 / args.rate_hz if args.rate_hz > 0 else 0.0
    next_at = time.perf_counter()
    for count, item in enumerate(source):
        if stop.is_set() or (args.max_frames and count >= args.max_frames):
            break
        budget = item.budget_s if item.budget_s is not None else default_budget
        if budget is None:
            raise EdgeAnytimeError(f"frame {item.name} has no budget: pass --budget-ms or store budget_ms in the source")
        ctrl.run(np.asarray(item.frame), budget_s=budget, user_data=item)
        if period:
            next_at += period
            stop.wait(max(0.0, next_at - time.perf_counter()))


def serve_serial(ctrl, url: str, default_budget, stop: threading.Event, max_frames: int, counters: Counters) -> None:
    from .serial.server import SerialServer, ServerOptions

    with SerialServer(ctrl, url, ServerOptions(default_budget_s=default_budget)) as server:
        server.start()
        print(f"serve: serving {ctrl.model.name} on {url}", file=sys.stderr, flush=True)
        while not stop.wait(0.2):
            if server.error is not None:
                raise server.error
            if max_frames and sum(counters.counts.values()) >= max_frames:
                break
        print(f"serial: {server.stats}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return serve(args)
    except (EdgeAnytimeError, OSError, ValueError) as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
