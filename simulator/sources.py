"""Sensor streams chosen by name or URL, with timestamps and ground truth on every frame.

>>> stream = open_stream("gtsrb-tracks?fps=30", frames=60)          # doctest: +SKIP
>>> first = next(iter(stream))                                       # doctest: +SKIP
>>> first.frame.shape, first.timestamp_s, first.label, first.track_id   # doctest: +SKIP
((32, 32, 3), 0.0, 14, 0)

Specs (options after `?`, joined by `&`):

* `gtsrb-tracks` - the held-out GTSRB validation tracks (30 frames of one sign as
  the vehicle approaches, never trained on) replayed as a camera: `fps` (30),
  `gap` (seconds between tracks, 0.5), `order` (`shuffle` or `file`; shuffle
  keeps each track whole), `seed` (0).
* `gtsrb-test`, `gtsrb-val`, `cifar10-test`, `cifar10-val` - a split as a stream:
  `fps` (30), `order` (`file` for GTSRB, whose test set is already mixed;
  `shuffle` for CIFAR-10, which is stored sorted by class), `seed`.
* `npz:PATH` - a recorded stream: arrays `frames` (N, H, W, C), optional
  `timestamps` (seconds, non-decreasing), `labels` (-1 = unknown), `track_ids`.
  Option `fps` gives timestamps when the file has none.
* `serial:URL` - frames sent as `Frame` messages over the serial link
  (edge_anytime.serial, e.g. `serial:loop://` or `serial:serial:///dev/ttyTHS1?baud=921600`).
  No ground truth (label -1).

Any iterable of `SensorFrame` works wherever a stream is expected.
"""

from __future__ import annotations

import hashlib
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence
from urllib.parse import parse_qsl

import numpy as np


class StreamError(ValueError):
    """A stream spec or a recorded stream is unusable; the message names the fix."""


@dataclass(frozen=True)
class SensorFrame:
    """One frame as a sensor delivers it, with its ground truth (label -1: unknown)."""

    index: int
    frame: np.ndarray          # uint8 HWC (a recorded stream may hold float32 frames)
    timestamp_s: float         # capture time, seconds from the start of the stream
    label: int = -1
    track_id: int = -1


DATASET_STREAMS = {"gtsrb-test": ("gtsrb32", "test"), "gtsrb-val": ("gtsrb32", "val"),
                   "cifar10-test": ("cifar10", "test"), "cifar10-val": ("cifar10", "val")}
STREAM_NAMES = ("gtsrb-tracks", *DATASET_STREAMS, "npz:PATH", "serial:URL")
_OPTIONS = {"gtsrb-tracks": ("fps", "gap", "order", "seed"), "npz": ("fps",),
            **{name: ("fps", "order", "seed") for name in DATASET_STREAMS}}


