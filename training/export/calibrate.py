"""Per-stage int8 calibration data from real images.

The first graph calibrates on real training images (through the model's normalisation). Every
later graph calibrates on the features that the earlier stages (the torch reference) compute on
those same images, so each graph sees the activation ranges it will see on the device. A graph
that several steps run (AnytimeNet re-executes later sections on refined features) calibrates on
the inputs of all of its steps.

>>> select_indices(10, 4, seed=0).tolist()
[2, 4, 5, 7]
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from edge_anytime.program import Program

from ..stages import run_staged_env

from .convert import tf_layout


def select_indices(total: int, count: int, seed: int) -> np.ndarray:
    """A deterministic, sorted sample of `count` of `total` indices (the training split is sorted by class)."""
    if count >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))


def reference_env(staged, images: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Run the stage program with torch on `images` (N, C, H, W), preprocessed; every tensor of the
    environment, stacked over the N images (float32 numpy). Eval mode, as the ONNX files were
    exported (each module's own mode restored after)."""
    import torch

    from .onnx_export import eval_mode

    chunks: dict[str, list[np.ndarray]] = {}
    with torch.no_grad(), eval_mode(*staged.graph_modules.values()):
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size], np.float32))
            env = run_staged_env(staged, batch)
            for tensor, value in env.items():
                chunks.setdefault(tensor, []).append(value.detach().cpu().numpy().astype(np.float32, copy=False))
    return {tensor: np.concatenate(parts) for tensor, parts in chunks.items()}


def graph_inputs(program: Program, env: Mapping[str, np.ndarray], graph: str) -> dict[str, np.ndarray]:
    """{input port: samples (M, ...)}: the values every step of `graph` reads, concatenated."""
    steps = [program.steps[i] for i in program.steps_for_graph(graph)]
    return {port.name: np.concatenate([env[step.inputs[port.name]] for step in steps])
            for port in program.graphs[graph].inputs}


def calibration_arrays(program: Program, env: Mapping[str, np.ndarray], graph: str,
                       kept_nchw: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Calibration arrays of one graph in the converter's (TF-side) layout."""
    return {port: tf_layout(samples, port in kept_nchw) for port, samples in graph_inputs(program, env, graph).items()}


def calibration_summary(program: Program, env: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """Per graph and input: samples, min, max, 99.9th percentile of |x| (what int8 ranges are fitted to)."""
    summary = {}
    for graph in program.graphs:
        summary[graph] = {}
        for port, samples in graph_inputs(program, env, graph).items():
            summary[graph][port] = {"samples": int(len(samples)), "min": round(float(samples.min()), 4),
                                    "max": round(float(samples.max()), 4),
                                    "p999_abs": round(float(np.quantile(np.abs(samples), 0.999)), 4)}
    return summary
