"""Parity of the converted graphs: torch vs ONNX Runtime vs LiteRT, chained as the device chains them.

Every backend runs the whole stage program frame by frame (batch 1), step after step, each step
reading its inputs from the frame's tensor environment, exactly as `edge_anytime.plan` does on the
device; so the numbers include every layout transpose and (de)quantisation of the real path.
For each backend/precision and exit: max and mean |delta logits| against torch, argmax agreement
with torch, and accuracy on the labelled test images. For int8: the drift of each graph alone
(that graph int8, the rest fp32) per exit, and the greedy per-graph choice under a drift budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from edge_anytime.backends import GraphLoadSpec
from edge_anytime.program import Program
from edge_anytime.runners import run_program


def chain_logits(program: Program, runners: Mapping, images: np.ndarray, keep: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """{exit tensor (and each tensor in keep): (N, ...)} for images (N, C, H, W) run one by one."""
    wanted = list(dict.fromkeys(exit_tensors(program) + list(keep)))
    out: dict[str, list] = {t: [] for t in wanted}
    for image in images:
        env = run_program(program, runners, np.ascontiguousarray(image[None], np.float32))
        for tensor in wanted:
            out[tensor].append(np.asarray(env[tensor], np.float32)[0])
    return {t: np.stack(v) for t, v in out.items()}


def exit_tensors(program: Program) -> list[str]:
    """The tensors parity compares: every exit's logits, and its coarse logits where it has them."""
    tensors = [e.tensor for e in program.exits]
    return tensors + [e.coarse_tensor for e in program.exits if e.coarse_tensor and e.coarse_tensor not in tensors]


def _delta(got: np.ndarray, want: np.ndarray) -> dict:
    delta = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return {"max_abs_delta": float(delta.max()), "mean_abs_delta": float(delta.mean()),
            "argmax_agreement": float(np.mean(got.argmax(-1) == want.argmax(-1)))}


def compare(program: Program, logits: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
            labels: np.ndarray | None) -> list[dict]:
    """Per exit: max/mean |delta| and argmax agreement against `reference`, accuracy against labels;
    for an exit with a coarse head (hierarchical models) the same for its coarse logits, under "coarse"."""
    rows = []
    for exit_ in program.exits:
        got, want = logits[exit_.tensor], reference[exit_.tensor]
        row = {"exit": exit_.index, "tensor": exit_.tensor, **_delta(got, want)}
        if labels is not None:
            row["accuracy"] = float(np.mean(got.argmax(-1) == labels))
        coarse = exit_.coarse_tensor
        if coarse and coarse in logits and coarse in reference:
            row["coarse"] = {"tensor": coarse, **_delta(logits[coarse], reference[coarse])}
        rows.append(row)
    return rows


def agreement_drop(program: Program, logits: Mapping[str, np.ndarray], baseline: Mapping[str, np.ndarray]) -> list[float]:
    """Per exit: 1 - argmax agreement with the baseline (the fp32 LiteRT plan)."""
    return [float(1.0 - np.mean(logits[e.tensor].argmax(-1) == baseline[e.tensor].argmax(-1))) for e in program.exits]


@dataclass
class RunnerPool:
    """Loads each (graph, precision) runner once; `make(graph, precision)` builds one."""

    make: Callable[[str, str], object]

    def __post_init__(self) -> None:
        self._runners: dict[tuple[str, str], object] = {}

    def get(self, graph: str, precision: str):
        key = (graph, precision)
        if key not in self._runners:
            self._runners[key] = self.make(graph, precision)
        return self._runners[key]

    def plan(self, precisions: Mapping[str, str]) -> dict[str, object]:
        return {graph: self.get(graph, precision) for graph, precision in precisions.items()}

    def close(self) -> None:
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()


def litert_pool(program: Program, files: Mapping[str, Mapping[str, object]], root) -> RunnerPool:
    """Runners of the bundle files being written (`files`: graph -> precision -> GraphFile)."""
    from edge_anytime.backends import create_backend

    backend = create_backend("litert", num_threads=1)

    def make(graph: str, precision: str):
        graph_file = files[graph][precision]
        return backend.load_graph(GraphLoadSpec(program.graphs[graph], precision, graph_file, root / graph_file.path))

    return RunnerPool(make)


