"""The Backend protocol and its registry.

A backend turns one graph of a bundle into a `GraphRunner`: a callable from
named input arrays to named output arrays, in the program's layout (NCHW),
whatever the file's layout or quantisation. Each runner is used from exactly
one thread (its interpreter is not shared).

Backends are registered by name, lazily, so that `import edge_anytime` never
imports an optional dependency:

>>> sorted(available_backends())
['fake', 'litert', 'onnxruntime', 'tflite_runtime', 'torch']
>>> create_backend("tpu")
Traceback (most recent call last):
...
edge_anytime.errors.BackendError: unknown backend 'tpu'; available: fake, litert, onnxruntime, tflite_runtime, torch
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Protocol

import numpy as np

from ..errors import BackendError
from ..manifest import GraphFile
from ..program import GraphSignature


@dataclass(frozen=True)
class GraphLoadSpec:
    """Everything a backend needs to load one graph."""

    signature: GraphSignature
    precision: str = "fp32"
    file: GraphFile | None = None
    path: Path | None = None  # absolute path of file.path, when the graph comes from a bundle


class GraphRunner(Protocol):
    graph: str

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def load_graph(self, spec: GraphLoadSpec) -> GraphRunner: ...


_REGISTRY: dict[str, str | Callable[..., Backend]] = {
    "litert": "edge_anytime.backends.litert:LiteRTBackend",
    "tflite_runtime": "edge_anytime.backends.litert:TFLiteRuntimeBackend",
    "onnxruntime": "edge_anytime.backends.onnx_runtime:OnnxRuntimeBackend",
    "torch": "edge_anytime.backends.torch_ref:TorchBackend",
    "fake": "edge_anytime.backends.fake:FakeBackend",
}


def register_backend(name: str, factory: str | Callable[..., Backend]) -> None:
    """Register a backend factory, or a 'module:attribute' string imported on first use."""
    _REGISTRY[name] = factory


def available_backends() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def create_backend(name: str, **options) -> Backend:
    """Instantiate a registered backend by name with its options."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; available: {', '.join(available_backends())}") from None
    if isinstance(factory, str):
        module_name, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attribute)
    return factory(**options)


def check_outputs(graph: GraphSignature, outputs: Mapping[str, np.ndarray]) -> None:
    """Raise BackendError if a runner returned the wrong ports or shapes."""
    for port in graph.outputs:
        value = outputs.get(port.name)
        if value is None:
            raise BackendError(f"graph {graph.name!r} returned no output {port.name!r}")
        if tuple(value.shape) != port.shape:
            raise BackendError(f"graph {graph.name!r} output {port.name!r} has shape {tuple(value.shape)}, expected {port.shape}")
