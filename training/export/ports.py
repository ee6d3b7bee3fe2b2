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
the NCHW->NHWC permutation), and the match is then *checked numerically*: the file runs on a few
probe frames and each output is compared with the reference (ONNX Runtime) under every candidate
(name, permutation) whose shape fits; ports are assigned globally, closest pair first. If the best
candidate is not the one the names predicted, the fallback is recorded (`fallbacks`). A float32
file whose best candidate is still far from the reference is an error, and so is, in any
precision, a port for which another tensor or layout with different values fits about as well
(graphs with many same-shape ports, IS-ResNeXt's cached slices, and cubic shapes such as
(1, 8, 8, 8), where NCHW and NHWC have the same shape): a wrong mapping never reaches the manifest.
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


def _frames(value, shape: tuple[int, ...], what: str) -> np.ndarray:
    """(F, *shape) float32 from one port-shaped array or a stack of F of them."""
    array = np.asarray(value, np.float32)
    if array.shape == tuple(shape):
        return array[None]
    if array.ndim == len(shape) + 1 and array.shape[1:] == tuple(shape):
        return array
    raise ExportError(f"{what} has shape {array.shape}; expected {tuple(shape)} or (frames, *{tuple(shape)})")


def resolve_ports(path: str | Path, signature: GraphSignature, precision: str, kept_nchw: Sequence[str],
                  probe: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> PortMapping:
    """Map `signature`'s ports to the file's signature tensors, checked on `probe` against `reference`.

    probe: {input port: one frame in program layout (NCHW), or a stack of frames (F, *port shape)};
    reference: {output port: the expected output(s), same convention}. Several frames make the check
    sharper (a graph with many outputs of one shape, or an int8 file, on one frame only is weaker).

    Every (output port, file tensor, layout) whose shape fits is scored by max |delta| over the frames,
    relative to the port's scale; ports are assigned globally, best pair first, one file tensor each.
    A port keeps the name/layout predicted from names and shapes when that is within 2x of its best
    candidate (quantisation noise); otherwise the best is used and listed in `fallbacks`. The mapping
    is refused (ExportError) when it is not exact: a float32 output off by more than 1e-3 (relative)
    under its best mapping, or any output for which a *different* tensor or layout, nearly as close
    to the reference (within 2x), exists — the probe could not tell which one it is.
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

    feeds = {p.name: _frames(probe[p.name], p.shape, f"{where}: probe {p.name!r}") for p in signature.inputs}
    wants = {p.name: _frames(reference[p.name], p.shape, f"{where}: reference {p.name!r}") for p in signature.outputs}
    count = {len(v) for v in list(feeds.values()) + list(wants.values())}
    if len(count) != 1:
        raise ExportError(f"{where}: probe and reference hold different numbers of frames {sorted(count)}")
    produced: dict[str, list[np.ndarray]] = {name: [] for name in out_details}
    for f in range(count.pop()):
        feed = {}
        for port in signature.inputs:
            perm = transpose.get(port.name)
            value = feeds[port.name][f]
            feed[port.name] = np.ascontiguousarray(value.transpose(perm) if perm else value)
        try:
            result = runner(**feed)
        except Exception as exc:
            raise ExportError(f"{where}: the probe run failed: {exc}") from exc
        for name in out_details:
            produced[name].append(np.asarray(result[name], np.float32))

    # Every candidate (port, file tensor, layout): its values in program layout and relative error.
    candidates: dict[str, list[tuple[float, bool, str, tuple | None, np.ndarray]]] = {}
    scales = {}
    for index, port in enumerate(signature.outputs):
        want = wants[port.name]
        scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
        scales[port.name] = scale
        expected_name = expected_output_name(index, port.name, precision)
        rows = []
        for name, detail in out_details.items():
            file_shape = tuple(int(d) for d in detail["shape"])
            for perm in _candidate_perms(port.shape, file_shape):
                got = np.stack(produced[name])
                if perm:
                    got = got.transpose(0, *(1 + a for a in np.argsort(perm)))
                err = float(np.max(np.abs(got - want))) / scale if got.size else 0.0
                predicted = name == expected_name and perm == _predicted_perm(port.shape, file_shape, kept_nchw)
                rows.append((err, predicted, name, perm, got))
        if not rows:
            raise ExportError(f"{where}: no signature output has the shape of port {port.name!r} {port.shape} "
                              f"(outputs: { {k: tuple(int(d) for d in v['shape']) for k, v in out_details.items()} })")
        candidates[port.name] = sorted(rows, key=lambda r: (r[0], not r[1]))

    # Global assignment: the closest (port, tensor) pair first, each file tensor used once.
    chosen: dict[str, tuple] = {}
    taken: set[str] = set()
    pairs = sorted(((row[0], not row[1], port, i) for port, rows in candidates.items() for i, row in enumerate(rows)),
                   key=lambda t: (t[0], t[1]))
    for _, _, port, i in pairs:
        if port in chosen or candidates[port][i][2] in taken:
            continue
        best = candidates[port][i]
        predicted = [r for r in candidates[port] if r[1] and r[2] not in taken]
        if predicted and predicted[0][0] <= 2 * best[0] + 1e-6:  # the names' prediction holds (within noise)
            best = predicted[0]
        chosen[port] = best
        taken.add(best[2])
    missing = [p.name for p in signature.outputs if p.name not in chosen]
    if missing:
        raise ExportError(f"{where}: output ports {missing} found no file tensor of their shape left "
                          f"(file outputs: {sorted(out_details)})")

    outputs, errors, fallbacks = {}, {}, []
    for port in signature.outputs:
        err, predicted, name, perm, got = chosen[port.name]
        scale = scales[port.name]
        if precision == "fp32" and err > 1e-3:
            raise ExportError(f"{where}: output {port.name!r} does not match the reference under any mapping "
                              f"(best: {name!r}, transpose {perm}, max |delta| {err * scale:.3g}); the conversion "
                              f"is wrong")
        for other_err, _, other_name, other_perm, other in candidates[port.name]:
            if (other_name, other_perm) == (name, perm) or other_err > 2 * err + 1e-6:
                continue
            if float(np.max(np.abs(other - got))) / scale > err + 1e-6:  # a different tensor, as close
                raise ExportError(
                    f"{where}: output {port.name!r} cannot be mapped exactly: {name!r} (transpose {perm}) is "
                    f"off by {err * scale:.3g} and {other_name!r} (transpose {other_perm}), which holds other "
                    f"values, by {other_err * scale:.3g}; the probe frames cannot tell them apart")
        if not predicted:
            fallbacks.append(port.name)
        outputs[port.name] = name
        errors[port.name] = err * scale
        if perm:
            transpose[port.name] = perm
    return PortMapping(inputs, outputs, transpose, errors, tuple(fallbacks))


def _predicted_perm(shape: tuple[int, ...], file_shape: tuple[int, ...], kept_nchw: Sequence[str]):
    """The layout we expect from shapes alone (identity when it fits, else NHWC)."""
    return None if file_shape == tuple(shape) else channel_last(len(shape))
