"""The onnxruntime backend: runs the ONNX file of each graph (kept by the exporter for parity checks).

`files` maps graph name -> .onnx path; ONNX graphs use the program's port names
and layout directly. onnxruntime is imported lazily (install the [convert] extra).

>>> backend = OnnxRuntimeBackend(files={"stem": "work/stem.onnx"})   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import BackendError, require
from .base import GraphLoadSpec


class OnnxRuntimeRunner:
    def __init__(self, spec: GraphLoadSpec, path: Path, ort, num_threads: int) -> None:
        self.graph = spec.signature.name
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in self._session.get_outputs()]
        missing = [p.name for p in spec.signature.outputs if p.name not in names]
        if missing:
            raise BackendError(f"graph {self.graph!r}: {path} lacks outputs {missing} (unknown tensor)")
        self._outputs = [p.name for p in spec.signature.outputs]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._outputs, {k: np.ascontiguousarray(v) for k, v in inputs.items()})
        return dict(zip(self._outputs, values))

    def close(self) -> None:
        self._session = None


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, files: Mapping[str, str | Path], num_threads: int = 1) -> None:
        self._ort = require("onnxruntime", "convert")
        self.files = {k: Path(v) for k, v in files.items()}
        self.num_threads = num_threads

    def load_graph(self, spec: GraphLoadSpec) -> OnnxRuntimeRunner:
        path = self.files.get(spec.signature.name)
        if path is None or not path.is_file():
            raise BackendError(f"onnxruntime backend: no ONNX file for graph {spec.signature.name!r}")
        return OnnxRuntimeRunner(spec, path, self._ort, self.num_threads)
