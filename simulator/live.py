"""Live replays through the real Controller: on the simulated clock (FakeBackend scripted from the
prediction cache) or on the wall clock (the bundle's LiteRT graphs).

>>> out = replay_live_sim(cache, setup, profile, budgets_s, draws)              # doctest: +SKIP
>>> out = replay_real("deploy/bundles/gtsrb-resann", stream, budgets_s)         # doctest: +SKIP

Simulated clock: each frame starts at its stream timestamp (the clock jumps
there, so frames are independent, as in the vectorised replay); the fake
backend's step latencies are the drawn ones (the j-th call of graph g in frame
i takes `draws.per_graph[g][i, j]`), and its outputs are the cached logits of
the exits the step produces. Steps that failed while the cache was built
raise again, so the controller degrades the frame; frames the preprocessor
rejected are fed as NaN tensors and rejected again. Same Controller, same
plan code as on the device.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Iterable, Mapping

import numpy as np

from edge_anytime.backends.base import GraphLoadSpec
from edge_anytime.backends.fake import FakeBackend
from edge_anytime.clock import SimulatedClock
from edge_anytime.controller import Controller
from edge_anytime.errors import BackendError
from edge_anytime.options import ControllerOptions
from edge_anytime.profile import LatencyProfile
from edge_anytime.results import FrameResult

from .fast import ReplaySetup
from .metrics import Outcomes, outcomes_from_results
from .progress import progress
from .sources import SensorFrame
from .timing import LatencyDraws


class ReplayClock(SimulatedClock):
    """A SimulatedClock the replay may move to any frame's start time (also backwards)."""

    def jump_to(self, t: float) -> None:
        with self._lock:
            self._now = float(t)


