"""LiteRT (`ai_edge_litert`) and `tflite_runtime` backends.

Each graph gets its own Interpreter with `num_threads` threads (1 by default:
several interpreters with 2 threads each contend badly on small boards; see
docs/toolchain.md). Ports are bound by the manifest's explicit mapping to the
file's signature tensor names, resolved once to tensor indices at load; the
hot path is `set_tensor` / `invoke` / `get_tensor` with no lookups.

>>> backend = LiteRTBackend(num_threads=1)                       # doctest: +SKIP
>>> runner = backend.load_graph(spec)                             # doctest: +SKIP
>>> runner.run({"x": image})["logits"].shape                      # doctest: +SKIP
(1, 43)
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import BackendError, require
from .base import GraphLoadSpec

_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8,
                 "int32": np.int32, "int64": np.int64}


class _Binding:
    """One port bound to a tensor index, with layout and quantisation handling."""

    __slots__ = ("port", "index", "perm", "inverse", "dtype", "scale", "zero_point", "quantized")

    def __init__(self, port: str, detail: dict, perm: tuple[int, ...] | None) -> None:
        self.port = port
        self.index = detail["index"]
        self.perm = perm
        self.inverse = tuple(np.argsort(perm)) if perm else None
        self.dtype = detail["dtype"]
        scale, zero_point = detail.get("quantization", (0.0, 0))
        self.quantized = self.dtype in (np.int8, np.uint8) and scale != 0.0
        self.scale = float(scale)
        self.zero_point = int(zero_point)


class LiteRTRunner:
    """Runs one .tflite graph; see the module docstring."""

    def __init__(self, spec: GraphLoadSpec, interpreter_class, num_threads: int) -> None:
        if spec.path is None or spec.file is None:
            raise BackendError(f"graph {spec.signature.name!r}: the LiteRT backend needs a bundle file")
        self.graph = spec.signature.name
        self._signature = spec.signature
        try:
            self._interpreter = interpreter_class(model_path=str(spec.path), num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"graph {self.graph!r}: LiteRT cannot load {spec.path}: {exc}") from exc
        graph_file = spec.file
        signatures = self._interpreter.get_signature_list()
        if graph_file.signature not in signatures:
            raise BackendError(f"graph {self.graph!r}: {spec.path.name} has no signature {graph_file.signature!r} "
                               f"(it has {sorted(signatures)}); re-export the bundle")
        runner = self._interpreter.get_signature_runner(graph_file.signature)
        input_details = runner.get_input_details()
        output_details = runner.get_output_details()
        self._inputs = [self._bind(port.name, port.shape, graph_file.inputs[port.name], input_details,
                                   graph_file.transpose.get(port.name), "input", spec)
                        for port in spec.signature.inputs]
        self._outputs = [self._bind(port.name, port.shape, graph_file.outputs[port.name], output_details,
                                    graph_file.transpose.get(port.name), "output", spec)
                         for port in spec.signature.outputs]
        self._invoke = self._interpreter.invoke
        self._set = self._interpreter.set_tensor
        self._get = self._interpreter.get_tensor

    def _bind(self, port: str, shape: tuple[int, ...], tensor: str, details: dict, perm, kind: str,
              spec: GraphLoadSpec) -> _Binding:
        if tensor not in details:
            raise BackendError(f"graph {self.graph!r}: {kind} port {port!r} maps to tensor {tensor!r}, which "
                               f"{spec.path.name} does not have (unknown tensor; it has {sorted(details)})")
        detail = details[tensor]
        expected = tuple(shape[a] for a in perm) if perm else tuple(shape)
        actual = tuple(int(d) for d in detail["shape"])
        if actual != expected:
            raise BackendError(f"graph {self.graph!r}: {kind} port {port!r} (tensor {tensor!r}) has shape {actual} in "
                               f"{spec.path.name}, the manifest expects {expected} (shape mismatch)")
        return _Binding(port, detail, tuple(perm) if perm else None)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for binding in self._inputs:
            value = inputs[binding.port]
            if binding.perm is not None:
                value = value.transpose(binding.perm)
            if binding.quantized:
                value = np.clip(np.round(value / binding.scale) + binding.zero_point,
                                np.iinfo(binding.dtype).min, np.iinfo(binding.dtype).max)
            self._set(binding.index, np.ascontiguousarray(value, dtype=binding.dtype))
        self._invoke()
        outputs = {}
        for binding in self._outputs:
            value = self._get(binding.index)
            if binding.quantized:
                value = (value.astype(np.float32) - binding.zero_point) * binding.scale
            if binding.inverse is not None:
                value = np.ascontiguousarray(value.transpose(binding.inverse))
            outputs[binding.port] = value
        return outputs

    def close(self) -> None:
        self._interpreter = None
        self._invoke = self._set = self._get = None


class LiteRTBackend:
    """`ai_edge_litert.interpreter.Interpreter`, the default on-device interpreter."""

    name = "litert"
    _module = ("ai_edge_litert.interpreter", "")

    def __init__(self, num_threads: int = 1) -> None:
        if num_threads < 1:
            raise BackendError(f"num_threads must be >= 1, got {num_threads}")
        self.num_threads = num_threads
        module_name, extra = self._module
        self._interpreter_class = require(module_name, extra or "base").Interpreter

    def load_graph(self, spec: GraphLoadSpec) -> LiteRTRunner:
        return LiteRTRunner(spec, self._interpreter_class, self.num_threads)


class TFLiteRuntimeBackend(LiteRTBackend):
    """`tflite_runtime.interpreter.Interpreter`, for older device images (numpy<2; install the [tflite] extra)."""

    name = "tflite_runtime"
    _module = ("tflite_runtime.interpreter", "tflite")
