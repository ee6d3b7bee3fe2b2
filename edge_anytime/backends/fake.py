"""A fake backend with scripted latencies, outputs and faults, shipped for users and the simulator.

On a `SimulatedClock` a step's latency advances the clock, so controller tests
and simulations are deterministic and never sleep; on a real clock it sleeps.

>>> from edge_anytime.clock import SimulatedClock
>>> from edge_anytime.program import GraphSignature, Port
>>> clock = SimulatedClock()
>>> backend = FakeBackend(clock=clock, latency={"head": 0.004})
>>> head = GraphSignature("head", (Port("h", (1, 8)),), (Port("logits", (1, 3)),))
>>> runner = backend.load_graph(GraphLoadSpec(head))
>>> runner.run({"h": np.zeros((1, 8), np.float32)})["logits"].shape, clock.now()
((1, 3), 0.004)
"""

from __future__ import annotations

import itertools
import time
from typing import Callable, Iterable, Mapping, Union

import numpy as np

from ..errors import BackendError
from .base import GraphLoadSpec

LatencyScript = Union[float, Iterable[float], Callable[[], float]]
OutputScript = Callable[[str, Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
FaultScript = Callable[[int], Union[BaseException, None]]


def _latency_source(script: LatencyScript) -> Callable[[], float]:
    if callable(script):
        return script
    if isinstance(script, (int, float)):
        value = float(script)
        return lambda: value
    iterator = itertools.cycle(list(script))
    return lambda: next(iterator)


class FakeRunner:
    def __init__(self, spec: GraphLoadSpec, backend: "FakeBackend") -> None:
        self.graph = spec.signature.name
        self._signature = spec.signature
        self._backend = backend
        self._latency = _latency_source(backend.latency.get(self.graph, backend.default_latency))
        self.calls = 0

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        call = self.calls
        self.calls += 1
        latency = float(self._latency())
        clock = self._backend.clock
        if clock is not None and getattr(clock, "simulated", False):
            clock.advance(latency)
        elif latency > 0:
            time.sleep(latency)
        fault = self._backend.faults.get(self.graph)
        if fault is not None:
            error = fault(call)
            if error is not None:
                raise error
        if self._backend.outputs is not None:
            produced = dict(self._backend.outputs(self.graph, inputs))
        else:
            produced = {}
        for port in self._signature.outputs:
            if port.name not in produced:
                produced[port.name] = np.zeros(port.shape, dtype=port.dtype)
        return produced

    def close(self) -> None:
        pass


class FakeBackend:
    """Scripted backend.

    latency: graph -> seconds (a number, a sequence cycled through, or a callable).
    outputs: callable(graph, inputs) -> {port: array}; ports it leaves out are zeros.
    faults:  graph -> callable(call_number) returning an exception to raise, or None.
    clock:   a SimulatedClock to advance (else the backend sleeps for real).
    """

    name = "fake"

    def __init__(self, latency: Mapping[str, LatencyScript] | None = None, default_latency: LatencyScript = 0.0,
                 outputs: OutputScript | None = None, faults: Mapping[str, FaultScript] | None = None,
                 clock=None) -> None:
        self.latency = dict(latency or {})
        self.default_latency = default_latency
        self.outputs = outputs
        self.faults = dict(faults or {})
        self.clock = clock
        self.runners: dict[str, FakeRunner] = {}

    def load_graph(self, spec: GraphLoadSpec) -> FakeRunner:
        if spec.path is not None and not spec.path.is_file():
            raise BackendError(f"graph {spec.signature.name!r}: file {spec.path} does not exist")
        runner = FakeRunner(spec, self)
        self.runners[runner.graph] = runner
        return runner
