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
AUTO_MIN_AGREEMENT = 0.99       # ... for each exit where they agree with the primary ones this often


def fallback_exits(bundle: Bundle, precision: str | None, primary: Mapping[str, str], simulated: bool
                   ) -> tuple[str | None, dict[int, float | None]]:
    """Which exits a fallback `precision` (`ControllerOptions.fallback_precision`) answers, without loading a graph:
    (the precision, {exit: how often its argmax agreed with fp32's in the bundle's parity report, None without
    one}). None: none. 'auto': AUTO_FALLBACK on a real clock, for each exit whose slice graphs the bundle holds at
    that precision, none of them already primary (`primary`: graph -> precision) at it, with the parity report
    showing at least AUTO_MIN_AGREEMENT there. An explicit precision answers every exit."""
    if precision is None:
        return None, {}
    program = bundle.program
    agreements = bundle.argmax_agreement(AUTO_FALLBACK if precision == "auto" else precision) or []
    exits = {e.index: agreements[e.index] if e.index < len(agreements) else None for e in program.exits}
    if precision != "auto":
        return precision, exits
    if simulated:
        return None, {}

    def usable(k: int) -> bool:
        return (exits[k] is not None and exits[k] >= AUTO_MIN_AGREEMENT and
                all(primary.get(g) != AUTO_FALLBACK and AUTO_FALLBACK in bundle.manifest.files.get(g, {})
                    for g in slice_graphs(program, k)))

    exits = {k: agreement for k, agreement in exits.items() if usable(k)}
    return (AUTO_FALLBACK if exits else None), exits


def load_fallback(bundle: Bundle, precision: str | None, primary: Mapping[str, str], simulated: bool,
                  backend: Any = "litert", threads: int = 1, **backend_options
                  ) -> tuple[dict, dict[int, float | None]]:
    """The graphs of the exits' a-priori slices at the fallback `precision` that `fallback_exits` picks, loaded,
    and those exits with their agreements. A bundle lacking an explicit precision's graphs is refused with the
    export command that adds them."""
    precision, exits = fallback_exits(bundle, precision, primary, simulated)
    if not exits:
        return {}, {}
    graphs = fallback_graphs(bundle.program, exits)
    return load_runners(bundle, {g: precision for g in graphs}, backend, threads, **backend_options), exits


def slice_graphs(program: Program, exit_index: int) -> set[str]:
    """The graphs exit `exit_index`'s a-priori slice runs."""
    return {program.steps[i].graph for i in program.apriori_plan(exit_index)}


def fallback_graphs(program: Program, exits) -> list[str]:
    """The graphs the a-priori slices of `exits` run (what a fallback precision loads for them), sorted."""
    return sorted(set().union(*(slice_graphs(program, k) for k in exits)))


def covered_exits(program: Program, runners: Mapping) -> list[int]:
    """The exits whose a-priori slices `runners` hold every graph of."""
    return [e.index for e in program.exits if slice_graphs(program, e.index) <= runners.keys()]


def fallback_slices(program: Program, runners: Mapping, fallback_runners: Mapping, exits) -> dict[int, Any]:
    """Each of `exits`' a-priori slices bound to `fallback_runners` (which hold its graphs)."""
    if not fallback_runners:
        return {}
    slices = ProgramInterpreter(program, {**runners, **fallback_runners}).slices
    return {k: slices[k] for k in exits}


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
