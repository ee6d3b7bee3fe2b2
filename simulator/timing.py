"""Step latencies for the simulated clock: the plan's structure, the profile, per-frame draws.

>>> plan = PlanInfo.from_program(program)                                   # doctest: +SKIP
>>> draws = draw_latencies(plan, profile, {"stem": "fp32", ...}, n=1000, seed=0)   # doctest: +SKIP
>>> draws.anytime().shape                                                   # doctest: +SKIP
(1000, 6)

Draws are per graph *call*: the j-th call of graph g while frame i runs takes
`draws.per_graph[g][i, j]` seconds, a sample picked at random from g's profile.
The live replay (FakeBackend) and the vectorised replay read the same numbers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from edge_anytime.errors import BundleError
from edge_anytime.profile import LatencyProfile, load_profile
from edge_anytime.program import Program, exit_values


@dataclass(frozen=True)
class PlanInfo:
    """What the controller will run, as index tuples (anytime segments, a-priori slices, graph calls)."""

    step_graphs: tuple[str, ...]
    segments: tuple[tuple[int, tuple[int, ...]], ...]   # (exit index, step indices) in plan order
    slices: tuple[tuple[int, ...], ...]                 # a-priori plan of each exit
    ranks: tuple[float, ...]                            # what each exit is worth (program.exit_values)
    apriori_order: tuple[int, ...]                      # exits by decreasing rank
    calls: Mapping[str, int]                            # calls of each graph in the anytime plan
    anytime_call: tuple[int, ...]                       # step -> which call of its graph it is (anytime)
    slice_call: tuple[tuple[int, ...], ...]             # per exit: slice position -> call of its graph

    @classmethod
    def from_program(cls, program: Program) -> "PlanInfo":
        graphs = tuple(step.graph for step in program.steps)
        segments = tuple((s.exit_index, s.steps) for s in program.anytime_segments())
        slices = tuple(program.apriori_plan(e.index) for e in program.exits)
        ranks = tuple(exit_values(program))

        def call_numbers(steps):
            seen: dict[str, int] = {}
            out = []
            for s in steps:
                out.append(seen.get(graphs[s], 0))
                seen[graphs[s]] = out[-1] + 1
            return tuple(out)

        calls = {g: graphs.count(g) for g in program.graphs}
        return cls(graphs, segments, slices, ranks, tuple(sorted(range(len(ranks)), key=lambda i: -ranks[i])),
                   calls, call_numbers(range(len(graphs))), tuple(call_numbers(sl) for sl in slices))


@dataclass(frozen=True)
class LatencyDraws:
    """Per-frame step latencies in seconds; see the module docstring."""

    plan: PlanInfo
    per_graph: Mapping[str, np.ndarray]   # graph -> (frames, calls) seconds
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(next(iter(self.per_graph.values())))

    def anytime(self) -> np.ndarray:
        """(frames, steps): the latency of every step of the anytime plan (read-only)."""
        if "anytime" not in self._memo:
            plan = self.plan
            self._memo["anytime"] = _frozen(np.stack([self.per_graph[g][:, c] for g, c in
                                                      zip(plan.step_graphs, plan.anytime_call)], axis=1))
        return self._memo["anytime"]

    def slice(self, exit_index: int) -> np.ndarray:
        """(frames, len(slice)): the latency of every step of exit `exit_index`'s a-priori plan (read-only)."""
        if exit_index not in self._memo:
            plan = self.plan
            steps = plan.slices[exit_index]
            self._memo[exit_index] = _frozen(np.stack([self.per_graph[plan.step_graphs[s]][:, c]
                                                       for s, c in zip(steps, plan.slice_call[exit_index])], axis=1))
        return self._memo[exit_index]


    def cumulative(self, exit_index: int | None = None) -> np.ndarray:
        """Running sums of `anytime()` (exit_index None) or of `slice(exit_index)`, along the steps."""
        key = ("cumulative", exit_index)
        if key not in self._memo:
            steps = self.anytime() if exit_index is None else self.slice(exit_index)
            self._memo[key] = _frozen(np.cumsum(steps, axis=1))
        return self._memo[key]


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _seed(seed: int, text: str) -> list[int]:
    return [int(seed), int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")]


def draw_latencies(plan: PlanInfo, profile: LatencyProfile, precisions: Mapping[str, str], n: int,
                   seed: int = 0, scale: float = 1.0, stream: str = "latency") -> LatencyDraws:
    """Draw every graph call of `n` frames from the profile's samples (with replacement), times `scale`;
    `stream` names the random numbers' stream (the fallback precision's graphs draw from one of their own)."""
    rng = np.random.default_rng(_seed(seed, stream))
    per_graph = {}
    for graph in sorted(plan.calls):
        samples = np.asarray(profile.samples_s(graph, precisions[graph]), np.float64)
        picks = rng.integers(0, len(samples), size=(n, max(1, plan.calls[graph])))
        per_graph[graph] = samples[picks] * scale
    return LatencyDraws(plan, per_graph)


def resolve_profile(profiles: Mapping[str, LatencyProfile], target: str, path: str | None = None,
                    program: Program | None = None) -> tuple[LatencyProfile, str]:
    """The profile to draw from and where it came from: `path` if given, else the bundle's for `target`."""
    if path is not None:
        return load_profile(path, program), f"file:{path}"
    if target not in profiles:
        raise BundleError(f"the bundle has no latency profile for target {target!r} (it has {sorted(profiles)}). "
                          f"Measure one on the target with: python -m edge_anytime.deploy --target {target} --profile; "
                          f"or pass --profile FILE, or --measure-profile to measure this host now")
    return profiles[target], f"bundle:{target}"


def scaled_profile(profile: LatencyProfile, factor: float) -> LatencyProfile:
    """Every sample times `factor`: a target `factor` times slower (or faster) than the profiled one."""
    if not factor > 0:
        raise ValueError(f"the slowdown factor must be > 0, got {factor}")
    graphs = {g: {p: tuple(v * factor for v in s) for p, s in per.items()} for g, per in profile.graphs.items()}
    return LatencyProfile(f"{profile.target}x{factor:g}", profile.backend, graphs, profile.threads, profile.host,
                          profile.fingerprint)


def profile_summary(profile: LatencyProfile, precisions: Mapping[str, str]) -> dict:
    """JSON-ready medians and p99 (ms) per graph."""
    out = {}
    for graph, precision in precisions.items():
        samples = np.asarray(profile.samples_s(graph, precision)) * 1e3
        out[graph] = {"precision": precision, "samples": int(samples.size), "median_ms": float(np.median(samples)),
                      "p99_ms": float(np.percentile(samples, 99))}
    return out
