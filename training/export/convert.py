"""ONNX -> TFLite with onnx2tf, run offline as a subprocess, cached.

Why a subprocess: it isolates TensorFlow (import time, memory, global Keras state, log noise)
from the exporter, gives a hard timeout, and a crash in the converter becomes a clean error.
One run per graph writes every precision we need: `<stem>_float32.tflite`, `_float16.tflite`
and, with `-oiqt`, `_integer_quant.tflite` (int8 weights and activations, float32 inputs and
outputs; see docs/export.md for why that variant).

Offline pitfalls handled here (docs/toolchain.md): onnx2tf looks for
`calibration_image_sample_data_20x128x128x3_float32.npy` in its working directory before it tries
to download it (for every model with a 3-channel 4-D input, quantised or not): we put a
deterministic one there. It also runs `onnxsim` as a bare command: the venv's bin folder goes first
on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edge_anytime.program import GraphSignature

from .cache import ConversionCache
from .common import EXPORTER_VERSION, ExportError, sha256_array, sha256_json, tool_versions
from .onnx_export import OnnxGraph
from .options import ONNX2TF_SUFFIX, ConversionOptions

#: Bump when the onnx2tf invocation below changes in a way that changes its output.
CONVERT_VERSION = "1"
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


@dataclass(frozen=True)
class ConvertedGraph:
    name: str
    files: Mapping[str, Path]  # precision -> .tflite (in the cache or the work dir)
    key: str
    cached: bool
    kept_nchw: tuple[str, ...]  # input ports kept NCHW in the file (-k)


def sample_data() -> np.ndarray:
    """The stand-in for onnx2tf's downloaded MS-COCO sample (it uses it for its own dummy inference
    checks, and for calibration only when none is given, which never happens here). Deterministic."""
    return np.random.default_rng(20240521).random((20, 128, 128, 3), dtype=np.float32)


def kept_nchw_inputs(signature: GraphSignature, model_input_ports: Sequence[str], options: ConversionOptions) -> tuple[str, ...]:
    """Input ports to keep channel-first (onnx2tf -k works on 3-D, 4-D and 5-D inputs): every feature
    input, and the image input unless image_layout is nhwc."""
    kept = []
    for port in signature.inputs:
        if len(port.shape) not in (3, 4, 5):
            continue
        if port.name in model_input_ports and options.image_layout == "nhwc":
            continue
        kept.append(port.name)
    return tuple(kept)


def tf_layout(array: np.ndarray, kept_nchw: bool) -> np.ndarray:
    """Calibration arrays must be in the TF-side layout: channel-last unless the port is kept (NCHW)."""
    if array.ndim == 5 and array.shape[1] == 1:  # (N, 1, C, H, W) batch-1 samples
        array = array[:, 0]
    if array.ndim in (3, 4, 5) and not kept_nchw:
        array = array.transpose(0, *range(2, array.ndim), 1)
    return np.ascontiguousarray(array, dtype=np.float32)


def conversion_key(graph: OnnxGraph, kept: Sequence[str], int8: bool, calibration: Mapping[str, np.ndarray] | None,
                   options: ConversionOptions) -> str:
    return sha256_json({
        "onnx": graph.sha256, "kept_nchw": list(kept), "int8": int8,
        "calibration": {k: sha256_array(v) for k, v in sorted((calibration or {}).items())} if int8 else {},
        "options": options.key(), "tools": tool_versions(), "convert_version": CONVERT_VERSION,
        "exporter_version": EXPORTER_VERSION, "python": sys.version_info[:2],
    })


def convert_graph(graph: OnnxGraph, signature: GraphSignature, precisions: Sequence[str], kept: Sequence[str],
                  calibration: Mapping[str, np.ndarray] | None, options: ConversionOptions, cache: ConversionCache,
                  work_dir: Path) -> ConvertedGraph:
    """Convert one ONNX graph to the TFLite files of `precisions` (cache first).

    calibration: {input port: (N, ...) float32 array in the TF-side layout}, required for int8.
    """
    int8 = "int8" in precisions
    if int8:
        missing = [p.name for p in signature.inputs if calibration is None or p.name not in calibration]
        if missing:
            raise ExportError(f"graph {graph.name!r}: int8 needs calibration data for inputs {missing}")
    key = conversion_key(graph, kept, int8, calibration, options)
    produced = ("fp32", "fp16", "int8") if int8 else ("fp32", "fp16")
    hit = cache.get(key)
    if hit is not None and all(p in hit for p in produced):
        return ConvertedGraph(graph.name, {p: hit[p] for p in precisions}, key, True, tuple(kept))

    run_dir = work_dir / "convert" / graph.name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    np.save(run_dir / SAMPLE_FILE, sample_data())
    out_dir = run_dir / "out"
    command = [sys.executable, "-m", "onnx2tf", "-i", str(graph.path.resolve()), "-o", str(out_dir), "-n"]
    if kept:
        command += ["-k", *kept]
    if int8:
        command += ["-oiqt", "-qt", options.quant_type]
        for port in signature.inputs:
            path = run_dir / f"calib_{port.name}.npy"
            np.save(path, np.ascontiguousarray(calibration[port.name], dtype=np.float32))
            # calibration data are already in the model's input space: identity normalisation
            command += ["-cind", port.name, str(path), "[0.0]", "[1.0]"]
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0", CUDA_VISIBLE_DEVICES="", PYTHONHASHSEED="0",
               PYTHONWARNINGS="ignore")
    log_path = run_dir / "onnx2tf.log"
    try:
        with open(log_path, "w") as log:
            completed = subprocess.run(command, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       timeout=options.timeout_s)
    except subprocess.TimeoutExpired:
        raise ExportError(f"graph {graph.name!r}: onnx2tf ran past {options.timeout_s:.0f} s; see {log_path}") from None
    log_text = log_path.read_text(errors="replace")
    stem = graph.path.stem
    files = {p: out_dir / f"{stem}_{ONNX2TF_SUFFIX[p]}.tflite" for p in produced}
    missing = [p for p, f in files.items() if not f.is_file()]
    if completed.returncode != 0 or missing:
        raise ExportError(_explain_failure(graph, log_text, completed.returncode, missing, log_path))
    stored = cache.put(key, files, {"graph": graph.name, "onnx_sha256": graph.sha256, "command": command[3:]})
    return ConvertedGraph(graph.name, {p: stored[p] for p in precisions}, key, False, tuple(kept))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _explain_failure(graph: OnnxGraph, log: str, returncode: int, missing: Sequence[str], log_path: Path) -> str:
    log = _ANSI.sub("", log)
    op_type = re.findall(r"onnx_op_type:\s*(\S+)", log)
    op_name = re.findall(r"onnx_op_name:\s*(\S+)", log)
    not_impl = re.findall(r"(\S+) OP is not yet implemented", log)
    where = ""
    if not_impl:
        where = f" op {not_impl[-1]} is not implemented by onnx2tf."
    if op_type or op_name:
        node = op_name[-1] if op_name else "?"
        where += f" It failed at {graph.describe_node(node)}, op {op_type[-1] if op_type else '?'}."
    errors = [line.strip() for line in log.splitlines() if "ERROR" in line or "Error" in line][-3:]
    detail = (" Last errors: " + " | ".join(errors)) if errors else ""
    what = f"produced no {', '.join(missing)} file" if missing and returncode == 0 else f"exited with {returncode}"
    return (f"graph {graph.name!r}: onnx2tf {what}.{where}{detail} Full log: {log_path}. If a layer is "
            f"unsupported, replace it with supported ops (docs/export.md, 'Unsupported layers').")
