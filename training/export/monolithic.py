"""The unsplit network up to one exit as a single graph (the baseline the staged plan is measured against).

`MonolithicModule` runs the a-priori plan of one exit (only the steps it depends on) inside one
torch module, so it exports to one ONNX graph and one .tflite file with the same weights as the
stage graphs. `convert_monolithic` converts it with the same pipeline (cache, checked port mapping).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from edge_anytime.manifest import GraphFile
from edge_anytime.program import GraphSignature, Port

from .cache import ConversionCache
from .convert import convert_graph, kept_nchw_inputs, tf_layout
from .onnx_export import export_onnx
from .options import ConversionOptions
from .ports import resolve_ports


class MonolithicModule(nn.Module):
    """image -> logits of exit `exit_index`, running only the steps of its a-priori plan."""

    def __init__(self, staged, exit_index: int) -> None:
        super().__init__()
        program = staged.program
        self.program = program
        self.plan = program.apriori_plan(exit_index)
        self.exit_tensor = program.exits[exit_index].tensor
        self.graphs = nn.ModuleDict({g: staged.graph_modules[g] for g in {program.steps[i].graph for i in self.plan}})

    def forward(self, image):
        program = self.program
        env = {program.input_tensor: image}
        for index in self.plan:
            step = program.steps[index]
            graph = program.graphs[step.graph]
            result = self.graphs[step.graph](*[env[step.inputs[p.name]] for p in graph.inputs])
            if not isinstance(result, (tuple, list)):
                result = (result,)
            for port, value in zip(graph.outputs, result):
                env[step.outputs[port.name]] = value
        return env[self.exit_tensor]


@dataclass(frozen=True)
class MonolithicGraph:
    signature: GraphSignature
    path: Path  # .tflite
    file: GraphFile
    onnx_path: Path
    cached: bool


def convert_monolithic(staged, exit_index: int, input_shape: tuple[int, ...], work_dir: Path,
                       cache: ConversionCache, options: ConversionOptions = ConversionOptions(),
                       probe: np.ndarray | None = None, precision: str = "fp32",
                       calib_images: np.ndarray | None = None) -> MonolithicGraph:
    """Export and convert the unsplit network to exit `exit_index` at `precision`, with a checked port
    mapping. int8 needs `calib_images` (N, C, H, W): preprocessed real training images."""
    import onnxruntime as ort
    import torch

    module = MonolithicModule(staged, exit_index).eval()
    with torch.no_grad():
        logits = module(torch.zeros(input_shape))
    signature = GraphSignature("monolithic", (Port("image", tuple(input_shape)),), (Port("logits", tuple(logits.shape)),))
    onnx_graph = export_onnx(signature, module, work_dir / "onnx" / "monolithic.onnx", options)
    kept = kept_nchw_inputs(signature, ("image",), options)
    calibration = None
    if precision == "int8":
        if calib_images is None:
            raise ValueError("an int8 monolithic graph needs calib_images (preprocessed real training images)")
        calibration = {"image": tf_layout(calib_images, "image" in kept)}
    converted = convert_graph(onnx_graph, signature, (precision,), kept, calibration, options, cache, work_dir)
    probe = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32) if probe is None else probe
    session = ort.InferenceSession(str(onnx_graph.path), providers=["CPUExecutionProvider"])
    reference = {"logits": session.run(["logits"], {"image": probe})[0]}
    path = converted.files[precision]
    mapping = resolve_ports(path, signature, precision, kept, {"image": probe}, reference)
    from edge_anytime.bundle import sha256_file

    graph_file = GraphFile(precision, path.name, sha256_file(path), dict(mapping.inputs), dict(mapping.outputs),
                           transpose=dict(mapping.transpose))
    return MonolithicGraph(signature, path, graph_file, onnx_graph.path, converted.cached)
