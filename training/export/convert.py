"""ONNX -> TFLite with onnx2tf, run offline in a separate process, cached.

Why another process: it isolates TensorFlow (import time, memory, global Keras state, log noise)
from the exporter, gives a hard timeout, and a crash in the converter becomes a clean error.
`onnx2tf_worker` runs each graph in a child forked from a helper that imported TensorFlow once
(a fresh process state per graph, ~2-3 s instead of ~16-19 s for `python -m onnx2tf`), and
simplifies with onnxsim in process instead of onnx2tf's three `onnxsim` subprocesses.
One run per graph writes every precision we need: `<stem>_float32.tflite`, `_float16.tflite`
and, with `-oiqt`, `_integer_quant.tflite` (int8 weights and activations, float32 inputs and
outputs; see docs/export.md for why that variant).

Offline pitfall handled here (docs/toolchain.md): onnx2tf looks for
`calibration_image_sample_data_20x128x128x3_float32.npy` in its working directory before it tries
to download it (for every model with a 3-channel 4-D input, quantised or not): we put a
deterministic one there.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edge_anytime.program import GraphSignature

from .cache import ConversionCache
from .common import EXPORTER_VERSION, ExportError, sha256_array, sha256_json, tool_versions
from .onnx2tf_worker import run_job
from .onnx_export import OnnxGraph
from .options import ONNX2TF_SUFFIX, ConversionOptions

#: The conversion recipe; the cache key also holds the source hash of this module and onnx2tf_worker.
CONVERT_VERSION = "2"
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
        "exporter_version": EXPORTER_VERSION, "python": sys.version_info[:2], "source": conversion_source_sha256(),
    })


def _source_sha256() -> str:
    here = Path(__file__).resolve().parent
    return sha256_json({name: (here / name).read_text() for name in ("convert.py", "onnx2tf_worker.py")})


#: Read once, at import: the key must describe the code that runs, not files edited since.
_SOURCE_SHA256 = _source_sha256()


def conversion_source_sha256() -> str:
    """Hash of the code that decides a conversion's bytes (this module and the onnx2tf worker): an edit
    there never reuses a cache entry made by the previous code (a manual CONVERT_VERSION bump is easy
    to forget)."""
    return _SOURCE_SHA256


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

    run_dir = (work_dir / "convert" / graph.name).resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    np.save(run_dir / SAMPLE_FILE, sample_data())
    # onnx2tf rewrites its input file (simplification, op naming): it gets a copy (made by the job), and
    # the exporter's canonical ONNX (the ONNX Runtime reference of the parity checks) stays as exported.
    onnx_copy = run_dir / graph.path.name
    out_dir = run_dir / "out"
    argv = ["-o", str(out_dir), "-n"]
    if kept:
        argv += ["-k", *kept]
    if int8:
        argv += ["-oiqt", "-qt", options.quant_type]
        for port in signature.inputs:
            path = run_dir / f"calib_{port.name}.npy"
            np.save(path, np.ascontiguousarray(calibration[port.name], dtype=np.float32))
            # calibration data are already in the model's input space: identity normalisation
            argv += ["-cind", port.name, str(path), "[0.0]", "[1.0]"]
    log_path = run_dir / "onnx2tf.log"
    result = run_job({"source": str(graph.path.resolve()), "onnx": str(onnx_copy), "run_dir": str(run_dir),
                      "log": str(log_path), "argv": argv, "timeout_s": options.timeout_s})
    if result["timed_out"]:
        raise ExportError(f"graph {graph.name!r}: onnx2tf ran past {options.timeout_s:.0f} s; see {log_path}")
    log_text = log_path.read_text(errors="replace")
    stem = graph.path.stem
    files = {p: out_dir / f"{stem}_{ONNX2TF_SUFFIX[p]}.tflite" for p in produced}
    missing = [p for p, f in files.items() if not f.is_file()]
    if result["returncode"] != 0 or missing:
        raise ExportError(_explain_failure(graph, log_text, result["returncode"], missing, log_path))
    stored = cache.put(key, files, {"graph": graph.name, "onnx_sha256": graph.sha256,
                                    "command": ["onnx2tf", "-i", onnx_copy.name, "-nuo", *_relative(argv, run_dir)]})
    return ConvertedGraph(graph.name, {p: stored[p] for p in precisions}, key, False, tuple(kept))


def _relative(argv: Sequence[str], run_dir: Path) -> list[str]:
    """The command line as recorded in the cache entry: no machine-specific paths."""
    prefix = str(run_dir) + os.sep
    return [a[len(prefix):] if a.startswith(prefix) else a for a in argv]


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
