"""manifest.json of a bundle (format v2; v1 is migrated on load): typed records and their JSON form.

The manifest is the one place where dicts meet the typed world: `parse_manifest`
turns JSON into frozen records and rejects anything malformed with a message
that names the field; `manifest_to_json` is its inverse (used by the exporter).
The format is specified in docs/bundle-format.md.

>>> m = parse_manifest(example_manifest())
>>> m.model.input.shape, [e.tensor for e in m.program.exits]
((1, 3, 32, 32), ['logits0'])
>>> parse_manifest(manifest_to_json(m)) == m
True
"""

from __future__ import annotations

import math

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from .errors import BundleError
from .program import Exit, GraphSignature, Port, Program, Step

FORMAT_NAME = "edge-anytime-bundle"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)          # v1 manifests are migrated on load (see _migrate_v1)
PRECISIONS = ("fp32", "fp16", "int8")
COLOR_ORDERS = ("RGB", "BGR")                          # channel order the network was trained on
RESIZE_POLICIES = ("exact", "stretch", "center_crop")  # how a frame of another size reaches the input size
INTERPOLATIONS = ("area", "bilinear", "nearest")


@dataclass(frozen=True)
class InputSpec:
    """The model input: the tensor name the program reads, and how to preprocess a frame.

    A raw frame is uint8 HWC (or float in [0, 255]); the model input is
    `((frame / scale) - mean) / std`, transposed to `layout`. Format v2 adds how a
    frame gets there (edge_anytime.preprocess applies it): `color_order` is the
    channel order the network expects, `resize` what happens to a frame of another
    size (`exact`: refuse it, `stretch`: resize to the input size, `center_crop`:
    crop the largest centred region of the input's aspect ratio, then resize) and
    `interpolation` the filter. The defaults are v1's behaviour.
    """

    tensor: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str = "NCHW"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 255.0
    color_order: str = "RGB"
    resize: str = "exact"
    interpolation: str = "area"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    arch: str
    labels: tuple[str, ...]
    input: InputSpec
    dataset: str = ""
    coarse_labels: tuple[str, ...] = ()
    fine_to_coarse: tuple[int, ...] = ()


@dataclass(frozen=True)
class GraphFile:
    """One converted file of a graph at one precision, with its explicit port mapping.

    `inputs`/`outputs` map the graph's port names to the tensor names in the file's
    signature `signature` (never rely on output order: int8 files rename outputs).
    """

    precision: str
    path: str
    sha256: str
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    signature: str = "serving_default"
    transpose: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # port -> program-to-file axis order


@dataclass(frozen=True)
class Manifest:
    model: ModelInfo
    program: Program
    files: Mapping[str, Mapping[str, GraphFile]]  # graph name -> precision -> file
    extra_files: Mapping[str, str] = field(default_factory=dict)  # relative path -> sha256
    reference: str | None = None  # relative path of the self-test .npz
    version: int = FORMAT_VERSION
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def precisions(self) -> tuple[str, ...]:
        """Precisions that every graph has."""
        sets = [set(per_precision) for per_precision in self.files.values()]
        common = set.intersection(*sets) if sets else set()
        return tuple(p for p in PRECISIONS if p in common)


def _get(obj: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...] | None = None):
    if not isinstance(obj, Mapping):
        raise BundleError(f"manifest: {where} must be an object, got {type(obj).__name__}")
    if key not in obj:
        raise BundleError(f"manifest: {where} lacks required field {key!r}")
    value = obj[key]
    if kind is not None and not isinstance(value, kind):
        raise BundleError(f"manifest: {where}.{key} must be {kind}, got {type(value).__name__}")
    return value


def _ports(items: Any, where: str) -> tuple[Port, ...]:
    if not isinstance(items, list):
        raise BundleError(f"manifest: {where} must be a list of ports")
    try:
        return tuple(Port(_get(p, "name", where, str), tuple(_get(p, "shape", where, list)), p.get("dtype", "float32"))
                     for p in items)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"manifest: {where}: {exc}") from exc


def _migrate_v1(data: Mapping[str, Any]) -> dict[str, Any]:
    """A v1 manifest as v2: v1 had no preprocessing fields and meant RGB frames of exactly the input size."""
    migrated = dict(data, version=FORMAT_VERSION)
    model = data.get("model")
    if isinstance(model, Mapping) and isinstance(model.get("input"), Mapping):
        migrated["model"] = dict(model, input={**model["input"], "color_order": "RGB", "resize": "exact",
                                               "interpolation": "area"})
    return migrated


