"""Experiment `anytimenet-bn`: AnytimeNet with shared vs per-iteration BatchNorm, against BASELINE.

A group of blocks that AnytimeNet re-executes (and its shared OUT block) sees a different input
distribution at every iteration, while its BatchNorm layers keep one set of running statistics.
This experiment trains the same AnytimeNet (the paper's schedule, eq. 4 weights) three ways,
`iteration_bn` = shared (one BatchNorm per layer), stats (own running statistics per iteration)
and affine (own statistics and scale/shift per iteration: the default, so its run is the
`anytimenet` experiment's), plus BASELINE,
and reports test accuracy per iteration as deployed (running statistics), whether it is monotone,
and the final iteration against BASELINE.

    python -m training.experiments anytimenet-bn --epochs 4 --limit-train 8000
"""

from __future__ import annotations

import dataclasses

from .anytimenet import AnytimeNetSpec, verdict
from .common import ExperimentConfig, RunSpec, column, markdown_table, pct, schedule_note, total_train_seconds, \
    train_run, write_result

MODES = ("shared", "stats", "affine")
DEFAULT = "affine"  # AnytimeNet's default: its run is the `anytimenet` experiment's, shared through the cache


def storage(spec: RunSpec, num_classes: int = 43) -> tuple[int, int, int]:
    """(distinct trainable parameters, parameters summed over the stage program's graphs, graphs)."""
    from ..models import create_model

    model = create_model(spec.arch, num_classes=num_classes, **spec.arch_kwargs)
    graphs = model.stage_program().program.graphs
    return (sum(p.numel() for p in model.parameters()), sum(g.params for g in graphs.values()), len(graphs))


def run(config: ExperimentConfig, spec: AnytimeNetSpec = AnytimeNetSpec()) -> dict:
    specs = {mode: RunSpec("anytimenet" if mode == DEFAULT else f"anytimenet-bn-{mode}", "anytimenet",
                           {**spec.anytime_kwargs(), **({} if mode == DEFAULT else {"iteration_bn": mode})},
                           "anytimenet") for mode in MODES}
    specs["BASELINE"] = RunSpec("anytimenet-baseline", "anytimenet-baseline", spec.baseline_kwargs(), "const")
    runs = {k: train_run(s, config, f"[{i + 1}/{len(specs)}] ") for i, (k, s) in enumerate(specs.items())}
    base = runs["BASELINE"]["exits"][0]["test_accuracy"]
    n = runs["BASELINE"]["num_test"] or 0
    rows, answers = [], []
    for mode in MODES:
        acc = column(runs[mode], "test_accuracy")
        word, half = verdict(acc[-1], base, n)
        # monotone within noise: no drop larger than the 95% band of one proportion on n images
        band = 1.96 * max(max(a * (1 - a) for a in acc), 1e-12) ** 0.5 / max(n, 1) ** 0.5
        monotone = all(y >= x - band for x, y in zip(acc, acc[1:]))
        rows.append([mode] + [pct(a) for a in acc] + ["yes" if monotone else "no", word])
        answers.append(f"{mode}: final {100 * acc[-1]:.2f}% ({word} BASELINE, +-{half:.2f} pp), "
                       f"{'monotone' if monotone else 'NOT monotone'} within noise")
    iterations = len(column(runs["shared"], "test_accuracy"))
    table = markdown_table(
        "AnytimeNet test accuracy % per iteration, as deployed (BatchNorm running statistics)",
        ["iteration_bn"] + [f"it {j + 1}" for j in range(iterations)] + ["monotone", "final vs BASELINE"],
        rows, f"{schedule_note(config)}. Widths {list(spec.widths)}; BASELINE (same widths, final depth, one exit): "
              f"{100 * base:.2f}%.")
    params = markdown_table("Storage per variant", ["variant", "trainable parameters", "parameters stored in the "
                            "stage graphs", "graphs"], [[k, *storage(specs[k])] for k in specs],
                            f"{schedule_note(config)}. A re-executed group with its own BatchNorm is its own graph, "
                            f"so its convolution weights are stored once per iteration that runs it.")
    answer = f"BASELINE {100 * base:.2f}%. " + "; ".join(answers) + "."
    result = {"spec": dataclasses.asdict(spec), "runs": runs, "baseline_accuracy": base, "answer": answer,
              "tables": [table, params], "train_seconds": total_train_seconds(list(runs.values()))}
    write_result("anytimenet-bn", config, result)
    print(answer, flush=True)
    return result
