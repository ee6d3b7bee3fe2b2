"""Explicit, checked port mapping of a converted .tflite file (manifest `inputs`/`outputs`/`transpose`).

What onnx2tf 1.29.24 does to names and layouts (measured, docs/toolchain.md):
- signature input names are the ONNX input names in every variant;
- float32/float16 signature outputs keep the ONNX output names; the int8 (integer_quant) file
  renames them `output_0, output_1, ...` in ONNX output order; raw `get_output_details()` order
  is not reliable in any variant;
- a 4-D input is NHWC unless kept NCHW with `-k`; a 4-D output is usually transposed back to NCHW,
  but not always: a conv+relu graph with an NHWC input, and a (1, 8, 8, 8) output (C == H == W,
  where shapes cannot tell), were measured to stay NHWC.

So a port is first matched by its expected signature name and by shape (under the identity or
the NCHW->NHWC permutation), and the match is then *checked numerically*: the file runs on a probe
input and each output is compared with the reference (ONNX Runtime) under every candidate
(name, permutation) whose shape fits. The best candidate wins; if it is not the one the names
predicted, the fallback is recorded (`fallbacks`), and a float file whose best candidate is still
far from the reference is an error (a wrong mapping never reaches the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edge_anytime.program import GraphSignature

from .common import ExportError

NHWC = (0, 2, 3, 1)
SIGNATURE = "serving_default"


@dataclass(frozen=True)
class PortMapping:
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    transpose: Mapping[str, tuple[int, ...]]
    errors: Mapping[str, float] = field(default_factory=dict)  # output port -> max |delta| on the probe
    fallbacks: tuple[str, ...] = ()  # ports whose expected name did not hold (mapped by the numeric check)


def _permuted(shape: Sequence[int], perm: tuple[int, ...] | None) -> tuple[int, ...]:
    return tuple(shape[a] for a in perm) if perm else tuple(shape)


def channel_last(rank: int) -> tuple[int, ...] | None:
    """The channel-first -> channel-last permutation of a 3-D, 4-D (NHWC) or 5-D tensor."""
    return (0, *range(2, rank), 1) if rank in (3, 4, 5) else None


def _candidate_perms(shape: tuple[int, ...], file_shape: tuple[int, ...]) -> list[tuple[int, ...] | None]:
    perms = []
    if file_shape == tuple(shape):
        perms.append(None)
    last = channel_last(len(shape))
    if last is not None and file_shape == _permuted(shape, last):
        perms.append(last)
    return perms


def expected_output_name(port_index: int, port_name: str, precision: str) -> str:
    return f"output_{port_index}" if precision == "int8" else port_name


def resolve_ports(path: str | Path, signature: GraphSignature, precision: str, kept_nchw: Sequence[str],
                  probe: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> PortMapping:
    """Map `signature`'s ports to the file's signature tensors, checked on `probe` against `reference`.

    probe: {input port: array in program layout (NCHW)}; reference: {output port: expected array}.
    """
    from ai_edge_litert.interpreter import Interpreter

    path = Path(path)
    where = f"graph {signature.name!r} ({precision}, {path.name})"
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    signatures = interpreter.get_signature_list()
    if SIGNATURE not in signatures:
        raise ExportError(f"{where}: the file has no {SIGNATURE!r} signature (it has {sorted(signatures)}); "
                          f"this converter variant cannot be mapped by name")
    runner = interpreter.get_signature_runner(SIGNATURE)
    in_details = runner.get_input_details()
    out_details = runner.get_output_details()

    inputs, transpose = {}, {}
    for port in signature.inputs:
        if port.name not in in_details:
            raise ExportError(f"{where}: input port {port.name!r} is not a signature input "
                              f"(the file has {sorted(in_details)})")
        file_shape = tuple(int(d) for d in in_details[port.name]["shape"])
        perms = _candidate_perms(port.shape, file_shape)
        if not perms:
            raise ExportError(f"{where}: input {port.name!r} has shape {file_shape} in the file, the program says "
                              f"{port.shape} (neither channel-first nor channel-last)")
        asked = None if port.name in kept_nchw else channel_last(len(port.shape))
        perm = asked if asked in perms else perms[0]
        inputs[port.name] = port.name
        if perm:
            transpose[port.name] = perm

    feed = {}
    for port in signature.inputs:
        value = np.asarray(probe[port.name], np.float32)
        perm = transpose.get(port.name)
        feed[port.name] = np.ascontiguousarray(value.transpose(perm) if perm else value)
    try:
        produced = runner(**feed)
    except Exception as exc:
        raise ExportError(f"{where}: the probe run failed: {exc}") from exc

    outputs, errors, fallbacks, taken = {}, {}, [], set()
    for index, port in enumerate(signature.outputs):
        expected_name = expected_output_name(index, port.name, precision)
        want = np.asarray(reference[port.name], np.float32)
        scored = []
        for name, detail in out_details.items():
            if name in taken:
                continue
            file_shape = tuple(int(d) for d in detail["shape"])
            for perm in _candidate_perms(port.shape, file_shape):
                inverse = tuple(np.argsort(perm)) if perm else None
                got = np.asarray(produced[name], np.float32)
                got = got.transpose(inverse) if inverse else got
                err = float(np.max(np.abs(got - want))) if got.size else 0.0
                predicted = name == expected_name and perm == _predicted_perm(port.shape, file_shape, kept_nchw)
                scored.append((err, not predicted, name, perm))
        if not scored:
            raise ExportError(f"{where}: no signature output has the shape of port {port.name!r} {port.shape} "
                              f"(outputs: { {k: tuple(int(d) for d in v['shape']) for k, v in out_details.items()} })")
        scored.sort(key=lambda s: (s[0], s[1]))
        err, not_predicted, name, perm = scored[0]
        predicted = [s for s in scored if not s[1]]
        if predicted and predicted[0][0] <= 2 * err + 1e-6:  # the names' prediction holds (allowing quantisation noise)
            err, not_predicted, name, perm = predicted[0]
        if not_predicted:
            fallbacks.append(port.name)
        scale = float(np.max(np.abs(want))) if want.size else 1.0
        if precision == "fp32" and err > 1e-3 * max(1.0, scale):
            raise ExportError(f"{where}: output {port.name!r} does not match the reference under any mapping "
                              f"(best: {name!r}, transpose {perm}, max |delta| {err:.3g}); the conversion is wrong")
        taken.add(name)
        outputs[port.name] = name
        errors[port.name] = err
        if perm:
            transpose[port.name] = perm
    return PortMapping(inputs, outputs, transpose, errors, tuple(fallbacks))


def _predicted_perm(shape: tuple[int, ...], file_shape: tuple[int, ...], kept_nchw: Sequence[str]):
    """The layout we expect from shapes alone (identity when it fits, else NHWC)."""
    return None if file_shape == tuple(shape) else channel_last(len(shape))
