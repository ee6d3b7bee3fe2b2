"""Shared machinery of the experiments: the schedule config, cached training runs, tables.

Every experiment trains a few small models with `training.train.train` under one
`ExperimentConfig` (dataset, epochs, training subset, ...). A run lives in
`OUT/runs/<tag>/` with the trainer's own files plus `run.json` (the TrainConfig it
was made with); an experiment that asks for the same tag with the same config
reuses its `metrics.json` instead of training again, so e.g. `budgets` reuses the
models `weighting` trained. An interrupted run resumes from its checkpoint.

>>> schedule_note(ExperimentConfig(epochs=4, limit_train=8000))
'SHORT CPU schedule: 4 epochs on 8000 gtsrb32 training images (seed 0), evaluated on up to 4000 val/test images each'
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

SUMMARY_KEYS = ("accuracy", "confidence", "ece", "ece_calibrated")


@dataclass(frozen=True)
class ExperimentConfig:
    """The schedule every run of an experiment shares (short CPU schedules by default)."""

    dataset: str = "gtsrb32"
    epochs: int = 4
    limit_train: int | None = 8000
    limit_eval: int | None = 4000
    batch_size: int = 64
    lr: float = 0.1
    seed: int = 0
    out: str = "runs/experiments"
    data_dir: str | None = None
    threads: int = 1
    figures: str | None = None  # also copy plots here (e.g. docs/figures)
    device: str = "cpu"
    channels_last: bool = False  # training.train --channels-last (ResANN: +15-25% images/s on one thread)
    schemes: tuple[str, ...] | None = None  # `weighting`: train these schemes; `budgets`: its other weightings (None: all)
    opt_exits: tuple[int, ...] | None = None  # `weighting` only: 0-based exits that get an OPT network (None: default)
    log_every: int = 25  # batches between progress lines (0: one line per epoch)
    references: tuple[str, ...] | None = None  # `resnext-solo`: earlier result JSONs whose runs (by tag) it reuses

    def describe(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunSpec:
    """One model to train: registry name, constructor kwargs, loss weighting; `tag` names its folder."""

    tag: str
    arch: str
    arch_kwargs: dict = field(default_factory=dict)
    weighting: str = "const"
    weighting_scope: str = "member"  # training.train --weighting-scope (EANN: per member, or one over all exits)


def schedule_note(config: ExperimentConfig) -> str:
    """The caption every table carries: how short the schedule was."""
    images = "all" if config.limit_train is None else str(config.limit_train)
    evals = "all" if config.limit_eval is None else f"up to {config.limit_eval}"
    return (f"SHORT CPU schedule: {config.epochs} epochs on {images} {config.dataset} training images "
            f"(seed {config.seed}), evaluated on {evals} val/test images each")


def _train_config(spec: RunSpec, config: ExperimentConfig):
    from ..train import TrainConfig

    return TrainConfig(arch=spec.arch, dataset=config.dataset, epochs=config.epochs,
                       out=str(Path(config.out) / "runs" / spec.tag), arch_kwargs=dict(spec.arch_kwargs),
                       data_dir=config.data_dir, weighting=spec.weighting, device=config.device,
                       weighting_scope=spec.weighting_scope,
                       batch_size=config.batch_size, lr=config.lr, seed=config.seed,
                       limit_train=config.limit_train, limit_eval=config.limit_eval,
                       log_every=config.log_every, channels_last=config.channels_last)


def _fingerprint(train_config) -> dict:
    """What a cached run must match: the TrainConfig and the model's full constructor arguments (so a
    changed default, e.g. AnytimeNet's iteration_bn, trains again instead of reusing an older model)."""
    from ..data import dataset_info
    from ..models import create_model

    data = dataclasses.asdict(train_config)
    data.pop("resume", None)
    model = create_model(train_config.arch, num_classes=dataset_info(train_config.dataset).num_classes,
                         **train_config.arch_kwargs)
    data["model_config"] = getattr(model, "config", {})
    return json.loads(json.dumps(data))