def evaluate(program: Program, torch_logits: Mapping[str, np.ndarray], images: np.ndarray, labels: np.ndarray | None,
             pool: RunnerPool, precisions: Sequence[str], onnx_files: Mapping[str, object] | None,
             drift_budget: float | None, flops: Mapping[str, int], progress=None) -> dict:
    """The parity report (see the module docstring); JSON-able."""
    report: dict = {"samples": int(len(images)), "reference": "torch (eval mode, batch of images)", "backends": {}}
    if labels is not None:
        report["torch_accuracy"] = [float(np.mean(torch_logits[e.tensor].argmax(-1) == labels)) for e in program.exits]
    tick = progress or (lambda *_: None)

    if onnx_files:
        from edge_anytime.backends import create_backend

        ort = create_backend("onnxruntime", files=onnx_files, num_threads=1)
        runners = {g: ort.load_graph(GraphLoadSpec(program.graphs[g])) for g in program.graphs}
        report["backends"]["onnxruntime"] = {"exits": compare(program, chain_logits(program, runners, images),
                                                               torch_logits, labels)}
        for runner in runners.values():
            runner.close()
        tick("parity onnxruntime")

    chains: dict[str, dict[str, np.ndarray]] = {}
    for precision in precisions:
        plan = {g: precision for g in program.graphs}
        chains[precision] = chain_logits(program, pool.plan(plan), images)
        report["backends"][f"litert:{precision}"] = {"precisions": plan,
                                                     "exits": compare(program, chains[precision], torch_logits, labels)}
        tick(f"parity litert {precision}")

    if "int8" in precisions and len(program.graphs) > 0:
        drift = {}
        for graph in program.graphs:
            plan = {g: ("int8" if g == graph else "fp32") for g in program.graphs}
            logits = chain_logits(program, pool.plan(plan), images)
            rows = compare(program, logits, chains["fp32"], None)
            drops = agreement_drop(program, logits, chains["fp32"])
            for row, drop in zip(rows, drops):
                row["agreement_drop"] = drop
            drift[graph] = {"exits": rows, "max_agreement_drop": max(drops),
                            "affects_exits": [r["exit"] for r in rows if r["max_abs_delta"] > 0]}
        report["int8_drift"] = {"baseline": "litert:fp32", "graphs": drift}
        tick("int8 drift per graph")
        if drift_budget is not None:
            report["mixed"] = choose_mixed(program, pool, images, chains["fp32"], torch_logits, labels, drift,
                                           drift_budget, flops)
            tick("mixed precision")
    return report


def choose_mixed(program: Program, pool: RunnerPool, images: np.ndarray, fp32_logits, torch_logits, labels,
                 drift: Mapping[str, dict], budget: float, flops: Mapping[str, int]) -> dict:
    """Greedy: try graphs in order of their own drift (then larger FLOPs first); keep int8 for a graph only
    if, with it, every exit's argmax agreement with the fp32 plan drops by at most `budget`."""
    order = sorted(program.graphs, key=lambda g: (drift[g]["max_agreement_drop"], -flops.get(g, 0), g))
    chosen = {g: "fp32" for g in program.graphs}
    trail = []
    drops = [0.0] * len(program.exits)
    logits = fp32_logits
    for graph in order:
        trial = dict(chosen, **{graph: "int8"})
        trial_logits = chain_logits(program, pool.plan(trial), images)
        trial_drops = agreement_drop(program, trial_logits, fp32_logits)
        accepted = max(trial_drops) <= budget + 1e-12
        trail.append({"graph": graph, "accepted": accepted, "agreement_drop": trial_drops})
        if accepted:
            chosen, drops, logits = trial, trial_drops, trial_logits
    return {"budget": budget, "recommended_precision": chosen, "agreement_drop": drops, "trail": trail,
            "exits": compare(program, logits, torch_logits, labels)}


