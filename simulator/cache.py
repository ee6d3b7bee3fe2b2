"""The prediction cache: every exit's logits for every frame of a stream, computed once.

>>> cache = cached_predictions("deploy/bundles/gtsrb-resann", "gtsrb-test", frames=2000)   # doctest: +SKIP
>>> cache.logits.shape               # (frames, exits, classes)                          # doctest: +SKIP
(2000, 4, 43)
>>> PredictionCache.load(cache.path).key == cache.key                                      # doctest: +SKIP
True

Building runs the whole stage program (all steps, in plan order) on each frame
with the bundle's backend (LiteRT) and keeps each exit's logits, the per-step
latencies it measured, and what failed: frames the preprocessor rejects
(`valid` False) and steps that raised or lost an input (`bad_steps`). The file
(.npz, no pickles) is keyed by the sha256 of the bundle's manifest and the
stream spec, and carries the manifest and latency profiles, so a cache alone
is enough to replay any number of budget scenarios on the simulated clock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from edge_anytime.errors import FrameError
from edge_anytime.interpreter import ProgramInterpreter
from edge_anytime.manifest import Manifest, ModelInfo, manifest_to_json, parse_manifest
from edge_anytime.preprocess import Preprocessor
from edge_anytime.profile import LatencyProfile
from edge_anytime.program import Program

from .progress import progress
from .sources import SensorFrame

CACHE_FORMAT = "edge-anytime-sim-cache"
CACHE_VERSION = 1
_ARRAYS = ("logits", "coarse_logits", "labels", "timestamps", "track_ids", "valid", "bad_steps", "step_latency_s",
           "errors")


class CacheError(ValueError):
    """A prediction cache is missing, stale or damaged; the message names the fix."""


def default_cache_dir() -> Path:
    """`EDGE_ANYTIME_CACHE` if set, else ~/.cache/edge_anytime/simulator."""
    env = os.environ.get("EDGE_ANYTIME_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edge_anytime" / "simulator"


def cache_key(bundle_sha: str, stream_spec: str, frames: int | None, precision: str, backend: str) -> str:
    text = json.dumps([CACHE_VERSION, bundle_sha, stream_spec, frames, precision, backend])
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class PredictionCache:
    """Logits of every exit for every frame, ground truth, and what went wrong. See the module docstring."""

    key: str
    meta: Mapping[str, Any]              # bundle_sha, stream, precision(s), backend, host, manifest, profiles
    logits: np.ndarray                   # (N, K, C) float32; NaN where not computed
    coarse_logits: np.ndarray            # (N, K, Cc) float32, Cc = 0 without coarse heads
    labels: np.ndarray                   # (N,) int64, -1 unknown
    timestamps: np.ndarray               # (N,) seconds
    track_ids: np.ndarray                # (N,) int64
    valid: np.ndarray                    # (N,) bool: the preprocessor accepted the frame
    bad_steps: np.ndarray                # (N, S) bool: the step raised, or an input was missing
    step_latency_s: np.ndarray           # (N, S) float32 measured while building; NaN if not run
    errors: np.ndarray                   # (N,) str: why the frame or a step failed ('' if fine)
    path: Path | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.labels)

    @cached_property
    def manifest(self) -> Manifest:
        return parse_manifest(self.meta["manifest"])

    @property
    def program(self) -> Program:
        return self.manifest.program

    @property
    def model(self) -> ModelInfo:
        return self.manifest.model

    @property
    def precisions(self) -> dict[str, str]:
        return dict(self.meta["precisions"])

    @property
    def profiles(self) -> dict[str, LatencyProfile]:
        out = {}
        for target, data in self.meta.get("profiles", {}).items():
            graphs = {g: {p: tuple(s) for p, s in per.items()} for g, per in data["graphs"].items()}
            out[target] = LatencyProfile(target, data.get("backend", ""), graphs, int(data.get("threads", 1)),
                                         data.get("host", ""))
        return out

    def subset(self, frames: int) -> "PredictionCache":
        """The first `frames` frames."""
        arrays = {name: getattr(self, name)[:frames] for name in _ARRAYS}
        return PredictionCache(self.key, self.meta, path=self.path, **arrays)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": self.key, **self.meta}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, header=np.array(json.dumps(header)), **{name: getattr(self, name) for name in _ARRAYS})
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, expect_key: str | None = None) -> "PredictionCache":
        path = Path(path)
        fix = "delete it and run the replay again to rebuild it (--rebuild-cache)"
        if not path.is_file():
            raise CacheError(f"prediction cache {path} does not exist; build it with --bundle B --stream S")
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                arrays = {name: data[name] for name in _ARRAYS}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise CacheError(f"prediction cache {path} is damaged or from another tool ({exc}); {fix}") from exc
        if header.get("format") != CACHE_FORMAT or header.get("version") != CACHE_VERSION:
            raise CacheError(f"{path} is not a version-{CACHE_VERSION} prediction cache; {fix}")
        key = header.pop("key")
        if expect_key is not None and key != expect_key:
            raise CacheError(f"prediction cache {path} was built for another bundle or stream; {fix}")
        for name in ("format", "version"):
            header.pop(name)
        n = len(arrays["labels"])
        if any(len(arrays[name]) != n for name in _ARRAYS):
            raise CacheError(f"prediction cache {path} has arrays of different lengths; {fix}")
        return cls(key, header, path=path, **arrays)


# ---------------------------------------------------------------------- building
def build_cache(program: Program, model: ModelInfo, runners: Mapping, stream: Iterable[SensorFrame], *,
                meta: Mapping[str, Any], key: str = "", show_progress: bool = True,
                total: int | None = None) -> PredictionCache:
    """Run every step on every frame with `runners` (graph -> runner) and keep each exit's logits."""
    prepare = Preprocessor(model.input)
    steps = program.steps
    exits = program.exits
    out_port = {}
    for k, exit_ in enumerate(exits):
        for tensor, kind in ((exit_.tensor, "fine"), (exit_.coarse_tensor, "coarse")):
            if tensor is not None:
                out_port[tensor] = (k, kind)
    coarse_classes = 0
    for exit_ in exits:
        if exit_.coarse_tensor is not None:
            step = steps[program.producer_of(exit_.coarse_tensor)]
            port = next(p for p, t in step.outputs.items() if t == exit_.coarse_tensor)
            coarse_classes = program.graphs[step.graph].output(port).shape[-1]
    interpreter = ProgramInterpreter(program, runners)
    rows: dict[str, list] = {name: [] for name in _ARRAYS}
    for item in progress(stream, total=total, desc="caching predictions", enabled=show_progress):
        logits = np.full((len(exits), len(model.labels)), np.nan, np.float32)
        coarse = np.full((len(exits), coarse_classes), np.nan, np.float32)
        bad = np.zeros(len(steps), bool)
        latency = np.full(len(steps), np.nan, np.float32)
        failures: list[str] = []

        def timed(step, seconds: float) -> None:
            latency[step.index] = seconds

        def failed(step, exc: BaseException) -> None:   # a failing step is recorded, the stream goes on
            bad[step.index] = True
            failures.append(f"step {step.name!r} failed: {type(exc).__name__}: {exc}")

        try:
            tensor = prepare(item.frame)
            valid = True
        except FrameError as exc:
            valid = False
            bad[:] = True
            failures.append(f"frame rejected: {exc}")
        if valid:
            env = interpreter.run_all(tensor, timer=timed, on_error=failed)
            for tensor_name, (k, kind) in out_port.items():
                if tensor_name in env:
                    (logits if kind == "fine" else coarse)[k] = np.asarray(env[tensor_name], np.float32).reshape(-1)
        error = failures[0] if failures else ""
        for name, value in (("logits", logits), ("coarse_logits", coarse), ("labels", item.label),
                            ("timestamps", item.timestamp_s), ("track_ids", item.track_id), ("valid", valid),
                            ("bad_steps", bad), ("step_latency_s", latency), ("errors", error)):
            rows[name].append(value)
    if not rows["labels"]:
        raise CacheError("the stream produced no frames; check the stream spec (and --frames)")
    arrays = {name: np.asarray(values) for name, values in rows.items()}
    arrays["errors"] = arrays["errors"].astype(str)
    arrays["labels"] = arrays["labels"].astype(np.int64)
    arrays["timestamps"] = arrays["timestamps"].astype(np.float64)
    return PredictionCache(key, dict(meta), **arrays)


