"""Experiment `anytimenet`: AnytimeNet vs BASELINE (anytimenet-kim-bradford-shao.md Fig. 3, Tables I and II).

Trains AnytimeNet (eq. 4 weights, the paper's 7-iteration schedule, narrow widths) and
BASELINE (the final network, one exit, same widths), then:

- Fig. 3: test accuracy and confidence (eq. 5) of every iteration against the
  *cumulative* time and FLOPs per image of running the stage program in anytime mode
  (cached features, re-executed groups), BASELINE as one point; a PNG plot.
- Table I: cumulative block counts from the stage program (`block_table`).
- Table II: average time per executed block, per iteration, over all iterations and
  for BASELINE, plus time and FLOPs per block of each type (IN, SEC 1-3, OUT).

Times are torch CPU wall-clock per image (each step timed on batches of test images,
the minimum over a few repeats), on however many threads the CLI set.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .common import ExperimentConfig, RunSpec, column, markdown_table, pct, schedule_note, total_train_seconds, \
    train_run, write_result


@dataclass(frozen=True)
class AnytimeNetSpec:
    """Widths of the three sections, the insertion schedule (None: the paper's) and the timing set-up."""

    widths: tuple[int, ...] = (8, 16, 32)
    schedule: tuple | None = None
    timing_images: int = 1024
    timing_batch: int = 256
    repeats: int = 5

    def anytime_kwargs(self) -> dict:
        kwargs = {"widths": list(self.widths)}
        if self.schedule is not None:
            kwargs["schedule"] = [list(e) for e in self.schedule]
        return kwargs

    def baseline_kwargs(self) -> dict:
        from ..models.anytimenet import DEFAULT_SCHEDULE, _final_blocks

        schedule = DEFAULT_SCHEDULE if self.schedule is None else self.schedule
        return {"widths": list(self.widths), "blocks": list(_final_blocks([1] * len(self.widths), schedule))}


def time_steps(staged, images, batch: int, repeats: int) -> list[float]:
    """Seconds per image of every step of `staged.program` (torch, no grad): each repeat sums a
    step's time over all batches; the minimum over repeats is kept. One warm-up batch first."""
    import torch

    program = staged.program
    best = [math.inf] * len(program.steps)
    with torch.no_grad():
        for r in range(repeats + 1):
            totals = [0.0] * len(program.steps)
            for start in range(0, len(images) if r else min(batch, len(images)), batch):
                env = {program.input_tensor: images[start:start + batch]}
                for i, step in enumerate(program.steps):
                    graph = program.graphs[step.graph]
                    args = [env[step.inputs[p.name]] for p in graph.inputs]
                    began = time.perf_counter()
                    out = staged.graph_modules[step.graph](*args)
                    totals[i] += time.perf_counter() - began
                    out = out if isinstance(out, (tuple, list)) else (out,)
                    env.update({step.outputs[p.name]: v for p, v in zip(graph.outputs, out)})
            if r:
                best = [min(b, t) for b, t in zip(best, totals)]
    return [b / len(images) for b in best]


def profile(model, images, spec: AnytimeNetSpec) -> dict:
    """Per exit: cumulative blocks (Table I rows), FLOPs and ms per image; per block type: ms and FLOPs."""
    from ..models.blocks import block_table

    staged = model.stage_program(images[:1])
    program, blocks = staged.program, model.graph_blocks()
    step_s = time_steps(staged, images, spec.timing_batch, spec.repeats)
    table, per_exit_ms, t = block_table(program, blocks), [], 0.0
    for segment in program.anytime_segments():
        t += sum(step_s[i] for i in segment.steps)
        per_exit_ms.append(1e3 * t)
    kinds: dict[str, list[float]] = {}
    for i, step in enumerate(program.steps):
        for kind, n in blocks.get(step.graph, {}).items():
            entry = kinds.setdefault(kind, [0, 0.0, 0])  # block executions, seconds, FLOPs
            entry[0] += n
            entry[1] += step_s[i]
            entry[2] += program.graphs[step.graph].flops
    return {"blocks": table, "flops": list(program.cumulative_flops()), "ms": per_exit_ms,
            "step_ms": {s.name: 1e3 * v for s, v in zip(program.steps, step_s)},
            "kinds": {k: {"executions": n, "ms_per_block": 1e3 * s / n, "mflops_per_block": f / n / 1e6}
                      for k, (n, s, f) in kinds.items()}}


def verdict(final: float, baseline: float, n: int) -> tuple[str, float]:
    """'beats' / 'matches (within noise)' / 'falls short of' BASELINE, and the 95% half-width in pp
    (two independent binomial proportions on n test images each)."""
    half = 196.0 * math.sqrt(max(final * (1 - final) + baseline * (1 - baseline), 1e-12) / max(n, 1))
    diff = 100.0 * (final - baseline)
    if abs(diff) <= half:
        return "matches (within noise)", half
    return ("beats" if diff > 0 else "falls short of"), half


def plot(path: Path, any_p: dict, base_p: dict, acc: list, conf: list, base_acc: float, base_conf: float,
         title: str, diagnostic: tuple[list, float] | None = None) -> None:
    """Fig. 3-like PNG: accuracy and confidence vs cumulative ms/image, accuracy vs cumulative MFLOPs;
    `diagnostic` = (accuracy per iteration, BASELINE accuracy) with batch-statistics BN, drawn dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    series = [(any_p["ms"], acc, base_p["ms"][-1], base_acc, "cumulative ms / image (CPU)", "test accuracy %"),
              (any_p["ms"], conf, base_p["ms"][-1], base_conf, "cumulative ms / image (CPU)", "confidence % (eq. 5)"),
              ([f / 1e6 for f in any_p["flops"]], acc, base_p["flops"][-1] / 1e6, base_acc, "cumulative MFLOPs / image",
               "test accuracy %")]
    for i, (ax, (x, y, bx, by, xl, yl)) in enumerate(zip(axes, series)):
        ax.plot(x, y, "o-", label="AnytimeNet (iterations 1..n)")
        ax.plot([bx], [by], "r*", markersize=14, label="BASELINE")
        if diagnostic is not None and i != 1:
            ax.plot(x, diagnostic[0], "o--", color="gray", alpha=0.7, label="AnytimeNet, batch-stat BN (diagnostic)")
            ax.plot([bx], [diagnostic[1]], "*", color="gray", markersize=11, label="BASELINE, batch-stat BN")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def batch_stat_accuracy(model, config: ExperimentConfig, batch: int = 500) -> list[float]:
    """Diagnostic: test accuracy per exit with BatchNorm using each test batch's own statistics (as in
    training) instead of the running averages; on a copy, so the model's statistics stay untouched.
    Shows how much a train/eval BN mismatch costs (AnytimeNet re-executes BN layers on features of
    every iteration, so one running average has to serve several input distributions).

    The test images are shuffled first (seeded by `config.seed`): a test set stored sorted by class
    (CIFAR-10's here) would otherwise give one-class batches, whose own statistics erase the class."""
    import copy

    import torch

    from ..loaders import LoaderOptions, make_loader

    probe = copy.deepcopy(model).train()
    options = LoaderOptions(batch_size=batch, limit_eval=config.limit_eval, seed=config.seed, data_dir=config.data_dir)
    parts = list(make_loader(config.dataset, "test", options))
    if not parts:
        return []
    images, labels = torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(config.seed))
    correct = None
    with torch.no_grad():
        for start in range(0, len(labels), batch):
            index = order[start:start + batch]
            hits = torch.stack([(z.argmax(1) == labels[index]).sum() for z in probe(images[index])])
            correct = hits if correct is None else correct + hits
    return [float(c) / len(labels) for c in correct.tolist()]


