"""The export pipeline: StagedModel -> per-graph ONNX -> onnx2tf -> checked, atomic bundle.

>>> summary = export_bundle(ExportInputs(staged, model_info, calib_frames, test_frames, test_labels),
...                         "deploy/bundles/x", ExportOptions(precisions=("fp32", "int8")))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edge_anytime.bundle import MANIFEST_NAME, Bundle, sha256_file, write_manifest
from edge_anytime.manifest import GraphFile, Manifest, ModelInfo
from edge_anytime.preprocess import Preprocessor
from edge_anytime.program import Exit, Program

from . import calibrate, parity
from .bundle_writer import write_atomically
from .cache import ConversionCache
from .common import EXPORTER_VERSION, ExportError, save_npz_deterministic, sha256_array, sha256_json, tool_versions, write_json
from .convert import ConvertedGraph, convert_graph, kept_nchw_inputs
from .onnx_export import OnnxGraph, export_onnx
from .options import ExportOptions
from .ports import PortMapping, resolve_ports

REFERENCE_PATH = "reference/self_test.npz"
#: Real frames per graph for the numeric port check (ports.resolve_ports).
PROBE_FRAMES = 4
INT8_VARIANT = "onnx2tf integer_quant: int8 weights and activations, float32 inputs/outputs"


@dataclass(frozen=True)
class ExportInputs:
    """What to export and the real data to check it with.

    calib_frames: raw training images (N, H, W, C) uint8; a seeded sample of `calib_samples` is used
        (only int8 needs them: None is fine for float exports).
    test_frames/test_labels: raw test images and labels; a seeded sample of `parity_samples` is used.
    Frames are preprocessed exactly as on the device (`edge_anytime.preprocess.Preprocessor`).
    temperatures/val_accuracy: per exit, from the run's metrics.json (None: unknown).
    source: provenance written to the manifest metadata (checkpoint hash, run name, ...); a
        `readme_notes` entry (markdown) is also appended to the bundle's README.md.
    """

    staged: Any  # training.stages.StagedModel
    model: ModelInfo
    calib_frames: np.ndarray | None
    test_frames: np.ndarray
    test_labels: np.ndarray | None = None
    temperatures: Sequence[float] | None = None
    val_accuracy: Sequence[float | None] | None = None
    source: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    noop: bool
    export_key: str
    graphs: Mapping[str, Mapping[str, Mapping[str, Any]]]  # graph -> precision -> {path, sha256, cached}
    gate: Mapping[str, Any]
    recommended_precision: Mapping[str, str] | None
    parity: Mapping[str, Any]
    seconds: float

    def to_json(self) -> dict:
        return {"out": str(self.out), "noop": self.noop, "export_key": self.export_key, "graphs": self.graphs,
                "gate": self.gate, "recommended_precision": self.recommended_precision, "parity": self.parity,
                "seconds": round(self.seconds, 2)}


def _package_source_sha256() -> str:
    files = sorted(Path(__file__).parent.glob("*.py"))
    return sha256_json({p.name: p.read_text() for p in files})


_PACKAGE_SHA256 = _package_source_sha256()  # at import: the code that runs, not files edited since


def exporter_source_sha256() -> str:
    """Hash of this package's source: a changed exporter never reuses an old bundle as up to date."""
    return _PACKAGE_SHA256


def preprocess(model: ModelInfo, frames: np.ndarray) -> np.ndarray:
    """Raw frames (N, H, W, C) -> model inputs (N, C, H, W) float32, with the device's preprocessing."""
    prepare = Preprocessor(model.input)
    if len(frames) == 0:
        return np.zeros((0, *model.input.shape[1:]), np.float32)
    return np.concatenate([prepare(np.asarray(frame)) for frame in frames])


def _progress_noop(label: str) -> None:
    pass


