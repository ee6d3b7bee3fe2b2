"""Loading every graph of a bundle with one backend, and running a stage program without a controller.

Shared by the controller, the self-test, the profiler and the benchmarks; every program runs through
the one `ProgramInterpreter`.

>>> runners = load_runners(bundle, {"segment0": "fp32", ...}, backend="litert")      # doctest: +SKIP
>>> env = run_program(bundle.program, runners, tensor)                               # doctest: +SKIP
>>> close_runners(runners)                                                           # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from .backends.base import GraphLoadSpec, create_backend
from .bundle import Bundle
from .interpreter import ProgramInterpreter
from .program import Program


def load_runners(bundle: Bundle, precisions: Mapping[str, str], backend: Any = "litert", threads: int = 1,
                 **backend_options) -> dict:
    """One runner per graph with `backend` (a registered name or a Backend object); all closed again if
    one fails to load."""
    if isinstance(backend, str):
        if backend in ("litert", "tflite_runtime"):
            backend_options.setdefault("num_threads", threads)
        engine = create_backend(backend, **backend_options)
    else:
        engine = backend
    runners = {}
    try:
        for graph, precision in precisions.items():
            graph_file = bundle.graph_file(graph, precision)
            spec = GraphLoadSpec(bundle.program.graphs[graph], precision, graph_file, bundle.path_of(graph_file.path))
            runners[graph] = engine.load_graph(spec)
    except Exception:
        close_runners(runners)
        raise
    return runners


AUTO_FALLBACK = "int8"          # fallback_precision="auto": these graphs, ...
AUTO_MIN_AGREEMENT = 0.99       # ... when they agree with the primary ones this often at the first exit


def load_fallback(bundle: Bundle, precision: str | None, primary: Mapping[str, str], simulated: bool,
                  backend: Any = "litert", threads: int = 1, **backend_options) -> tuple[dict, float | None]:
    """The graphs of the first exit's slice at the fallback `precision` (`ControllerOptions.fallback_precision`)
    and how often that exit's argmax agreed with fp32's in the bundle's parity report (None without one).
    None: no fallback. 'auto': AUTO_FALLBACK on a real clock when the bundle holds those graphs, the primary
    ones (`primary`: graph -> precision) are not already at it, and the parity report shows at least
    AUTO_MIN_AGREEMENT; else none. An explicit precision the bundle lacks is refused with the export
    command that adds it."""
    program = bundle.program
    first = program.anytime_segments()[0].exit_index
    graphs = sorted({program.steps[i].graph for i in program.apriori_plan(first)})
    if precision is None:
        return {}, None
    agreements = bundle.argmax_agreement(AUTO_FALLBACK if precision == "auto" else precision)
    agreement = agreements[first] if agreements and first < len(agreements) else None
    if precision == "auto":
        usable = (not simulated and agreement is not None and agreement >= AUTO_MIN_AGREEMENT
                  and all(primary.get(g) != AUTO_FALLBACK and AUTO_FALLBACK in bundle.manifest.files.get(g, {})
                          for g in graphs))
        if not usable:
            return {}, None
        precision = AUTO_FALLBACK
    return load_runners(bundle, {g: precision for g in graphs}, backend, threads, **backend_options), agreement


def fallback_slice(program: Program, runners: Mapping, fallback_runners: Mapping):
    """The first exit's a-priori slice bound to `fallback_runners` (its graphs), or None without them."""
    if not fallback_runners:
        return None
    first = program.anytime_segments()[0].exit_index
    return ProgramInterpreter(program, {**runners, **fallback_runners}).slices[first]


def close_runners(runners: Mapping) -> None:
    for runner in runners.values():
        runner.close()


def run_program(program: Program, runners: Mapping, tensor: np.ndarray, timer=None,
                now=time.perf_counter) -> dict[str, np.ndarray]:
    """Every step of the anytime plan on one preprocessed input; returns the tensor environment.

    A shorthand for `ProgramInterpreter(program, runners).run_all(...)` (the one interpreter).
    `timer(step, seconds)`, if given, receives each bound step and its latency measured with `now`.
    """
    return ProgramInterpreter(program, runners).run_all(tensor, timer=timer, now=now)