def _test_images(config: ExperimentConfig, count: int):
    from ..loaders import LoaderOptions, make_loader

    options = LoaderOptions(batch_size=count, limit_eval=count, seed=config.seed, data_dir=config.data_dir)
    return next(iter(make_loader(config.dataset, "test", options)))[0]


def run(config: ExperimentConfig, spec: AnytimeNetSpec = AnytimeNetSpec()) -> dict:
    """Train AnytimeNet and BASELINE, profile both stage programs, write tables and the plot."""
    from ..train import load_checkpoint

    specs = {"anytimenet": RunSpec("anytimenet", "anytimenet", spec.anytime_kwargs(), "anytimenet"),
             "baseline": RunSpec("anytimenet-baseline", "anytimenet-baseline", spec.baseline_kwargs(), "const")}
    runs = {k: train_run(s, config, f"[{i + 1}/2] ") for i, (k, s) in enumerate(specs.items())}
    print(f"[experiments] timing the stage programs on {spec.timing_images} test images", flush=True)
    images = _test_images(config, spec.timing_images)
    models = {k: load_checkpoint(Path(config.out) / "runs" / s.tag / "checkpoint.pt")[0] for k, s in specs.items()}
    prof = {k: profile(m, images, spec) for k, m in models.items()}
    print("[experiments] diagnostic: test accuracy with batch-statistics BatchNorm", flush=True)
    batch_bn = {k: batch_stat_accuracy(m, config) for k, m in models.items()}
    a, b = prof["anytimenet"], prof["baseline"]
    acc, conf = column(runs["anytimenet"], "test_accuracy"), column(runs["anytimenet"], "test_confidence")
    b_acc, b_conf = runs["baseline"]["exits"][0]["test_accuracy"], runs["baseline"]["exits"][0]["test_confidence"]
    note = f"{schedule_note(config)}. Widths {list(spec.widths)}; times: torch CPU, min of {spec.repeats} runs over " \
           f"{len(images)} test images, per image."

    fig_rows = [[f"iteration {j + 1}", row["Total"], a["flops"][j] / 1e6, a["ms"][j], pct(acc[j]), pct(conf[j]),
                 pct(batch_bn["anytimenet"][j])] for j, row in enumerate(a["blocks"])]
    fig_rows.append(["BASELINE", b["blocks"][-1]["Total"], b["flops"][-1] / 1e6, b["ms"][-1], pct(b_acc), pct(b_conf),
                     pct(batch_bn["baseline"][0])])
    fig3 = markdown_table(f"AnytimeNet vs BASELINE on {config.dataset} (Fig. 3 as a table)",
                          ["", "blocks run", "cum. MFLOPs", "cum. ms/image", "accuracy %", "confidence % (eq. 5)",
                           "diagnostic: accuracy % with batch-stat BN"], fig_rows,
                          note + " Accuracy and confidence use the models as deployed (BatchNorm running statistics); "
                                 "the last column evaluates with each test batch's own BN statistics instead.")
    columns = list(a["blocks"][0])
    table1 = markdown_table("Table I: cumulative blocks executed by each iteration (from the stage program)",
                            [""] + columns, [[f"Iteration {j + 1}"] + [r[c] for c in columns]
                                             for j, r in enumerate(a["blocks"])],
                            f"{schedule_note(config)} (block counts do not depend on training).")
    t2_rows, previous_blocks, previous_ms = [], 0, 0.0
    for j, row in enumerate(a["blocks"]):
        new = row["Total"] - previous_blocks
        t2_rows.append([f"iteration {j + 1}", new, a["ms"][j] - previous_ms, (a["ms"][j] - previous_ms) / new,
                        a["ms"][j] / row["Total"]])
        previous_blocks, previous_ms = row["Total"], a["ms"][j]
    t2_rows.append(["Avg. for all iterations", a["blocks"][-1]["Total"], a["ms"][-1], None,
                    a["ms"][-1] / a["blocks"][-1]["Total"]])
    t2_rows.append(["BASELINE", b["blocks"][-1]["Total"], b["ms"][-1], None, b["ms"][-1] / b["blocks"][-1]["Total"]])
    table2 = markdown_table("Table II-style: time per executed block (ms per image)",
                            ["", "blocks", "ms", "ms per block (this iteration)", "ms per block (cumulative)"],
                            t2_rows, note, digits=3)
    kinds = markdown_table("Time and FLOPs per block type (AnytimeNet program)",
                           ["block type", "executions", "ms per block", "MFLOPs per block"],
                           [[k, v["executions"], v["ms_per_block"], v["mflops_per_block"]]
                            for k, v in a["kinds"].items()], note, digits=3)

    n = runs["anytimenet"]["num_test"] or 0
    word, half = verdict(acc[-1], b_acc, n)
    bn_word, _ = verdict(batch_bn["anytimenet"][-1], batch_bn["baseline"][0], n)
    before = sum(1 for t in a["ms"] if t < b["ms"][-1])
    monotone = all(y >= x for x, y in zip(acc, acc[1:]))
    answer = (f"At this scale the final iteration {word} BASELINE: {100 * acc[-1]:.2f}% vs {100 * b_acc:.2f}% "
              f"({100 * (acc[-1] - b_acc):+.2f} pp; 95% noise band +-{half:.2f} pp on {n} test images). "
              f"{before} of {len(acc)} iterations finish before BASELINE's time ({b['ms'][-1]:.2f} ms/image); "
              f"the final iteration costs {a['flops'][-1] / b['flops'][-1]:.2f}x BASELINE's FLOPs and "
              f"{a['ms'][-1] / b['ms'][-1]:.2f}x its time. Accuracy is "
              f"{'monotone' if monotone else 'NOT monotone'} over iterations. Diagnostic, BatchNorm with batch "
              f"statistics: the final iteration {bn_word} BASELINE ({100 * batch_bn['anytimenet'][-1]:.2f}% vs "
              f"{100 * batch_bn['baseline'][0]:.2f}%), iterations "
              f"{' -> '.join(f'{100 * v:.1f}' for v in batch_bn['anytimenet'])}%.")
    figure = Path(config.out) / f"anytimenet-{config.dataset}.png"
    plot(figure, a, b, [pct(x) for x in acc], [pct(x) for x in conf], pct(b_acc), pct(b_conf),
         f"AnytimeNet vs BASELINE, {config.dataset}: {schedule_note(config)}",
         ([pct(x) for x in batch_bn["anytimenet"]], pct(batch_bn["baseline"][0])))
    figures = [str(figure)]
    if config.figures:
        copy = Path(config.figures) / figure.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(figure, copy)
        figures.append(str(copy))
    result = {"spec": dataclasses.asdict(spec), "runs": runs, "profile": prof, "answer": answer,
              "batch_stat_bn_accuracy": batch_bn, "batch_stat_bn_verdict": bn_word,
              "verdict": word, "monotone": monotone, "iterations_before_baseline": before,
              "figures": figures, "tables": [fig3, table1, table2, kinds],
              "train_seconds": total_train_seconds(list(runs.values()))}
    write_result("anytimenet", config, result)
    print(answer, flush=True)
    return result