class CachedGraphs:
    """Scripts a FakeBackend from a prediction cache; see the module docstring."""

    def __init__(self, cache, draws: LatencyDraws) -> None:
        program = cache.program
        self.cache = cache
        self.draws = draws
        self.program = program
        self._step_of = {(step.graph, tuple(sorted(step.inputs.items()))): index
                         for index, step in enumerate(program.steps)}
        self._exit_of = {}
        for exit_ in program.exits:
            self._exit_of[exit_.tensor] = (exit_.index, cache.logits)
            if exit_.coarse_tensor is not None:
                self._exit_of[exit_.coarse_tensor] = (exit_.index, cache.coarse_logits)
        self.frame = 0
        self._calls: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._keep: list[np.ndarray] = []

    def begin(self, frame: int, input_array: np.ndarray) -> None:
        """Start frame `frame`, whose input tensor object is `input_array`."""
        self.frame = frame
        self._calls = {g: 0 for g in self.program.graphs}
        self._keep = [input_array]
        self._names = {id(input_array): self.program.input_tensor}

    def _latency(self, graph: str):
        per_graph = self.draws.per_graph[graph]

        def next_latency() -> float:
            call = self._calls[graph]
            self._calls[graph] = call + 1
            return float(per_graph[self.frame, call])

        return next_latency

    def outputs(self, graph: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            bound = tuple(sorted((port, self._names[id(value)]) for port, value in inputs.items()))
            index = self._step_of[(graph, bound)]
        except KeyError:
            raise BackendError(f"cached replay: graph {graph!r} called with inputs the program never binds") from None
        if self.cache.bad_steps[self.frame, index]:
            reason = str(self.cache.errors[self.frame]) or "it failed while the cache was built"
            raise BackendError(f"frame {self.frame}: step {self.program.steps[index].name!r}: {reason}")
        step = self.program.steps[index]
        signature = self.program.graphs[graph]
        out = {}
        for port, tensor in step.outputs.items():
            spec = signature.output(port)
            if tensor in self._exit_of:
                k, source = self._exit_of[tensor]
                value = source[self.frame, k].reshape(spec.shape).astype(spec.dtype)
            else:
                value = np.zeros(spec.shape, dtype=spec.dtype)
            self._names[id(value)] = tensor
            self._keep.append(value)
            out[port] = value
        return out

    def backend(self, clock) -> FakeBackend:
        return FakeBackend(latency={g: self._latency(g) for g in self.program.graphs}, outputs=self.outputs,
                           clock=clock)


def replay_live_sim(cache, setup: ReplaySetup, profile: LatencyProfile, budgets_s: np.ndarray,
                    draws: LatencyDraws, starts_s: np.ndarray | None = None, mode: str | None = None,
                    show_progress: bool = False, dispatch_s: float = 0.0,
                    fallback=None) -> tuple[Outcomes, list[FrameResult]]:
    """Replay every cached frame through a Controller on the simulated clock.

    Frame i is captured at `starts_s[i]` (default: its timestamp) with deadline `starts_s[i] + budgets_s[i]`
    and handed to the controller `dispatch_s` later. Outcomes' start_s are the capture times. `fallback` (a
    drawn `FallbackReplay`): the controller also holds the fallback precision's graphs, scripted from its cache.
    """
    starts = cache.timestamps if starts_s is None else starts_s
    clock = ReplayClock()
    graphs = CachedGraphs(cache, draws)
    backend = graphs.backend(clock)
    program = cache.program
    runners = {name: backend.load_graph(GraphLoadSpec(sig)) for name, sig in program.graphs.items()}
    scripted = [graphs]
    extra = {}
    if fallback is not None:
        fallback_graphs = CachedGraphs(fallback.cache, fallback.draws)
        fallback_backend = fallback_graphs.backend(clock)
        scripted.append(fallback_graphs)
        extra = {"fallback_agreements": dict(fallback.exits), "fallback_precision": fallback.precision,
                 "fallback_runners": {g: fallback_backend.load_graph(GraphLoadSpec(program.graphs[g],
                                                                                   fallback.precision))
                                      for g in fallback.graphs}}
    options = setup.options if mode is None else _with_mode(setup.options, mode)
    shape = cache.model.input.shape
    results = []
    with Controller(program, runners, cache.model, clock=clock, options=options, precisions=cache.precisions,
                    profile=profile, **extra) as ctrl:
        for i in progress(range(len(budgets_s)), desc="live replay (simulated clock)", enabled=show_progress):
            tensor = np.zeros(shape, np.float32) if cache.valid[i] else np.full(shape, np.nan, np.float32)
            for script in scripted:
                script.begin(i, tensor)
            start = float(starts[i])
            clock.jump_to(start + dispatch_s if dispatch_s else start)
            results.append(ctrl.run(tensor, deadline_s=start + float(budgets_s[i]), frame_id=i))
    out = outcomes_from_results(results)
    return replace(out, start_s=np.asarray(starts[:len(results)], np.float64)), results


def _with_mode(options: ControllerOptions, mode: str) -> ControllerOptions:
    return replace(options, mode=mode)


def replay_real(bundle, frames: Iterable[SensorFrame], budgets_s: np.ndarray, options: ControllerOptions | None = None,
                pace: bool = False, show_progress: bool = False, controller: Controller | None = None,
                desc: str = "real clock") -> tuple[Outcomes, list[FrameResult]]:
    """Run frames through `Controller.from_bundle(bundle)` (LiteRT) on the wall clock.

    `pace=True` waits for each frame's timestamp, like a camera; otherwise frames run back to back.
    Pass `controller` to reuse a loaded one (its clock must be the wall clock).
    """
    own = controller is None
    ctrl = Controller.from_bundle(bundle, options=options) if own else controller
    results = []
    try:
        t0 = time.perf_counter()
        for i, item in enumerate(progress(frames, total=len(budgets_s), desc=desc, enabled=show_progress)):
            if i >= len(budgets_s):
                break
            if pace:
                ctrl.clock.sleep_until(t0 + item.timestamp_s)
            results.append(ctrl.run(item.frame, float(budgets_s[i]), frame_id=item.index))
    finally:
        if own:
            ctrl.close()
    return outcomes_from_results(results), results