def bundle_sha(bundle) -> str:
    """sha256 of the bundle's manifest.json (which pins every graph file by its own sha256)."""
    return hashlib.sha256((Path(bundle.root) / "manifest.json").read_bytes()).hexdigest()


def cache_meta(bundle, stream_spec: str, precisions: Mapping[str, str], backend: str) -> dict[str, Any]:
    return {"bundle": str(bundle.root), "bundle_sha": bundle_sha(bundle), "stream": stream_spec,
            "precisions": dict(precisions), "backend": backend, "host": platform.node(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "manifest": manifest_to_json(bundle.manifest),
            "profiles": profiles_json(bundle), "class_names": list(bundle.model.labels)}


def profiles_json(bundle) -> dict[str, Any]:
    """The bundle's latency profiles as a cache stores them (target -> profile JSON)."""
    return {target: profile.to_json() for target, profile in bundle.profiles.items()}


def with_current_profiles(cache: PredictionCache, bundle) -> PredictionCache:
    """`cache` carrying the bundle's latency profiles as they are now: profiles are not in the manifest (the
    cache key), so a bundle profiled again after the cache was built (`edge_anytime.profiling`) would
    otherwise be replayed with the old timings."""
    profiles = profiles_json(bundle)
    if profiles == cache.meta.get("profiles"):
        return cache
    return dataclasses.replace(cache, meta={**cache.meta, "profiles": profiles})


def cached_predictions(bundle, stream, *, frames: int | None = None, precision: str = "fp32",
                       backend: str = "litert", num_threads: int = 1, cache_dir: str | os.PathLike | None = None,
                       rebuild: bool = False, show_progress: bool = True, data_dir=None) -> PredictionCache:
    """Load the cache for (bundle, stream spec, frames, precision, backend), building it if needed.

    `bundle` is a path or an edge_anytime Bundle; `stream` a spec string or an opened stream.
    """
    from edge_anytime.backends.base import GraphLoadSpec, create_backend
    from edge_anytime.bundle import Bundle

    from .sources import open_stream

    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    opened = open_stream(stream, frames=frames, data_dir=data_dir) if isinstance(stream, str) else stream
    spec = opened.spec
    precisions = bundle.resolve_precisions(precision)
    key = cache_key(bundle_sha(bundle), spec + getattr(opened, "fingerprint", ""), frames,
                    json.dumps(precisions, sort_keys=True), backend)
    path = Path(cache_dir or default_cache_dir()) / f"{bundle.model.name}-{key[:16]}.npz"
    if path.is_file() and not rebuild:
        try:
            return with_current_profiles(PredictionCache.load(path, expect_key=key), bundle)
        except CacheError:
            pass  # damaged or stale: rebuild below
    engine = create_backend(backend, **({"num_threads": num_threads} if backend in ("litert", "tflite_runtime") else {}))
    runners = {}
    try:
        for graph, prec in precisions.items():
            graph_file = bundle.graph_file(graph, prec)
            runners[graph] = engine.load_graph(GraphLoadSpec(bundle.program.graphs[graph], prec, graph_file,
                                                             bundle.path_of(graph_file.path)))
        try:
            total = len(opened)
        except TypeError:
            total = None
        cache = build_cache(bundle.program, bundle.model, runners, opened, key=key, total=total,
                            meta=cache_meta(bundle, spec, precisions, backend), show_progress=show_progress)
    finally:
        for runner in runners.values():
            runner.close()
    cache.save(path)
    return PredictionCache.load(path, expect_key=key)
