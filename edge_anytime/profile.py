"""Per-target latency profiles stored in a bundle (`profiles/<target>.json`).

A profile holds latency samples (microseconds) of every graph at each
precision, measured on one target after warm-up. The deadline monitor seeds
its estimators from it, and the simulator draws step latencies from it.

>>> p = LatencyProfile("x86-64", "litert", {"stem": {"fp32": (100.0, 120.0)}})
>>> [round(v, 6) for v in p.samples_s("stem", "fp32")]
[0.0001, 0.00012]
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .errors import BundleError

PROFILE_FORMAT = "edge-anytime-profile"
PROFILE_VERSION = 1


@dataclass(frozen=True)
class LatencyProfile:
    target: str
    backend: str
    graphs: Mapping[str, Mapping[str, tuple[float, ...]]]  # graph -> precision -> samples in us
    threads: int = 1
    host: str = field(default_factory=platform.node)

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
        return LatencyProfile(self.target, self.backend, graphs, self.threads, self.host)

    def to_json(self) -> dict:
        return {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "target": self.target, "backend": self.backend,
                "threads": self.threads, "host": self.host,
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
            if not isinstance(samples, list) or not samples or not all(isinstance(v, (int, float)) and v >= 0 for v in samples):
                raise BundleError(f"latency profile {path}: {graph}.{precision} must be a non-empty list of "
                                  f"non-negative microsecond samples")
            graphs[graph][precision] = tuple(float(v) for v in samples)
    return LatencyProfile(target=str(data.get("target", path.stem)), backend=str(data.get("backend", "")),
                          graphs=graphs, threads=int(data.get("threads", 1)), host=str(data.get("host", "")))