def gate(report: dict, atol: float) -> dict:
    """The float32 target: max |delta| <= atol and 100% argmax agreement on every exit."""
    rows = report["backends"]["litert:fp32"]["exits"]
    rows = rows + [r["coarse"] for r in rows if "coarse" in r]  # coarse heads are held to the same gate
    worst = max(r["max_abs_delta"] for r in rows)
    agreement = min(r["argmax_agreement"] for r in rows)
    return {"fp32_atol": atol, "max_abs_delta": worst, "min_argmax_agreement": agreement,
            "passed": bool(worst <= atol and agreement == 1.0)}


def to_markdown(report: dict, title: str) -> str:
    """A readable parity.md from the report."""
    lines = [f"# Parity report: {title}", "",
             f"{report['samples']} real test images, each run as one frame through every step of the plan "
             f"(batch 1), against {report['reference']}.", ""]
    g = report.get("gate")
    if g:
        verdict = "PASSED" if g["passed"] else "FAILED"
        lines += [f"**float32 gate {verdict}**: max |delta logits| {g['max_abs_delta']:.2e} (target <= "
                  f"{g['fp32_atol']:.0e}), min argmax agreement {g['min_argmax_agreement']:.2%} (target 100%).", ""]
    if "torch_accuracy" in report:
        lines += ["torch accuracy per exit: " + ", ".join(f"{a:.2%}" for a in report["torch_accuracy"]), ""]
    lines += ["| backend | exit | max abs delta | mean abs delta | argmax agreement | accuracy |",
              "|---|---|---|---|---|---|"]
    backends = dict(report["backends"])
    if "mixed" in report:
        backends["litert:mixed"] = {"exits": report["mixed"]["exits"]}
    for name, entry in backends.items():
        for row in entry["exits"]:
            acc = f"{row['accuracy']:.2%}" if "accuracy" in row else "-"
            lines.append(f"| {name} | {row['exit']} | {row['max_abs_delta']:.2e} | {row['mean_abs_delta']:.2e} | "
                         f"{row['argmax_agreement']:.2%} | {acc} |")
            if "coarse" in row:
                c = row["coarse"]
                lines.append(f"| {name} | {row['exit']} coarse | {c['max_abs_delta']:.2e} | {c['mean_abs_delta']:.2e} | "
                             f"{c['argmax_agreement']:.2%} | - |")
    if "int8_drift" in report:
        lines += ["", "## int8 drift per graph (that graph int8, all others fp32; against the fp32 plan)", "",
                  "| graph | exit | max abs delta | argmax agreement drop |", "|---|---|---|---|"]
        for graph, entry in report["int8_drift"]["graphs"].items():
            for row in entry["exits"]:
                if row["max_abs_delta"] == 0:
                    continue
                lines.append(f"| {graph} | {row['exit']} | {row['max_abs_delta']:.3f} | {row['agreement_drop']:.2%} |")
    if "mixed" in report:
        mixed = report["mixed"]
        lines += ["", f"## Mixed precision (drift budget {mixed['budget']:.2%} argmax agreement per exit)", "",
                  "recommended: " + ", ".join(f"{g}={p}" for g, p in mixed["recommended_precision"].items()),
                  "", "agreement drop per exit: " + ", ".join(f"{d:.2%}" for d in mixed["agreement_drop"])]
    if "port_mapping" in report:
        fallbacks = {f"{g}.{p}": m["fallbacks"] for g, per in report["port_mapping"].items()
                     for p, m in per.items() if m["fallbacks"]}
        if fallbacks:
            verdict = (f"fallbacks (the name or layout predicted from names and shapes did not hold; mapped by "
                       f"the numeric check): {fallbacks}")
        else:
            verdict = "every predicted name and layout held (no fallback used)."
        lines += ["", "## Port mapping", "", "Every port is mapped by signature name and shape, then checked on a "
                  "probe frame against ONNX Runtime; " + verdict]
    return "\n".join(lines) + "\n"