def export_bundle(inputs: ExportInputs, out: str | Path, options: ExportOptions = ExportOptions(),
                  progress: Callable[[str], None] = _progress_noop) -> ExportSummary:
    """Export `inputs.staged` to a bundle at `out` (see the package docstring); returns a summary.

    Raises ExportError (nothing written at `out`) when a layer cannot be converted, the port mapping
    check fails, or the float32 parity gate fails (unless options.allow_parity_failure).
    """
    started = time.perf_counter()
    out = Path(out)
    staged = inputs.staged
    program: Program = staged.program
    program.validate()
    model = inputs.model
    model_ports = _model_input_ports(program)
    if program.input_tensor != model.input.tensor:
        raise ExportError(f"the program reads input tensor {program.input_tensor!r} but the model info says "
                          f"{model.input.tensor!r}")
    _check_coarse(program, model)
    exits = _exits_with_metadata(program, inputs.temperatures, inputs.val_accuracy)
    program = replace(program, exits=exits)
    program.validate()

    own_work = options.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="edge_anytime-export-")) if own_work else Path(options.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    cache = ConversionCache(options.cache_dir)
    # On failure the work folder stays (the error names the onnx2tf log in it); on success a
    # temporary one is removed.
    calib_frames = inputs.calib_frames if inputs.calib_frames is not None else inputs.test_frames[:0]
    calib_index = calibrate.select_indices(len(calib_frames), options.calib_samples, options.seed)
    test_index = calibrate.select_indices(len(inputs.test_frames), options.parity_samples, options.seed)
    calib_x = preprocess(model, calib_frames[calib_index])
    test_x = preprocess(model, inputs.test_frames[test_index])
    labels = None if inputs.test_labels is None else np.asarray(inputs.test_labels)[test_index].astype(np.int64)
    if "int8" in options.precisions and len(calib_x) == 0:
        raise ExportError("int8 needs real calibration images; none were given")
    if len(test_x) == 0:
        raise ExportError("parity needs real test images; none were given")
    progress("data")

    onnx_graphs: dict[str, OnnxGraph] = {}
    for name, signature in program.graphs.items():
        onnx_graphs[name] = export_onnx(signature, staged.graph_modules[name], work / "onnx" / f"{name}.onnx",
                                        options.conversion)
        progress(f"onnx {name}")

    export_key = sha256_json({
        "onnx": {g: o.sha256 for g, o in onnx_graphs.items()}, "program": _program_json(program),
        "model": _model_json(model), "calib": sha256_array(calib_x), "test": sha256_array(test_x),
        "labels": None if labels is None else sha256_array(labels), "options": options.key(),
        "tools": tool_versions(), "exporter": exporter_source_sha256(), "source": dict(inputs.source)})
    current = _up_to_date(out, export_key)
    if current is not None:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
        return _summary(current, True, export_key, {}, time.perf_counter() - started)

    test_env = calibrate.reference_env(staged, test_x)
    torch_logits = {t: test_env[t] for t in parity.exit_tensors(program)}
    calib_env = calibrate.reference_env(staged, calib_x) if "int8" in options.precisions else None
    progress("torch reference")

    converted: dict[str, ConvertedGraph] = {}
    for name, signature in program.graphs.items():
        kept = kept_nchw_inputs(signature, model_ports.get(name, ()), options.conversion)
        calib = calibrate.calibration_arrays(program, calib_env, name, kept) if calib_env is not None else None
        converted[name] = convert_graph(onnx_graphs[name], signature, options.precisions, kept, calib,
                                        options.conversion, cache, work)
        progress(f"convert {name}" + (" (cached)" if converted[name].cached else ""))

    def build(tmp: Path) -> dict:
        return _build_bundle(tmp, program, model, inputs, options, onnx_graphs, converted, test_env, test_x,
                             labels, torch_logits, calib_env, export_key, progress)

    report = write_atomically(out, build)
    progress("bundle")
    bundle = Bundle.load(out)
    if own_work:
        shutil.rmtree(work, ignore_errors=True)
    return _summary(bundle, False, export_key, {g: c.cached for g, c in converted.items()},
                    time.perf_counter() - started, report)


def _build_bundle(tmp: Path, program: Program, model: ModelInfo, inputs: ExportInputs, options: ExportOptions,
                  onnx_graphs: Mapping[str, OnnxGraph], converted: Mapping[str, ConvertedGraph],
                  test_env: Mapping[str, np.ndarray], test_x: np.ndarray, labels, torch_logits,
                  calib_env, export_key: str, progress) -> dict:
    import onnxruntime as ort

    (tmp / "graphs").mkdir()
    files: dict[str, dict[str, GraphFile]] = {}
    mapping_report: dict[str, dict] = {}
    for name, signature in program.graphs.items():
        probe = _probe_frames(program, test_env, name)
        session = ort.InferenceSession(str(onnx_graphs[name].path), providers=["CPUExecutionProvider"])
        frames = [session.run([p.name for p in signature.outputs], {k: v[i] for k, v in probe.items()})
                  for i in range(len(next(iter(probe.values()))))]
        reference = {p.name: np.stack([f[j] for f in frames]) for j, p in enumerate(signature.outputs)}
        files[name], mapping_report[name] = {}, {}
        for precision in options.precisions:
            relative = f"graphs/{name}.{precision}.tflite"
            shutil.copyfile(converted[name].files[precision], tmp / relative)
            mapping: PortMapping = resolve_ports(tmp / relative, signature, precision, converted[name].kept_nchw,
                                                 probe, reference)
            files[name][precision] = GraphFile(precision=precision, path=relative, sha256=sha256_file(tmp / relative),
                                               inputs=dict(mapping.inputs), outputs=dict(mapping.outputs),
                                               transpose=dict(mapping.transpose))
            mapping_report[name][precision] = {"inputs": dict(mapping.inputs), "outputs": dict(mapping.outputs),
                                               "transpose": {k: list(v) for k, v in mapping.transpose.items()},
                                               "probe_max_abs_delta": mapping.errors,
                                               "fallbacks": list(mapping.fallbacks)}
    progress("port mapping")

    pool = parity.litert_pool(program, files, tmp)
    try:
        report = parity.evaluate(program, torch_logits, test_x, labels, pool, options.precisions,
                                 {g: o.path for g, o in onnx_graphs.items()}, options.mixed_drift_budget,
                                 {g: s.flops for g, s in program.graphs.items()}, progress)
    finally:
        pool.close()
    report["gate"] = parity.gate(report, options.fp32_atol)
    report["port_mapping"] = mapping_report
    if calib_env is not None:
        report["calibration"] = {"samples": int(len(calib_env[program.input_tensor])),
                                 "source": "real training images; later graphs: torch features of those images",
                                 "inputs": calibrate.calibration_summary(program, calib_env)}
    if not report["gate"]["passed"] and not options.allow_parity_failure:
        g = report["gate"]
        raise ExportError(f"float32 parity gate failed: max |delta logits| {g['max_abs_delta']:.3g} (target <= "
                          f"{g['fp32_atol']:g}), min argmax agreement {g['min_argmax_agreement']:.2%} (target 100%). "
                          f"Per exit: {report['backends']['litert:fp32']['exits']}. Nothing was written; pass "
                          f"--allow-parity-failure to write the bundle anyway")

    (tmp / "reference").mkdir()
    count = min(options.self_test_samples, len(test_x))
    reference_arrays = {"input": test_x[:count, None].astype(np.float32)}
    for tensor in parity.exit_tensors(program):  # every exit's logits, and coarse logits where there are
        reference_arrays[tensor] = torch_logits[tensor][:count, None].astype(np.float32)
    save_npz_deterministic(tmp / REFERENCE_PATH, reference_arrays)
    write_json(tmp / "parity.json", report)
    (tmp / "parity.md").write_text(parity.to_markdown(report, model.name))
    (tmp / "README.md").write_text(_readme(model, program, options, report, inputs.source))

    recommended = report.get("mixed", {}).get("recommended_precision")
    metadata = {
        "exporter": {"name": "training.export", "version": EXPORTER_VERSION, "source_sha256": exporter_source_sha256()},
        "export_key": export_key,
        "tools": tool_versions(),
        "source": dict(inputs.source),
        "layout": {"program": "NCHW", "image_port_in_file": options.conversion.image_layout.upper(),
                   "feature_ports_in_file": "NCHW (onnx2tf -k)"},
        "conversion": options.conversion.key(),
        "onnx_sha256": {g: o.sha256 for g, o in onnx_graphs.items()},
        "parity": {"samples": report["samples"], "gate": report["gate"],
                   "max_abs_delta": {name.split(":", 1)[1] if ":" in name else name:
                                     [round(r["max_abs_delta"], 8) for r in entry["exits"]]
                                     for name, entry in report["backends"].items()},
                   "argmax_agreement": {name.split(":", 1)[1] if ":" in name else name:
                                        [r["argmax_agreement"] for r in entry["exits"]]
                                        for name, entry in report["backends"].items()},
                   **({"coarse_max_abs_delta": {name.split(":", 1)[1] if ":" in name else name:
                                                [round(r["coarse"]["max_abs_delta"], 8) if "coarse" in r else None
                                                 for r in entry["exits"]]
                                                for name, entry in report["backends"].items()}}
                      if any(e.coarse_tensor for e in program.exits) else {})},
        "self_test": {"samples": count, "logits": "torch fp32",
                      "suggested_atol": {"fp32": 1e-4, "fp16": 5e-2, "int8": None}},
    }
    if "int8" in options.precisions:
        metadata["int8"] = {"variant": INT8_VARIANT, "calib_samples": report["calibration"]["samples"],
                            "quant_type": options.conversion.quant_type}
    if recommended is not None:
        metadata["recommended_precision"] = dict(recommended)
    extra = {}
    for relative in (REFERENCE_PATH, "parity.json", "parity.md", "README.md"):
        extra[relative] = sha256_file(tmp / relative)
    manifest = Manifest(model=model, program=program, files=files, extra_files=extra, reference=REFERENCE_PATH,
                        metadata=metadata)
    write_manifest(tmp, manifest)
    Bundle.load(tmp)
    return report


def _probe_frames(program: Program, env: Mapping[str, np.ndarray], graph: str,
                  count: int = PROBE_FRAMES) -> dict[str, np.ndarray]:
    """{input port: (F, *port shape)}: real inputs of `graph` for the port check, taken from every step
    that runs it in turn (a graph reused by several steps is probed on each step's features)."""
    steps = [program.steps[i] for i in program.steps_for_graph(graph)]
    frames = len(env[program.input_tensor])
    picks = [(steps[k % len(steps)], k // len(steps)) for k in range(count)]
    picks = [(step, i) for step, i in picks if i < frames] or [(steps[0], 0)]
    return {port.name: np.stack([env[step.inputs[port.name]][i:i + 1] for step, i in picks])
            for port in program.graphs[graph].inputs}


def _check_coarse(program: Program, model: ModelInfo) -> None:
    """Hierarchical exits need the superclasses in the model info: as many coarse labels as coarse logits,
    and a fine -> coarse map over the labels (the runtime names and aggregates coarse classes with them)."""
    if model.fine_to_coarse:
        if len(model.fine_to_coarse) != len(model.labels):
            raise ExportError(f"model info: fine_to_coarse has {len(model.fine_to_coarse)} entries for "
                              f"{len(model.labels)} labels")
        if not model.coarse_labels or not all(0 <= c < len(model.coarse_labels) for c in model.fine_to_coarse):
            raise ExportError(f"model info: fine_to_coarse maps to coarse ids outside the {len(model.coarse_labels)} "
                              f"coarse labels {list(model.coarse_labels)}")
    for exit_ in program.exits:
        if exit_.coarse_tensor is None:
            continue
        step = program.steps[program.producer_of(exit_.coarse_tensor)]
        port = next(p for p, t in step.outputs.items() if t == exit_.coarse_tensor)
        classes = program.graphs[step.graph].output(port).shape[-1]
        if len(model.coarse_labels) != classes or len(model.fine_to_coarse) != len(model.labels):
            raise ExportError(f"exit {exit_.index} has a coarse head with {classes} logits ({exit_.coarse_tensor!r}), "
                              f"so the model info needs {classes} coarse_labels and a fine_to_coarse entry per label; "
                              f"it has {len(model.coarse_labels)} coarse labels and {len(model.fine_to_coarse)} "
                              f"fine_to_coarse entries (the dataset's superclasses, training/data.py)")


def _model_input_ports(program: Program) -> dict[str, tuple[str, ...]]:
    """graph -> its input ports that some step binds to the model input."""
    ports: dict[str, set] = {}
    for step in program.steps:
        for port, tensor in step.inputs.items():
            if tensor == program.input_tensor:
                ports.setdefault(step.graph, set()).add(port)
    return {g: tuple(sorted(p)) for g, p in ports.items()}


def _exits_with_metadata(program: Program, temperatures, val_accuracy) -> tuple[Exit, ...]:
    n = len(program.exits)
    for label, values in (("temperatures", temperatures), ("val_accuracy", val_accuracy)):
        if values is not None and len(values) != n:
            raise ExportError(f"metrics give {len(values)} {label} but the program has {n} exits")
    return tuple(replace(e, temperature=float(temperatures[i]) if temperatures is not None else e.temperature,
                         val_accuracy=(None if val_accuracy is None or val_accuracy[i] is None
                                       else float(val_accuracy[i])))
                 for i, e in enumerate(program.exits))


def _program_json(program: Program) -> dict:
    return {"input": program.input_tensor,
            "graphs": {g: [[(p.name, p.shape, p.dtype) for p in s.inputs], [(p.name, p.shape, p.dtype) for p in s.outputs],
                           s.flops, s.params] for g, s in program.graphs.items()},
            "steps": [[s.name, s.graph, dict(s.inputs), dict(s.outputs)] for s in program.steps],
            "exits": [[e.index, e.tensor, e.name, e.flops, e.val_accuracy, e.temperature, e.coarse_tensor]
                      for e in program.exits]}


def _model_json(model: ModelInfo) -> dict:
    i = model.input
    return {"name": model.name, "arch": model.arch, "labels": list(model.labels), "dataset": model.dataset,
            "coarse": [list(model.coarse_labels), list(model.fine_to_coarse)],
            "input": [i.tensor, list(i.shape), i.dtype, i.layout, list(i.mean), list(i.std), i.scale]}


def _up_to_date(out: Path, export_key: str) -> Bundle | None:
    """The existing bundle at `out` if it was written by an identical export and is intact."""
    manifest_path = out / MANIFEST_NAME
    if not manifest_path.is_file():
        return None
    try:
        if json.loads(manifest_path.read_text()).get("metadata", {}).get("export_key") != export_key:
            return None
        return Bundle.load(out)
    except Exception:
        return None


def _summary(bundle: Bundle, noop: bool, export_key: str, cached: Mapping[str, bool], seconds: float,
             report: Mapping | None = None) -> ExportSummary:
    manifest = bundle.manifest
    graphs = {g: {p: {"path": f.path, "sha256": f.sha256, **({"cached": cached[g]} if g in cached else {})}
                  for p, f in per.items()} for g, per in manifest.files.items()}
    meta = manifest.metadata
    parity_meta = meta.get("parity", {})
    return ExportSummary(out=bundle.root, noop=noop, export_key=export_key, graphs=graphs,
                         gate=parity_meta.get("gate", {}), recommended_precision=meta.get("recommended_precision"),
                         parity={"max_abs_delta": parity_meta.get("max_abs_delta"),
                                 "argmax_agreement": parity_meta.get("argmax_agreement"),
                                 "torch_accuracy": (report or {}).get("torch_accuracy")},
                         seconds=seconds)


def _readme(model: ModelInfo, program: Program, options: ExportOptions, report: Mapping, source: Mapping) -> str:
    lines = [f"# {model.name}", "",
             f"Anytime `{model.arch}` model for `{model.dataset or 'unknown dataset'}`, {len(model.labels)} classes, "
             f"{len(program.exits)} exits, {len(program.graphs)} graphs, {len(program.steps)} steps.", "",
             "Exported by `python -m training.export` (see docs/export.md)"
             + (f" from `{source['checkpoint']}`" if "checkpoint" in source else "") + ".",
             f"Precisions: {', '.join(options.precisions)}. Image port layout in the files: "
             f"{options.conversion.image_layout.upper()}; feature ports NCHW.", "",
             "Exits (temperature, validation accuracy, cumulative FLOPs):", ""]
    for e in program.exits:
        acc = "-" if e.val_accuracy is None else f"{e.val_accuracy:.2%}"
        lines.append(f"- exit {e.index} `{e.tensor}`: T={e.temperature:.3f}, val {acc}, {e.flops:,} FLOPs")
    lines += ["", "Parity (torch vs LiteRT, chained per frame): see parity.md.", ""]
    if source.get("readme_notes"):
        lines += [str(source["readme_notes"]).rstrip(), ""]
    return "\n".join(lines)