class Stream:
    """A finite sequence of SensorFrames held in memory (datasets, recordings).

    `spec` is the canonical spec string (options sorted) and `fingerprint` a digest of a recording's
    content; both key prediction caches.
    """

    def __init__(self, spec: str, frames: np.ndarray | Sequence[np.ndarray], timestamps: np.ndarray,
                 labels: np.ndarray, track_ids: np.ndarray, class_names: tuple[str, ...] = (),
                 fingerprint: str = "") -> None:
        self.spec = spec
        self.fingerprint = fingerprint
        self.frames = frames
        self.timestamps = np.asarray(timestamps, np.float64)
        self.labels = np.asarray(labels, np.int64)
        self.track_ids = np.asarray(track_ids, np.int64)
        self.class_names = class_names

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[SensorFrame]:
        for i in range(len(self)):
            yield SensorFrame(i, self.frames[i], float(self.timestamps[i]), int(self.labels[i]),
                              int(self.track_ids[i]))

    def close(self) -> None:
        pass

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Stream({self.spec!r}, frames={len(self)})"


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split a spec into (kind, argument, options): 'gtsrb-tracks?fps=30' -> ('gtsrb-tracks', '', {'fps': '30'}).

    >>> parse_spec("npz:rec.npz?fps=10")
    ('npz', 'rec.npz', {'fps': '10'})
    >>> parse_spec("serial:loop://")
    ('serial', 'loop://', {})
    """
    spec = spec.strip()
    if spec.startswith("serial:"):
        return "serial", spec[len("serial:"):], {}
    body, _, query = spec.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    if body.startswith("npz:"):
        kind, argument = "npz", body[len("npz:"):]
        if not argument:
            raise StreamError("npz: needs a path, e.g. npz:recordings/drive.npz")
    else:
        kind, argument = body, ""
    if kind not in _OPTIONS and kind != "serial":
        raise StreamError(f"unknown stream {spec!r}; use one of {', '.join(STREAM_NAMES)}")
    unknown = set(options) - set(_OPTIONS[kind])
    if unknown:
        raise StreamError(f"stream {spec!r}: unknown option(s) {sorted(unknown)}; "
                          f"{kind} takes {', '.join(_OPTIONS[kind])}")
    return kind, argument, options


def canonical_spec(kind: str, argument: str, options: dict[str, str]) -> str:
    body = f"npz:{argument}" if kind == "npz" else kind
    query = "&".join(f"{k}={options[k]}" for k in sorted(options))
    return body + (f"?{query}" if query else "")


def _number(options: dict, key: str, default: float, spec: str, minimum: float = 0.0) -> float:
    text = options.get(key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise StreamError(f"stream {spec!r}: {key}={text!r} is not a number") from None
    if not np.isfinite(value) or value <= minimum:
        raise StreamError(f"stream {spec!r}: {key} must be > {minimum}, got {text}")
    return value


def _order(options: dict, default: str, spec: str) -> tuple[str, int]:
    order = options.get("order", default)
    if order not in ("file", "shuffle"):
        raise StreamError(f"stream {spec!r}: order must be 'file' or 'shuffle', got {order!r}")
    try:
        seed = int(options.get("seed", 0))
    except ValueError:
        raise StreamError(f"stream {spec!r}: seed must be an integer") from None
    return order, seed


def open_stream(spec: str, frames: int | None = None, data_dir: str | os.PathLike | None = None,
                serial_timeout_s: float = 5.0) -> Stream:
    """Open a stream by spec (see the module docstring); `frames` keeps only the first N frames."""
    if frames is not None and frames < 1:
        raise StreamError(f"frames must be >= 1, got {frames}")
    kind, argument, options = parse_spec(spec)
    if kind == "serial":
        return SerialStream(argument, frames=frames, idle_timeout_s=serial_timeout_s)
    canonical = canonical_spec(kind, argument, options)
    fps = _number(options, "fps", 30.0, spec)
    if kind == "npz":
        return _limit(load_npz(argument, fps=fps, spec=canonical), frames)
    from training.data import dataset_info, gtsrb_val_tracks, load_split

    if kind == "gtsrb-tracks":
        gap = _number(options, "gap", 0.5, spec, minimum=-1e-12)
        order, seed = _order(options, "shuffle", spec)
        x, y = load_split("gtsrb32", "trainval", data_dir)
        tracks = gtsrb_val_tracks(data_dir)
        if order == "shuffle":
            tracks = [tracks[i] for i in np.random.default_rng(seed).permutation(len(tracks))]
        if frames is not None:  # whole tracks until N frames are covered
            kept, total = [], 0
            for track in tracks:
                if total >= frames:
                    break
                kept.append(track)
                total += track[1] - track[0]
            tracks = kept
        index = np.concatenate([np.arange(a, b) for a, b, _ in tracks])
        track_ids = np.concatenate([np.full(b - a, t) for t, (a, b, _) in enumerate(tracks)])
        within = np.concatenate([np.arange(b - a) for a, b, _ in tracks])
        starts = np.cumsum([0.0] + [(b - a - 1) / fps + gap + 1.0 / fps for a, b, _ in tracks[:-1]])
        timestamps = starts[track_ids] + within / fps
        stream = Stream(canonical, x[index], timestamps, y[index], track_ids, dataset_info("gtsrb32").class_names)
        return _limit(stream, frames)
    dataset, split = DATASET_STREAMS[kind]
    order, seed = _order(options, "file" if dataset == "gtsrb32" else "shuffle", spec)
    x, y = load_split(dataset, split, data_dir)
    index = np.random.default_rng(seed).permutation(len(y)) if order == "shuffle" else np.arange(len(y))
    if frames is not None:
        index = index[:frames]
    return Stream(canonical, x[index], np.arange(len(index)) / fps, y[index], np.full(len(index), -1),
                  dataset_info(dataset).class_names)


def _limit(stream: Stream, frames: int | None) -> Stream:
    if frames is None or frames >= len(stream):
        return stream
    return Stream(stream.spec, stream.frames[:frames], stream.timestamps[:frames], stream.labels[:frames],
                  stream.track_ids[:frames], stream.class_names, stream.fingerprint)


def load_npz(path: str | os.PathLike, fps: float = 30.0, spec: str | None = None) -> Stream:
    """Read and validate a recorded stream (see `save_npz`)."""
    path = Path(path)
    fix = "re-record it with simulator.sources.save_npz(path, frames, timestamps, labels)"
    if not path.is_file():
        raise StreamError(f"recorded stream {path} does not exist; check the path after npz:")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise StreamError(f"recorded stream {path} is truncated or not an .npz file ({exc}); {fix}") from exc
    if "frames" not in arrays:
        raise StreamError(f"recorded stream {path} has no 'frames' array (it has {sorted(arrays)}); {fix}")
    frames = arrays["frames"]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or frames.dtype.kind not in "uf":
        raise StreamError(f"recorded stream {path}: frames must be (N, H, W, C) uint8 or float with C in (1, 3), "
                          f"got {frames.shape} {frames.dtype}; {fix}")
    n = len(frames)
    if n == 0:
        raise StreamError(f"recorded stream {path} is empty (0 frames); {fix}")
    timestamps = arrays.get("timestamps", np.arange(n) / fps).astype(np.float64)
    labels = arrays.get("labels", np.full(n, -1))
    track_ids = arrays.get("track_ids", np.full(n, -1))
    for name, values in (("timestamps", timestamps), ("labels", labels), ("track_ids", track_ids)):
        if values.shape != (n,):
            raise StreamError(f"recorded stream {path}: {name} has shape {values.shape} but there are {n} frames "
                              f"(mismatched lengths); {fix}")
    if not np.all(np.isfinite(timestamps)) or np.any(np.diff(timestamps) < 0):
        raise StreamError(f"recorded stream {path}: timestamps must be finite and non-decreasing seconds; {fix}")
    if labels.dtype.kind not in "iu":
        raise StreamError(f"recorded stream {path}: labels must be integers (-1 for unknown), got {labels.dtype}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return Stream(spec or canonical_spec("npz", str(path), {}), frames, timestamps - timestamps[0], labels, track_ids,
                  fingerprint=f"#sha256:{digest}")


def save_npz(path: str | os.PathLike, frames: np.ndarray, timestamps: Iterable[float] | None = None,
             labels: Iterable[int] | None = None, track_ids: Iterable[int] | None = None) -> Path:
    """Record a stream for `npz:PATH` (uncompressed: frames load fast)."""
    frames = np.asarray(frames)
    n = len(frames)
    arrays = {"frames": frames}
    for name, values in (("timestamps", timestamps), ("labels", labels), ("track_ids", track_ids)):
        if values is not None:
            arrays[name] = np.asarray(list(values) if not isinstance(values, np.ndarray) else values)
            if len(arrays[name]) != n:
                raise StreamError(f"save_npz: {name} has {len(arrays[name])} entries for {n} frames")
    path = Path(path)
    np.savez(path, **arrays)
    return path


class SerialStream:
    """Frames arriving as `Frame` messages on a serial link (edge_anytime.serial); ends after `frames`
    frames or `idle_timeout_s` without one. Undecodable frames are yielded with an empty array (the
    controller rejects them and the replay counts them); other messages are counted in `skipped`."""

    def __init__(self, url: str, frames: int | None = None, idle_timeout_s: float = 5.0, link=None) -> None:
        if link is None:
            try:
                from edge_anytime.serial.link import open_link
            except ImportError as exc:
                raise StreamError(f"serial streams need edge_anytime.serial and pyserial ({exc}); "
                                  f"install with: pip install pyserial") from exc
            link = open_link(url)
        self.spec = f"serial:{url}"
        self.link = link
        self.frames = frames
        self.idle_timeout_s = idle_timeout_s
        self.skipped = 0
        self.corrupt = 0
        self.class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        if self.frames is None:
            raise TypeError("a serial stream has no length until it ends; pass frames=N")
        return self.frames

    def __iter__(self) -> Iterator[SensorFrame]:
        from edge_anytime.serial.messages import Frame

        start = time.monotonic()
        count = 0
        while self.frames is None or count < self.frames:
            message = self.link.recv(timeout=self.idle_timeout_s)
            if message is None:
                return
            if not isinstance(message, Frame):
                self.skipped += 1
                continue
            try:
                pixels = np.array(message.array)
            except (ValueError, TypeError):
                self.corrupt += 1
                pixels = np.zeros((0, 0, 3), np.uint8)
            yield SensorFrame(count, pixels, time.monotonic() - start, -1, -1)
            count += 1

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> "SerialStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
