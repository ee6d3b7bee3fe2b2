"""Per-target latency profiles stored in a bundle (`profiles/<target>.json`).

A profile holds latency samples (microseconds) of every graph at each
precision, measured on one target after warm-up, and the fingerprint of the
host that measured it (machine, CPU model and count, power mode where
readable, Python, numpy and interpreter versions, date). The deadline monitor
seeds its estimators from a profile whose host matches this one (and warns
when told to use one that does not); the simulator draws step latencies from it.

>>> p = LatencyProfile("x86-64", "litert", {"stem": {"fp32": (100.0, 120.0)}})
>>> [round(v, 6) for v in p.samples_s("stem", "fp32")]
[0.0001, 0.00012]
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from .errors import BundleError

PROFILE_FORMAT = "edge-anytime-profile"
PROFILE_VERSION = 1
MATCH_KEYS = ("machine", "cpu", "cpus", "power_mode")   # what must agree for a profile to describe this host


def _cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (x86 'model name', ARM 'Hardware'/'Model'), or the device-tree model."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                return value.strip()
    except OSError:
        pass
    try:
        return Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00 \n")
    except OSError:
        return platform.processor() or "unknown"


def _power_mode() -> str:
    """Jetson nvpmodel mode where readable (EDGE_ANYTIME_POWER_MODE overrides), else ''."""
    if os.environ.get("EDGE_ANYTIME_POWER_MODE"):
        return os.environ["EDGE_ANYTIME_POWER_MODE"]
    try:
        return Path("/var/lib/nvpmodel/status").read_text(errors="replace").strip()
    except OSError:
        return ""


def _version(package: str) -> str:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # not installed, or no metadata
        return ""


def host_fingerprint() -> dict[str, str]:
    """Where a profile is measured: compared with this host before its samples are trusted.

    >>> sorted(host_fingerprint())
    ['cpu', 'cpus', 'date', 'litert', 'machine', 'numpy', 'power_mode', 'python', 'tflite_runtime']
    """
    import numpy

    return {"machine": platform.machine(), "cpu": _cpu_model(), "cpus": str(len(os.sched_getaffinity(0))
                                                                            if hasattr(os, "sched_getaffinity")
                                                                            else os.cpu_count()),
            "power_mode": _power_mode(), "python": platform.python_version(), "numpy": numpy.__version__,
            "litert": _version("ai-edge-litert"), "tflite_runtime": _version("tflite-runtime"),
            "date": time.strftime("%Y-%m-%d")}


@dataclass(frozen=True)
class LatencyProfile:
    target: str
    backend: str
    graphs: Mapping[str, Mapping[str, tuple[float, ...]]]  # graph -> precision -> samples in us
    threads: int = 1
    host: str = field(default_factory=platform.node)
    fingerprint: Mapping[str, str] = field(default_factory=dict)   # host_fingerprint() where it was measured

    def has(self, graph: str, precision: str) -> bool:
        """Does the profile hold samples of `graph` at `precision`?"""
        return bool(self.graphs.get(graph, {}).get(precision))

    def samples_s(self, graph: str, precision: str) -> tuple[float, ...]:
        try:
            return tuple(v / 1e6 for v in self.graphs[graph][precision])
        except KeyError:
            have = {g: sorted(p) for g, p in self.graphs.items()}
            raise BundleError(f"profile {self.target!r} has no {precision} samples for graph {graph!r} (it has {have}); "
                              f"measure it with: python -m edge_anytime.deploy --target {self.target} --profile ...") from None

    def merged_into(self, older: "LatencyProfile | None") -> "LatencyProfile":
        """This profile plus the precisions of `older` that it did not measure (same target, backend, threads)."""
        if older is None or (older.target, older.backend, older.threads) != (self.target, self.backend, self.threads):
            return self
        graphs = {g: dict(per) for g, per in older.graphs.items()}
        for graph, per_precision in self.graphs.items():
            graphs.setdefault(graph, {}).update(per_precision)
        return LatencyProfile(self.target, self.backend, graphs, self.threads, self.host, self.fingerprint)

    def to_json(self) -> dict:
        return {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "target": self.target, "backend": self.backend,
                "threads": self.threads, "host": self.host, "fingerprint": dict(self.fingerprint),
                "graphs": {g: {p: [round(v, 3) for v in s] for p, s in per.items()} for g, per in self.graphs.items()}}

    def save(self, bundle_root: str | os.PathLike) -> Path:
        path = Path(bundle_root) / "profiles" / f"{self.target}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json()) + "\n")
        os.replace(tmp, path)
        return path


def load_profile(path: str | os.PathLike, program=None) -> LatencyProfile:
    """Read and validate a profile file; with `program`, check that it names known graphs."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"latency profile {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT or data.get("version") != PROFILE_VERSION:
        raise BundleError(f"latency profile {path}: expected format {PROFILE_FORMAT!r} version {PROFILE_VERSION}")
    graphs = {}
    for graph, per_precision in (data.get("graphs") or {}).items():
        if program is not None and graph not in program.graphs:
            raise BundleError(f"latency profile {path} names unknown graph {graph!r}; graphs: {sorted(program.graphs)}")
        graphs[graph] = {}
        for precision, samples in per_precision.items():
            if not isinstance(samples, list) or not samples or not all(
                    isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in samples):
                raise BundleError(f"latency profile {path}: {graph}.{precision} must be a non-empty list of "
                                  f"finite, non-negative microsecond samples; re-measure it with python -m "
                                  f"edge_anytime.profiling")
            graphs[graph][precision] = tuple(float(v) for v in samples)
    return LatencyProfile(target=str(data.get("target", path.stem)), backend=str(data.get("backend", "")),
                          graphs=graphs, threads=int(data.get("threads", 1)), host=str(data.get("host", "")),
                          fingerprint=_fingerprint(data.get("fingerprint"), path))


def _fingerprint(value, path) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BundleError(f"latency profile {path}: fingerprint must be an object of strings")
    return dict(value)


def host_mismatch(profile: LatencyProfile, backend: str, threads: int, host: Mapping[str, str] | None = None) -> str:
    """'' when `profile` was measured on a host like this one with this backend and thread count; else what
    differs, in words."""
    if not profile.fingerprint:
        return "it records no host fingerprint; re-measure it with python -m edge_anytime.profiling"
    host = host_fingerprint() if host is None else host
    differences = [f"{key} {profile.fingerprint.get(key, '')!r} here {host.get(key, '')!r}" for key in MATCH_KEYS
                   if profile.fingerprint.get(key, "") != host.get(key, "")]
    if backend and profile.backend and backend != profile.backend:
        differences.append(f"backend {profile.backend!r} here {backend!r}")
    if threads != profile.threads:
        differences.append(f"threads {profile.threads} here {threads}")
    return ", ".join(differences)


def matching_profile(profiles: Iterable[LatencyProfile], backend: str, threads: int) -> LatencyProfile | None:
    """The first profile measured on a host like this one (see `host_mismatch`), or None."""
    host = host_fingerprint()
    for profile in profiles:
        if not host_mismatch(profile, backend, threads, host):
            return profile
    return None


def choose_profile(bundle, target: str | None, backend: str, threads: int) -> LatencyProfile | None:
    """The bundle profile that seeds a controller's estimates (ControllerOptions.profile_target): None never;
    'auto' the profile measured on a host like this one, if any; a target name that profile, with a warning
    when its host differs (BundleError naming the fix when the bundle has none)."""
    if target is None:
        return None
    if target == "auto":
        return matching_profile(bundle.profiles.values(), backend, threads)
    if target not in bundle.profiles:
        raise BundleError(f"bundle {bundle.root} has no latency profile for target {target!r} "
                          f"(it has {sorted(bundle.profiles)}); measure one with: "
                          f"python -m edge_anytime.profiling --bundle {bundle.root} --target {target}")
    profile = bundle.profiles[target]
    mismatch = host_mismatch(profile, backend, threads)
    if mismatch:
        import warnings

        warnings.warn(f"latency profile {target!r} was recorded on another host ({mismatch}); its estimates seed "
                      f"the deadline monitor until measurements on this host replace them", stacklevel=3)
    return profile
