"""The controller's precision fallback on the simulated clock: the fallback graphs' predictions and latencies.

On a real clock a controller also holds the int8 graphs of each exit whose
parity agreement with the primary graphs is >= 99% (`ControllerOptions.
fallback_precision="auto"`, docs/runtime.md) and plans their a-priori slices
like any other. A replay emulates that with a second prediction cache (the
stream through the fallback precision's graphs, cached like the primary one)
and the profile's samples of those graphs: both engines, the vectorised
replay and the Controller on the simulated clock, choose and run the same
fallback slices.

>>> fallback = fallback_replay(bundle, stream, cache, profile)            # doctest: +SKIP
>>> setup = ReplaySetup.create(cache.program, profile, cache.precisions, fallback=fallback)   # doctest: +SKIP
>>> drawn = fallback.drawn(setup.plan, profile, seed=0)                   # doctest: +SKIP
>>> out = replay_fast(setup, preds, budgets_s, cache.timestamps, draws, fallback=drawn)      # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from edge_anytime.bundle import Bundle
from edge_anytime.profile import LatencyProfile
from edge_anytime.runners import fallback_exits, fallback_graphs

from .cache import PredictionCache, cached_predictions
from .fast import ExitPredictions, exit_predictions
from .timing import LatencyDraws, PlanInfo, draw_latencies


@dataclass(frozen=True, eq=False)
class FallbackReplay:
    """The fallback precision of a replay: which exits it answers (with their parity agreement), the stream's
    predictions through its graphs, and (once `drawn`) their step latencies per frame."""

    precision: str
    exits: Mapping[int, float | None]
    cache: PredictionCache
    preds: ExitPredictions
    draws: LatencyDraws | None = None

    @property
    def graphs(self) -> list[str]:
        """The graphs the fallback slices run (loaded at `precision`)."""
        return fallback_graphs(self.cache.program, self.exits)

    def drawn(self, plan: PlanInfo, profile: LatencyProfile, seed: int = 0, scale: float = 1.0) -> "FallbackReplay":
        """This fallback with step latencies drawn from `profile`'s samples at its precision (a stream of
        random numbers of its own, so the primary graphs' draws stay what they are without a fallback)."""
        precisions = dict.fromkeys(self.cache.program.graphs, self.precision)
        return replace(self, draws=draw_latencies(plan, profile, precisions, len(self.cache), seed, scale,
                                                  stream=f"fallback:{self.precision}"))


def fallback_replay(bundle, stream, cache: PredictionCache, profile: LatencyProfile, precision: str | None = "auto",
                    *, frames: int | None = None, num_threads: int = 1, cache_dir=None, show_progress: bool = False,
                    coarse_below: float | None = None, rebuild: bool = False) -> tuple[FallbackReplay | None, str]:
    """The fallback a controller loading `bundle` (a path or a Bundle) on a real clock would hold (`precision` as
    `ControllerOptions.fallback_precision`: 'auto', an explicit precision, or None), for the replay of `cache`
    (the primary graphs' predictions of `stream`); (None, why) when there is none or `profile` has no samples of
    its graphs at that precision, else (the fallback, ''). `rebuild`: recompute its cache (a recorded serial
    stream, `--rebuild-cache`), as the primary one is."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    precision, exits = fallback_exits(bundle, precision, cache.precisions, simulated=False)   # a real clock's rule
    if not exits:
        return None, "no fallback precision (none asked, or no exit's graphs agree with the primary ones on >= 99%)"
    missing = [g for g in fallback_graphs(bundle.program, exits) if not profile.has(g, precision)]
    if missing:
        return None, (f"the latency profile {profile.target!r} has no {precision} samples of {missing}: the replay "
                      f"runs without the precision fallback (measure them: python -m edge_anytime.profiling)")
    fallback_cache = cached_predictions(bundle, stream, frames=frames, precision=precision, num_threads=num_threads,
                                        cache_dir=cache_dir, show_progress=show_progress, rebuild=rebuild)
    if len(fallback_cache) != len(cache):
        raise ValueError(f"the stream gave {len(fallback_cache)} frames through the {precision} graphs and "
                         f"{len(cache)} through the primary ones; rebuild both caches (--rebuild-cache)")
    return FallbackReplay(precision, exits, fallback_cache, exit_predictions(fallback_cache, coarse_below)), ""