def _choice(input_json: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = input_json.get(key, default)
    if value not in choices:
        raise BundleError(f"manifest: model.input.{key} must be one of {list(choices)}, got {value!r}")
    return value


def parse_manifest(data: Mapping[str, Any]) -> Manifest:
    """Turn manifest JSON into a Manifest, validating the schema and the dataflow (v1 is migrated to v2)."""
    if not isinstance(data, Mapping):
        raise BundleError("manifest: the top level must be a JSON object")
    fmt = data.get("format")
    if fmt != FORMAT_NAME:
        raise BundleError(f"manifest: format is {fmt!r}, expected {FORMAT_NAME!r}; this is not an edge_anytime bundle")
    version = data.get("version")
    if version not in READABLE_VERSIONS:
        raise BundleError(
            f"manifest: unsupported bundle version {version!r}; this runtime reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. "
            f"Re-export the bundle with this release's exporter (python -m training.export) or upgrade edge_anytime.")
    if version == 1:
        data = _migrate_v1(data)
        version = FORMAT_VERSION

    model_json = _get(data, "model", "manifest")
    input_json = _get(model_json, "input", "model")
    try:
        input_spec = InputSpec(
            tensor=_get(input_json, "tensor", "model.input", str),
            shape=tuple(int(d) for d in _get(input_json, "shape", "model.input", list)),
            dtype=input_json.get("dtype", "float32"),
            layout=input_json.get("layout", "NCHW"),
            mean=tuple(float(v) for v in input_json.get("mean", (0.0, 0.0, 0.0))),
            std=tuple(float(v) for v in input_json.get("std", (1.0, 1.0, 1.0))),
            scale=float(input_json.get("scale", 255.0)),
        )
    except (TypeError, ValueError) as exc:
        raise BundleError(f"manifest: model.input: {exc}") from exc
    input_spec = replace(input_spec, color_order=_choice(input_json, "color_order", COLOR_ORDERS, "RGB"),
                         resize=_choice(input_json, "resize", RESIZE_POLICIES, "exact"),
                         interpolation=_choice(input_json, "interpolation", INTERPOLATIONS, "area"))
    if input_spec.layout not in ("NCHW", "NHWC"):
        raise BundleError(f"manifest: model.input.layout must be NCHW or NHWC, got {input_spec.layout!r}")
    model = ModelInfo(
        name=_get(model_json, "name", "model", str),
        arch=_get(model_json, "arch", "model", str),
        labels=tuple(_get(model_json, "labels", "model", list)),
        input=input_spec,
        dataset=model_json.get("dataset", ""),
        coarse_labels=tuple(model_json.get("coarse_labels") or ()),
        fine_to_coarse=tuple(int(v) for v in (model_json.get("fine_to_coarse") or ())),
    )

    graphs: dict[str, GraphSignature] = {}
    files: dict[str, dict[str, GraphFile]] = {}
    for name, graph_json in _get(data, "graphs", "manifest", dict).items():
        where = f"graphs.{name}"
        graphs[name] = GraphSignature(
            name=name,
            inputs=_ports(_get(graph_json, "inputs", where), f"{where}.inputs"),
            outputs=_ports(_get(graph_json, "outputs", where), f"{where}.outputs"),
            flops=int(graph_json.get("flops", 0)),
            params=int(graph_json.get("params", 0)),
        )
        files[name] = {}
        for precision, file_json in _get(graph_json, "files", where, dict).items():
            fwhere = f"{where}.files.{precision}"
            if precision not in PRECISIONS:
                raise BundleError(f"manifest: {fwhere}: unknown precision {precision!r}; use one of {PRECISIONS}")
            graph_file = GraphFile(
                precision=precision,
                path=_get(file_json, "path", fwhere, str),
                sha256=_get(file_json, "sha256", fwhere, str),
                inputs=dict(_get(file_json, "inputs", fwhere, dict)),
                outputs=dict(_get(file_json, "outputs", fwhere, dict)),
                signature=file_json.get("signature", "serving_default"),
                transpose={port: tuple(int(a) for a in perm) for port, perm in (file_json.get("transpose") or {}).items()},
            )
            for port, perm in graph_file.transpose.items():
                if port not in graph_file.inputs and port not in graph_file.outputs:
                    raise BundleError(f"manifest: {fwhere}.transpose names unknown port {port!r}")
                if sorted(perm) != list(range(len(perm))):
                    raise BundleError(f"manifest: {fwhere}.transpose[{port!r}] = {list(perm)} is not a permutation")
            if set(graph_file.inputs) != {p.name for p in graphs[name].inputs}:
                raise BundleError(f"manifest: {fwhere}.inputs maps {sorted(graph_file.inputs)}, "
                                  f"but the graph's inputs are {[p.name for p in graphs[name].inputs]}")
            if set(graph_file.outputs) != {p.name for p in graphs[name].outputs}:
                raise BundleError(f"manifest: {fwhere}.outputs maps {sorted(graph_file.outputs)}, "
                                  f"but the graph's outputs are {[p.name for p in graphs[name].outputs]}")
            files[name][precision] = graph_file
        if not files[name]:
            raise BundleError(f"manifest: {where}.files is empty: graph {name!r} has no converted file")

    steps = tuple(
        Step(name=_get(s, "name", "steps[]", str), graph=_get(s, "graph", "steps[]", str),
             inputs=dict(_get(s, "inputs", "steps[]", dict)), outputs=dict(_get(s, "outputs", "steps[]", dict)))
        for s in _get(data, "steps", "manifest", list))
    try:
        exits = tuple(
            Exit(index=int(_get(e, "index", "exits[]")), tensor=_get(e, "tensor", "exits[]", str),
                 name=e.get("name", ""), flops=int(e.get("flops", 0)), val_accuracy=e.get("val_accuracy"),
                 temperature=float(e.get("temperature", 1.0)), coarse_tensor=e.get("coarse_tensor"))
            for e in _get(data, "exits", "manifest", list))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"manifest: exits: {exc}") from exc
    program = Program(input_tensor=input_spec.tensor, graphs=graphs, steps=steps, exits=exits)
    try:
        program.validate()
    except ValueError as exc:
        raise BundleError(f"manifest: {exc}") from exc
    first_inputs = {t for s in steps for t in s.inputs.values() if t == input_spec.tensor}
    if not first_inputs:
        raise BundleError(f"manifest: no step reads the model input tensor {input_spec.tensor!r}")
    for step in steps:
        for port, tensor in step.inputs.items():
            if tensor == input_spec.tensor:
                expected = graphs[step.graph].input(port)
                if expected.shape != input_spec.shape:
                    raise BundleError(f"manifest: step {step.name!r} port {port!r} has shape {expected.shape} but the "
                                      f"model input has shape {input_spec.shape} (shape mismatch)")
    for exit_ in exits:
        logits = graphs[steps[program.producer_of(exit_.tensor)].graph]
        port = [p for p, t in steps[program.producer_of(exit_.tensor)].outputs.items() if t == exit_.tensor][0]
        if logits.output(port).shape[-1] != len(model.labels):
            raise BundleError(f"manifest: exit {exit_.index} has {logits.output(port).shape[-1]} logits but the model "
                              f"has {len(model.labels)} labels (shape mismatch)")
    _check_values(model, exits)
    extra = _get(data, "files", "manifest", dict) if "files" in data else {}
    return Manifest(model=model, program=program, files=files, extra_files=dict(extra),
                    reference=data.get("reference"), version=version, metadata=dict(data.get("metadata", {})))