def train_run(spec: RunSpec, config: ExperimentConfig, progress: str = "") -> dict:
    """Train `spec` under `config` (or reuse an identical finished run); a compact summary:
    per-exit test/val accuracy, confidence, ECE, FLOPs, params, temperatures, seconds."""
    from ..train import train

    train_config = _train_config(spec, config)
    folder = Path(train_config.out)
    record, metrics_path = folder / "run.json", folder / "metrics.json"
    fingerprint = _fingerprint(train_config)
    same = record.is_file() and json.loads(record.read_text()) == fingerprint
    if same and metrics_path.is_file():
        print(f"[experiments] {progress}{spec.tag}: reusing {metrics_path}", flush=True)
        return summarise(json.loads(metrics_path.read_text()), spec, reused=True, curve=read_curve(folder))
    print(f"[experiments] {progress}training {spec.tag}: {spec.arch} {json.dumps(spec.arch_kwargs)} "
          f"weighting={spec.weighting}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    if not same and metrics_path.exists():
        metrics_path.unlink()
    record.write_text(json.dumps(fingerprint, indent=1))
    started = time.time()
    metrics = train(dataclasses.replace(train_config, resume=same))
    print(f"[experiments] {spec.tag} done in {time.time() - started:.0f}s: test accuracy "
          f"{[round(a, 4) for a in metrics['test_accuracy']]}", flush=True)
    return summarise(metrics, spec, reused=False, curve=read_curve(folder))


#: The ExperimentConfig fields a run taken from an earlier result JSON must share with this one.
SCHEDULE_KEYS = ("dataset", "epochs", "limit_train", "limit_eval", "batch_size", "lr", "seed", "device",
                 "channels_last")


def reference_runs(paths, config: ExperimentConfig) -> dict[str, dict]:
    """{tag: run summary} of the runs in earlier experiments' result JSONs (OUT/NAME.json), for runs
    whose folders are not in this OUT (e.g. the committed docs/experiments/*.json). Every file must
    have been made under this config's schedule (SCHEDULE_KEYS), else ValueError; the first file
    that holds a tag wins. Each summary is marked reused, with the file it came from."""
    found: dict[str, dict] = {}
    for path in paths or ():
        result = json.loads(Path(path).read_text())
        theirs = result.get("config", {})
        differ = {k: (theirs.get(k), getattr(config, k)) for k in SCHEDULE_KEYS if theirs.get(k) != getattr(config, k)}
        if differ:
            raise ValueError(f"{path} was made under another schedule, {{field: (its, ours)}}: {differ}")
        for run in result_runs(result):
            found.setdefault(run["tag"], {**run, "reused": True, "reference": str(path)})
    return found


def train_or_reference(spec: RunSpec, config: ExperimentConfig, references: dict[str, dict],
                       progress: str = "") -> dict:
    """The run of `spec` from `references` (see `reference_runs`) if one has its tag, else `train_run`.
    A referenced run must be the same model: arch, weighting and every kwarg of the spec (ValueError)."""
    run = references.get(spec.tag)
    if run is None:
        return train_run(spec, config, progress)
    kwargs = run.get("arch_kwargs", {})
    if run.get("arch") != spec.arch or run.get("weighting") != spec.weighting or \
            any(kwargs.get(k) != v for k, v in json.loads(json.dumps(spec.arch_kwargs)).items()):
        raise ValueError(f"run {spec.tag!r} in {run['reference']} is {run.get('arch')} {kwargs} "
                         f"weighting={run.get('weighting')}, not {spec.arch} {spec.arch_kwargs} "
                         f"weighting={spec.weighting}")
    print(f"[experiments] {progress}{spec.tag}: taken from {run['reference']}", flush=True)
    return run


def read_curve(folder: Path) -> list[dict]:
    """Per-epoch learning curve of a run from its `log.jsonl`: [{epoch, lr, train_accuracy, val_accuracy}]
    (accuracies per exit; the last record of an epoch wins, so a resumed run has each epoch once)."""
    path = Path(folder) / "log.jsonl"
    if not path.is_file():
        return []
    by_epoch: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            by_epoch[int(r["epoch"])] = {"epoch": int(r["epoch"]), "lr": r.get("lr"),
                                         "train_accuracy": r.get("train_accuracy", []),
                                         "val_accuracy": r.get("val_accuracy", [])}
    return [by_epoch[e] for e in sorted(by_epoch)]


def summarise(metrics: dict, spec: RunSpec, reused: bool = False, curve: list[dict] | None = None) -> dict:
    """The parts of the trainer's metrics.json the experiments report (no per-class lists), plus the
    per-epoch curve from log.jsonl when given."""
    exits = []
    for e in metrics["exits"]:
        row = {"index": e["index"], "flops": e["flops"], "params": e["params"], "temperature": e["temperature"]}
        row.update({f"test_{k}": e["test"][k] for k in SUMMARY_KEYS})
        row["val_accuracy"] = e["val"]["accuracy"] if e.get("val") else None
        exits.append(row)
    return {"tag": spec.tag, "arch": spec.arch, "arch_kwargs": metrics.get("arch_kwargs", spec.arch_kwargs),
            "weighting": spec.weighting, "weighting_scope": spec.weighting_scope, "train_seconds": float(metrics.get("train_seconds", 0.0)),
            "reused": reused, "num_test": metrics.get("num_test"), "num_val": metrics.get("num_val"),
            "exits": exits, "curve": list(curve or [])}


def column(run: dict, key: str) -> list:
    return [e[key] for e in run["exits"]]


# ---------------------------------------------------------------- tables

def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(title: str, headers: Sequence[str], rows: Sequence[Sequence], note: str = "",
                   digits: int = 2) -> dict:
    """A table as a dict (title, headers, rows, note, markdown) so it can go to JSON and to the doc."""
    lines = [f"**{title}**", ""]
    if note:
        lines += [f"_{note}_", ""]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        lines.append("| " + " | ".join(fmt(v, digits) for v in row) + " |")
    return {"title": title, "headers": list(headers), "rows": [list(r) for r in rows], "note": note,
            "markdown": "\n".join(lines)}


def pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def result_runs(result: dict) -> list[dict]:
    """Every run summary an experiment's result holds (its "runs" and "opt" dicts), each tag once."""
    seen: dict[str, dict] = {}
    for group in ("runs", "opt"):
        for run in (result.get(group) or {}).values():
            if isinstance(run, dict) and "tag" in run:
                seen.setdefault(run["tag"], run)
    return list(seen.values())


def curves_table(runs: Sequence[dict], config: ExperimentConfig) -> dict | None:
    """Validation accuracy (%) of each run's final exit after every epoch (from log.jsonl), with its
    training accuracy in the last epoch: how close the schedule got to a plateau. None without curves."""
    runs = [r for r in runs if r.get("curve")]
    if not runs:
        return None
    epochs = max(len(r["curve"]) for r in runs)
    headers = ["run"] + [f"ep {e + 1}" for e in range(epochs)] + ["last - previous (pp)", "train acc last ep %"]
    rows = []
    for r in runs:
        val = [pct(c["val_accuracy"][-1]) if c["val_accuracy"] else None for c in r["curve"]]
        val += [None] * (epochs - len(val))
        known = [v for v in val if v is not None]
        gain = known[-1] - known[-2] if len(known) >= 2 else None
        train = r["curve"][-1]["train_accuracy"]
        rows.append([r["tag"]] + val + [gain, pct(train[-1]) if train else None])
    note = (f"{schedule_note(config)}. Final exit of every run, validation split, after each epoch (cosine "
            f"learning rate, 0 at the end of the last epoch); every exit's curve is in the JSON (runs.*.curve).")
    return markdown_table("Validation accuracy (%) of the final exit per epoch", headers, rows, note)


def write_result(name: str, config: ExperimentConfig, result: dict) -> Path:
    """OUT/NAME.json (everything) and OUT/NAME.md (the tables, then the runs' per-epoch validation
    curves, which are also set as result["curves_table"]), returns the JSON path."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    result["curves_table"] = curves_table(result_runs(result), config)
    result = {"experiment": name, "config": config.describe(), "schedule": schedule_note(config), **result}
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=1))
    parts = [t["markdown"] for t in result["tables"]] + ([result["answer"]] if result.get("answer") else [])
    parts += [result["curves_table"]["markdown"]] if result["curves_table"] else []
    (out / f"{name}.md").write_text("\n\n".join(parts) + "\n")
    if result["curves_table"]:
        figure = out / f"{name}-curves-{config.dataset}.png"
        if plot_curves(result_runs(result), figure, f"{name}: {schedule_note(config)}") and config.figures:
            Path(config.figures).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(figure, Path(config.figures) / figure.name)
    return path


def plot_curves(runs: Sequence[dict], path: Path, title: str) -> bool:
    """PNG of every run's final-exit validation accuracy per epoch; False (nothing written) without
    matplotlib or curves."""
    runs = [r for r in runs if r.get("curve")]
    try:
        import matplotlib
    except ImportError:
        return False
    if not runs:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    colors = plt.get_cmap("tab20").colors
    for i, r in enumerate(runs):
        points = [(c["epoch"] + 1, pct(c["val_accuracy"][-1])) for c in r["curve"] if c["val_accuracy"]]
        ax.plot([e for e, _ in points], [v for _, v in points], "o--" if "opt" in r["tag"] else "o-",
                color=colors[(2 * i) % 20 + (2 * i) // 20 % 2], markersize=3, label=r["tag"])
    ax.set_xlabel("epoch (cosine learning rate, 0 at the end)")
    ax.set_ylabel("final exit, validation accuracy %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    ax.set_title(title, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def total_train_seconds(runs: Sequence[dict]) -> float:
    """Seconds spent training in this invocation (reused runs count 0)."""
    return float(sum(r["train_seconds"] for r in runs if not r["reused"]))
