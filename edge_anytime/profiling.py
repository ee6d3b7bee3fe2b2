"""Measure every graph's latency distribution on this machine and write it as a bundle profile.

The stage program runs end to end in plan order on real data (the bundle's
reference inputs when it has them), so each graph is timed with the caches
and inputs it sees when serving; a graph run by several steps gets a sample
per step. After `warmup` full passes, passes continue until every graph has
`samples` latencies. The result is a `LatencyProfile` saved as
`profiles/<target>.json`: the controller seeds its deadline monitor from it
(`ControllerOptions(profile_target=...)`) and the simulator draws from it.

>>> profile = profile_bundle("bundle", target="jetson-orin-nano", warmup=20, samples=500)   # doctest: +SKIP
>>> profile.save("bundle")                                                                  # doctest: +SKIP
PosixPath('bundle/profiles/jetson-orin-nano.json')

Command line (on the device; numpy + LiteRT only):
    python -m edge_anytime.profiling --bundle bundle --target jetson-orin-nano --threads 1 --cpus 4,5
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from pathlib import Path

import numpy as np

from .bundle import Bundle
from .errors import BundleError, EdgeAnytimeError
from .profile import MATCH_KEYS, LatencyProfile, host_fingerprint, load_profile
from .selftest import (Precision, add_runtime_arguments, close_runners, load_runners, reference_inputs,
                       resolve_precisions, run_program)


@dataclass(frozen=True)
class ProfileOptions:
    """How much to measure: full warm-up passes, then samples per graph (and a pass cap)."""

    warmup: int = 20
    samples: int = 500
    max_passes: int = 100_000

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.samples < 1:
            raise ValueError(f"warmup must be >= 0 and samples >= 1, got {self.warmup}, {self.samples}")


def _inputs(bundle: Bundle) -> list[np.ndarray]:
    try:
        return reference_inputs(bundle)[0]
    except BundleError:
        spec = bundle.model.input
        rng = np.random.default_rng(0)
        return [rng.normal(size=spec.shape).astype(np.float32) for _ in range(8)]


def pin_cpus(cpus) -> str:
    """Pin this process to `cpus` (Linux); returns what happened, never raises."""
    if not cpus:
        return "cpus: not pinned"
    try:
        os.sched_setaffinity(0, set(cpus))
        return f"cpus: pinned to {sorted(cpus)}"
    except (AttributeError, OSError, ValueError) as exc:
        return f"cpus: pinning to {sorted(cpus)} refused ({exc}); measured unpinned"


def profile_bundle(bundle, target: str, backend: str = "litert", threads: int = 1,
                   precision: Precision = "auto", options: ProfileOptions | None = None) -> LatencyProfile:
    """Warm up, then sample the latency (microseconds) of every graph; see the module docstring."""
    options = options or ProfileOptions()
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    program = bundle.program
    precisions = resolve_precisions(bundle, precision)
    inputs = _inputs(bundle)
    samples: dict[str, list[float]] = {graph: [] for graph in program.graphs}
    unused = [g for g in program.graphs if not program.steps_for_graph(g)]
    if unused:
        raise BundleError(f"graphs {unused} are run by no step; they cannot be profiled")

    def record(step, seconds: float) -> None:
        if len(samples[step.graph]) < options.samples:
            samples[step.graph].append(seconds * 1e6)

    runners = load_runners(bundle, precisions, backend, threads)
    try:
        for i in range(options.warmup):
            run_program(program, runners, inputs[i % len(inputs)])
        passes = 0
        while min(len(s) for s in samples.values()) < options.samples and passes < options.max_passes:
            run_program(program, runners, inputs[passes % len(inputs)], timer=record)
            passes += 1
    finally:
        close_runners(runners)
    return LatencyProfile(target=target, backend=backend, threads=threads, fingerprint=host_fingerprint(),
                          graphs={g: {precisions[g]: tuple(s)} for g, s in samples.items()})


def store_profile(profile: LatencyProfile, bundle_root) -> Path:
    """Write `profile` into the bundle; every profiling path (this module, `deploy --profile`, the package's
    profile.sh) stores the same way: precisions measured earlier for the same target on the same host (same
    fingerprint, backend and threads) are kept, anything from another host is replaced."""
    existing = Path(bundle_root) / "profiles" / f"{profile.target}.json"
    if existing.is_file():
        try:
            older = load_profile(existing)
        except BundleError:
            older = None        # a damaged old profile is replaced, not merged
        if older is not None and older.fingerprint and profile.fingerprint and all(
                older.fingerprint.get(k) == profile.fingerprint.get(k) for k in MATCH_KEYS):
            profile = profile.merged_into(older)
    return profile.save(bundle_root)


def summary(profile: LatencyProfile) -> str:
    """One line per graph: precision, samples, median, p99, max (microseconds)."""
    lines = [f"profile {profile.target!r} (backend {profile.backend}, {profile.threads} thread(s), host {profile.host}):"]
    for graph, per_precision in profile.graphs.items():
        for precision, values in per_precision.items():
            v = np.asarray(values)
            lines.append(f"  {graph:<16} {precision:<5} n={len(v):<5} median {np.median(v):9.1f} us  "
                         f"p99 {np.quantile(v, 0.99):9.1f} us  max {v.max():9.1f} us")
    return "\n".join(lines)


def parse_cpus(text: str) -> tuple[int, ...]:
    """'4,5' or '2-3' -> (4, 5) / (2, 3); '' -> ()."""
    cpus: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        try:
            cpus.extend(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise argparse.ArgumentTypeError(f"cpus {text!r}: write a list like 4,5 or a range like 2-3") from None
    return tuple(cpus)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_anytime.profiling", description=__doc__.split("\n")[0])
    add_runtime_arguments(parser)
    parser.add_argument("--target", required=True, help="target name: the profile is saved as profiles/TARGET.json")
    parser.add_argument("--warmup", type=int, default=20, help="full warm-up passes (default 20)")
    parser.add_argument("--samples", type=int, default=500, help="latency samples per graph (default 500)")
    parser.add_argument("--cpus", type=parse_cpus, default=(), help="pin to these CPUs while measuring, e.g. 4,5")
    args = parser.parse_args(argv)
    try:
        print(pin_cpus(args.cpus))
        profile = profile_bundle(args.bundle, args.target, args.backend, args.threads, args.precision,
                                 ProfileOptions(args.warmup, args.samples))
        path = store_profile(profile, args.bundle)
    except (EdgeAnytimeError, OSError, ValueError) as exc:
        print(f"profiling ERROR: {exc}", file=sys.stderr)
        return 2
    print(summary(profile))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