TEMPERATURE_RANGE = (1e-3, 1e3)   # calibration temperatures outside this are a broken export, not a model


def _finite(values, what: str, positive: bool = False) -> None:
    for v in values:
        if not (isinstance(v, (int, float)) and math.isfinite(v)) or (positive and not v > 0):
            rule = "finite numbers > 0" if positive else "finite numbers"
            raise BundleError(f"manifest: {what} must be {rule}, got {list(values)}; re-export the bundle")


def _check_values(model: ModelInfo, exits) -> None:
    """Numbers that would make every frame wrong or a result unreadable are refused at load."""
    spec = model.input
    channels = spec.shape[1] if spec.layout == "NCHW" else spec.shape[-1]
    _finite(spec.mean, "model.input.mean")
    _finite(spec.std, "model.input.std", positive=True)
    _finite((spec.scale,), "model.input.scale", positive=True)
    for name, values in (("mean", spec.mean), ("std", spec.std)):
        if len(values) not in (1, channels) or len(spec.mean) != len(spec.std):
            raise BundleError(f"manifest: model.input.{name} has {len(values)} values; mean and std need one per "
                              f"channel ({channels}) and the same length; re-export the bundle")
    if not all(isinstance(label, str) for label in model.labels):
        raise BundleError("manifest: model.labels must be strings")
    if model.fine_to_coarse:
        if len(model.fine_to_coarse) != len(model.labels):
            raise BundleError(f"manifest: model.fine_to_coarse has {len(model.fine_to_coarse)} entries for "
                              f"{len(model.labels)} labels; it needs one superclass index per label")
        if not all(0 <= c < len(model.coarse_labels) for c in model.fine_to_coarse):
            raise BundleError(f"manifest: model.fine_to_coarse must index model.coarse_labels "
                              f"(0..{len(model.coarse_labels) - 1}); got {sorted(set(model.fine_to_coarse))}")
    for exit_ in exits:
        low, high = TEMPERATURE_RANGE
        if not (math.isfinite(exit_.temperature) and low <= exit_.temperature <= high):
            raise BundleError(f"manifest: exit {exit_.index} temperature {exit_.temperature!r} is outside "
                              f"[{low:g}, {high:g}]; re-calibrate the exits (python -m training.export)")
        accuracy = exit_.val_accuracy
        if accuracy is not None and not (isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool)
                                         and math.isfinite(accuracy) and 0 <= accuracy <= 1):
            raise BundleError(f"manifest: exit {exit_.index} val_accuracy must be a number in [0, 1] or null, got "
                              f"{accuracy!r}")


