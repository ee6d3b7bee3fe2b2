"""The torch reference backend: runs each graph's `torch.nn.Module` in eval mode.

Used by the exporter and tests to check converted graphs against the model
they came from. The modules come from a model's stage program
(`training.stages.StagedModel.graph_modules`); each takes its input ports as
positional arguments in port order and returns its outputs in port order.
torch is imported lazily: the runtime itself never needs it.

>>> backend = TorchBackend(modules=staged.graph_modules)          # doctest: +SKIP
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import BackendError, require
from .base import GraphLoadSpec


class TorchRunner:
    def __init__(self, spec: GraphLoadSpec, module, torch) -> None:
        self.graph = spec.signature.name
        self._signature = spec.signature
        self._module = module.eval()
        self._torch = torch

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(inputs[p.name])) for p in self._signature.inputs]
        with torch.no_grad():
            result = self._module(*args)
        if not isinstance(result, (tuple, list)):
            result = (result,)
        if len(result) != len(self._signature.outputs):
            raise BackendError(f"graph {self.graph!r}: module returned {len(result)} outputs, "
                               f"the signature has {len(self._signature.outputs)}")
        return {p.name: r.detach().cpu().numpy() for p, r in zip(self._signature.outputs, result)}

    def close(self) -> None:
        self._module = None


class TorchBackend:
    name = "torch"

    def __init__(self, modules: Mapping[str, object]) -> None:
        self._torch = require("torch", "train")
        self.modules = dict(modules)

    def load_graph(self, spec: GraphLoadSpec) -> TorchRunner:
        module = self.modules.get(spec.signature.name)
        if module is None:
            raise BackendError(f"torch backend has no module for graph {spec.signature.name!r}; "
                               f"it has {sorted(self.modules)}")
        return TorchRunner(spec, module, self._torch)
