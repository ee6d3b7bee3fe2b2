"""torch graph module -> ONNX file with fixed batch 1 and the program's port names.

Exporter choice (docs/export.md): the dynamo exporter (`torch.export` based, opset 18) is the
default because it is torch 2.13's maintained path; the TorchScript exporter (opset 17) is
deprecated there and kept only as `--onnx-exporter legacy`. Both give identical graphs for the
model zoo and both convert; both are deterministic (same module -> same bytes).

The saved file is *canonical*: node metadata (source stack traces, file paths) and doc strings are
stripped so the bytes, and so the conversion cache key, depend only on the computation and the
weights. The torch layer of each node is kept in memory for error messages.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from edge_anytime.program import GraphSignature

from .common import ExportError, check_port_name, sha256_bytes
from .options import ConversionOptions


@dataclass(frozen=True)
class OnnxGraph:
    """One exported graph: the canonical ONNX file, its hash, and node -> torch layer names."""

    name: str
    path: Path
    sha256: str
    layers: Mapping[str, str] = field(default_factory=dict)  # ONNX node name -> torch layer (for errors)

    def describe_node(self, node_name: str) -> str:
        layer = self.layers.get(node_name)
        return f"node {node_name!r}" + (f" (torch layer {layer})" if layer else "")


@contextlib.contextmanager
def eval_mode(*modules):
    """Every submodule of `modules` in eval mode, and afterwards each one's own previous mode back.

    `module.train(was_training)` would not do: it sets the flag of every child to the parent's. A
    graph module that is a container built for the stage program (I-ResNeXt's sub-networks hold the
    model's own layers but are not registered in the model) keeps training=True while the model's
    layers are in eval mode; restoring it that way switched the model's BatchNorm layers to
    training mode (batch statistics) and broke the torch reference of the parity check."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for m, _ in saved:
            m.training = False
        yield
    finally:
        for m, flag in saved:
            m.training = flag


@contextlib.contextmanager
def _quiet_torch_onnx():
    """torch.onnx prints progress to stdout and logs warnings: keep stdout clean for the JSON summary."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    captured = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured):
            warnings.simplefilter("ignore")
            yield captured
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_onnx(signature: GraphSignature, module, path: str | Path, options: ConversionOptions) -> OnnxGraph:
    """Export `module` (inputs/outputs in port order) to `path`; raises ExportError naming the graph."""
    import onnx
    import torch

    name = signature.name
    for port in signature.inputs + signature.outputs:
        check_port_name(port.name, f"graph {name!r}")
    input_names = [p.name for p in signature.inputs]
    output_names = [p.name for p in signature.outputs]
    if len(set(input_names + output_names)) != len(input_names) + len(output_names):
        raise ExportError(f"graph {name!r}: an input and an output port share a name ({input_names} / {output_names}); "
                          f"ONNX needs distinct names")
    args = tuple(torch.zeros(p.shape, dtype=getattr(torch, p.dtype)) for p in signature.inputs)
    try:
        with eval_mode(module), _quiet_torch_onnx(), torch.no_grad():
            if options.onnx_exporter == "dynamo":
                program = torch.onnx.export(module, args, None, input_names=input_names, output_names=output_names,
                                            dynamo=True, opset_version=options.opset, external_data=False,
                                            optimize=True, verbose=False)
                proto = program.model_proto
            else:
                buffer = io.BytesIO()
                torch.onnx.export(module, args, buffer, input_names=input_names, output_names=output_names,
                                  dynamo=False, opset_version=options.opset, do_constant_folding=True)
                proto = onnx.load_from_string(buffer.getvalue())
    except ExportError:
        raise
    except Exception as exc:  # torch raises many types here; name the graph and the way out
        message = " ".join(str(exc).split())[:1500]
        other = "legacy" if options.onnx_exporter == "dynamo" else "dynamo"
        raise ExportError(f"graph {name!r}: torch.onnx.export ({options.onnx_exporter}) failed: "
                          f"{type(exc).__name__}: {message}. The layer above is not exportable as is: rewrite it "
                          f"with supported ops, or try --onnx-exporter {other}") from exc

    proto = onnx.inliner.inline_local_functions(proto) if proto.functions else proto
    layers = _node_layers(proto)
    _check_io(proto, signature)
    _canonicalize(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"graph {name!r}: the exported ONNX model is invalid: {exc}") from exc
    data = proto.SerializeToString(deterministic=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    graph = OnnxGraph(name=name, path=path, sha256=sha256_bytes(data), layers=layers)
    check_convertible(graph, proto)
    return graph


def _node_layers(proto) -> dict[str, str]:
    layers = {}
    for node in proto.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        scope = props.get("namespace") or props.get("pkg.torch.onnx.name_scopes")
        if scope:
            layers[node.name] = scope.split(": ", 1)[-1] if ": " in scope else scope
    return layers


def _canonicalize(proto) -> None:
    """Drop everything that does not change the computation (stack traces, paths, docs)."""
    proto.doc_string = ""
    del proto.metadata_props[:]
    proto.graph.doc_string = ""
    for node in proto.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    for collection in (proto.graph.input, proto.graph.output, proto.graph.value_info, proto.graph.initializer):
        for item in collection:
            item.doc_string = ""
            del item.metadata_props[:]
    del proto.graph.value_info[:]


def _check_io(proto, signature: GraphSignature) -> None:
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    got_in = [i.name for i in inputs]
    got_out = [o.name for o in proto.graph.output]
    want_in = [p.name for p in signature.inputs]
    want_out = [p.name for p in signature.outputs]
    if got_in != want_in or got_out != want_out:
        raise ExportError(f"graph {signature.name!r}: ONNX ports are {got_in} -> {got_out}, expected {want_in} -> "
                          f"{want_out}; an output that is also an input, or an unused input, cannot be exported "
                          f"(add an identity op or drop the port)")
    for value, port in zip(list(inputs) + list(proto.graph.output), signature.inputs + signature.outputs):
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)
        if dims != port.shape:
            raise ExportError(f"graph {signature.name!r}: ONNX port {port.name!r} has shape {dims}, the program "
                              f"says {port.shape}; the exporter needs static batch-1 shapes")


def onnx2tf_ops() -> set[str]:
    """ONNX op types onnx2tf implements (one module per op in onnx2tf/ops), found without importing TF."""
    spec = importlib.util.find_spec("onnx2tf")
    if spec is None or not spec.submodule_search_locations:
        raise ExportError("onnx2tf is not installed; run scripts/setup_env.sh full (it installs onnx2tf==1.29.24 "
                          "with --no-deps)")
    ops_dir = Path(list(spec.submodule_search_locations)[0]) / "ops"
    return {p.stem for p in ops_dir.glob("*.py") if not p.stem.startswith("_")}


def check_convertible(graph: OnnxGraph, proto=None) -> None:
    """Fail early, naming the graph, the node, the torch layer and the op, if onnx2tf lacks an op."""
    import onnx

    proto = proto if proto is not None else onnx.load(str(graph.path))
    supported = onnx2tf_ops()
    problems = []
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in supported:
            domain = f"{node.domain}::" if node.domain not in ("", "ai.onnx") else ""
            problems.append(f"{graph.describe_node(node.name)}: op {domain}{node.op_type}")
    if problems:
        raise ExportError(f"graph {graph.name!r} has layers that onnx2tf cannot convert: " + "; ".join(problems[:10])
                          + ". Replace those layers with supported ops (see docs/export.md, 'Unsupported layers')")


def onnx_input_arrays(signature: GraphSignature, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic random inputs of the graph's port shapes (for probes when no real data is given)."""
    rng = np.random.default_rng(seed)
    return {p.name: rng.standard_normal(p.shape).astype(p.dtype) for p in signature.inputs}