def manifest_to_json(manifest: Manifest) -> dict[str, Any]:
    """The JSON form of a Manifest (inverse of parse_manifest)."""
    model = manifest.model
    program = manifest.program

    def ports(items):
        return [{"name": p.name, "shape": list(p.shape), "dtype": p.dtype} for p in items]

    return {
        "format": FORMAT_NAME,
        "version": manifest.version,
        "model": {
            "name": model.name, "arch": model.arch, "dataset": model.dataset, "labels": list(model.labels),
            "coarse_labels": list(model.coarse_labels), "fine_to_coarse": list(model.fine_to_coarse),
            "input": {"tensor": model.input.tensor, "shape": list(model.input.shape), "dtype": model.input.dtype,
                      "layout": model.input.layout, "mean": list(model.input.mean), "std": list(model.input.std),
                      "scale": model.input.scale, "color_order": model.input.color_order,
                      "resize": model.input.resize, "interpolation": model.input.interpolation},
        },
        "graphs": {
            name: {
                "inputs": ports(graph.inputs), "outputs": ports(graph.outputs),
                "flops": graph.flops, "params": graph.params,
                "files": {precision: {"path": f.path, "sha256": f.sha256, "signature": f.signature,
                                      "inputs": dict(f.inputs), "outputs": dict(f.outputs),
                                      "transpose": {k: list(v) for k, v in f.transpose.items()}}
                          for precision, f in manifest.files[name].items()},
            }
            for name, graph in program.graphs.items()
        },
        "steps": [{"name": s.name, "graph": s.graph, "inputs": dict(s.inputs), "outputs": dict(s.outputs)}
                  for s in program.steps],
        "exits": [{"index": e.index, "name": e.name, "tensor": e.tensor, "flops": e.flops,
                   "val_accuracy": e.val_accuracy, "temperature": e.temperature, "coarse_tensor": e.coarse_tensor}
                  for e in program.exits],
        "files": dict(manifest.extra_files),
        "reference": manifest.reference,
        "metadata": copy.deepcopy(dict(manifest.metadata)),
    }


def example_manifest() -> dict[str, Any]:
    """A minimal valid one-graph manifest (for docs and tests; its file does not exist)."""
    return {
        "format": FORMAT_NAME, "version": FORMAT_VERSION,
        "model": {"name": "example", "arch": "example", "labels": ["a", "b"],
                  "input": {"tensor": "image", "shape": [1, 3, 32, 32]}},
        "graphs": {"net": {"inputs": [{"name": "x", "shape": [1, 3, 32, 32]}],
                           "outputs": [{"name": "logits", "shape": [1, 2]}],
                           "files": {"fp32": {"path": "graphs/net.fp32.tflite", "sha256": "0" * 64,
                                              "inputs": {"x": "x"}, "outputs": {"logits": "logits"}}}}},
        "steps": [{"name": "net", "graph": "net", "inputs": {"x": "image"}, "outputs": {"logits": "logits0"}}],
        "exits": [{"index": 0, "tensor": "logits0"}],
    }
