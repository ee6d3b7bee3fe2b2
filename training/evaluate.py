"""Per-exit evaluation: accuracy, confidence, calibration (ECE) and temperature scaling.

The metric functions take numpy logits (N x C) and labels, so the simulator can
reuse them. `evaluate_model` runs a model over the validation and test splits,
fits one temperature per exit on validation (minimising NLL), and reports for
each exit: top-1 accuracy, AnytimeNet eq. 5 confidence (mean softmax
probability of the correct label), mean max-softmax, NLL, ECE (15 bins) before
and after temperature scaling, FLOPs and parameters up to that exit, and
per-class accuracy vs confidence (AnytimeNet Fig. 4).

    python -m training.evaluate runs/gtsrb-resann        # rewrites RUN_DIR/metrics.json

>>> logits = np.array([[2.0, 0.0], [0.0, 1.0]]); labels = np.array([0, 0])
>>> accuracy(logits, labels)
0.5
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

ECE_BINS = 15


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(log_softmax(logits, temperature))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    return float(-log_softmax(logits, temperature)[np.arange(len(labels)), labels].mean())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE with `bins` equal-width confidence bins: sum_b (n_b / N) |accuracy_b - confidence_b|."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0,
                    iterations: int = 80) -> float:
    """The temperature T minimising NLL(softmax(logits / T)), by golden-section search on log T.

    NLL is convex in 1/T, hence unimodal in log T, so the 1-D search finds the optimum in [low, high].
    """
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(logits, labels, math.exp(c)), nll(logits, labels, math.exp(d))
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(logits, labels, math.exp(d))
    return float(math.exp((a + b) / 2))


def exit_report(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0,
                fine_to_coarse: tuple[int, ...] = ()) -> dict:
    """Metrics of one exit on one split; `*_calibrated` use `temperature`."""
    probs = softmax(logits)
    probs_t = softmax(logits, temperature)
    index = np.arange(len(labels))
    report = {
        "accuracy": accuracy(logits, labels),
        "confidence": float(probs[index, labels].mean()),             # AnytimeNet eq. 5
        "mean_max_softmax": float(probs.max(axis=1).mean()),
        "nll": nll(logits, labels),
        "ece": expected_calibration_error(probs, labels),
        "confidence_calibrated": float(probs_t[index, labels].mean()),
        "mean_max_softmax_calibrated": float(probs_t.max(axis=1).mean()),
        "nll_calibrated": nll(logits, labels, temperature),
        "ece_calibrated": expected_calibration_error(probs_t, labels),
    }
    if fine_to_coarse:
        mapping = np.asarray(fine_to_coarse)
        report["superclass_accuracy"] = float(np.mean(mapping[probs.argmax(axis=1)] == mapping[labels]))
    return report


def per_class(logits: np.ndarray, labels: np.ndarray, num_classes: int, temperature: float = 1.0) -> list[dict]:
    """Per class: image count, accuracy, mean calibrated softmax probability of the correct label."""
    probs = softmax(logits, temperature)
    correct = probs.argmax(axis=1) == labels
    true_prob = probs[np.arange(len(labels)), labels]
    rows = []
    for c in range(num_classes):
        members = labels == c
        n = int(members.sum())
        rows.append({"class": c, "count": n,
                     "accuracy": float(correct[members].mean()) if n else None,
                     "confidence": float(true_prob[members].mean()) if n else None})
    return rows


def collect_logits(model, loader, device) -> tuple[list[np.ndarray], np.ndarray]:
    """Run `model` (eval mode, no grad) over `loader`; per-exit float32 logits and the labels."""
    import torch

    model.eval()
    outputs: list[list[np.ndarray]] = []
    labels = []
    with torch.no_grad():
        for images, target in loader:
            logits = model(images.to(device, non_blocking=True))
            if not outputs:
                outputs = [[] for _ in logits]
            for store, value in zip(outputs, logits):
                store.append(value.float().cpu().numpy())
            labels.append(target.numpy())
    return [np.concatenate(o) for o in outputs], np.concatenate(labels)


def exit_costs(model) -> tuple[list[int], list[int]]:
    """Cumulative FLOPs (anytime mode) and parameters (the exit's a-priori slice) per exit."""
    import torch

    example = torch.zeros(1, 3, 32, 32, device=next(model.parameters()).device)
    staged = model.stage_program(example)
    program = staged.program
    flops = [e.flops for e in program.exits]
    params = []
    for k in range(len(program.exits)):
        graphs = {program.steps[i].graph for i in program.apriori_plan(k)}
        params.append(sum(program.graphs[g].params for g in graphs))
    return flops, params


def evaluate_model(model, dataset: str, options, device) -> dict:
    """Full report for `model` on `dataset` (val for temperatures, test for the numbers)."""
    from .data import dataset_info
    from .loaders import make_loader

    info = dataset_info(dataset)
    val_logits, val_labels = collect_logits(model, make_loader(dataset, "val", options), device)
    test_logits, test_labels = collect_logits(model, make_loader(dataset, "test", options), device)
    keep = getattr(model, "keep_exits", None)  # e.g. EANN: the program holds only the kept outputs
    if keep is not None:
        val_logits, test_logits = [val_logits[i] for i in keep], [test_logits[i] for i in keep]
    flops, params = exit_costs(model)
    exits, temperatures = [], []
    for k, (v, t) in enumerate(zip(val_logits, test_logits)):
        temperature = fit_temperature(v, val_labels) if len(val_labels) else 1.0
        temperatures.append(temperature)
        exits.append({
            "index": k, "flops": int(flops[k]), "params": int(params[k]), "temperature": temperature,
            "val": exit_report(v, val_labels, temperature, info.fine_to_coarse) if len(val_labels) else None,
            "test": exit_report(t, test_labels, temperature, info.fine_to_coarse),
            "test_per_class": per_class(t, test_labels, info.num_classes, temperature),
        })
    return {
        "dataset": dataset, "num_exits": len(exits), "num_val": int(len(val_labels)),
        "num_test": int(len(test_labels)), "ece_bins": ECE_BINS,
        "test_accuracy": [e["test"]["accuracy"] for e in exits],
        "val_accuracy": [e["val"]["accuracy"] if e["val"] else None for e in exits],
        "temperatures": temperatures, "flops": [e["flops"] for e in exits], "exits": exits,
    }


def main(argv: list[str] | None = None) -> dict:
    from .loaders import LoaderOptions
    from .train import load_checkpoint, pick_device

    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a training run folder holding checkpoint.pt")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    model, config = load_checkpoint(args.run_dir / "checkpoint.pt", map_location=device)
    options = LoaderOptions(batch_size=args.batch_size, data_dir=args.data_dir, seed=config["seed"],
                            split_seed=config.get("split_seed"), val_fraction=config["val_fraction"])
    metrics = evaluate_model(model.to(device), config["dataset"], options, device)
    metrics.update(arch=config["arch"], arch_kwargs=config["arch_kwargs"], epoch=config["epoch"])
    path = args.run_dir / "metrics.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}  # keep training facts (train_seconds...)
    metrics = {**previous, **metrics}
    path.write_text(json.dumps(metrics, indent=1))
    print(json.dumps({"test_accuracy": metrics["test_accuracy"], "temperatures": metrics["temperatures"]}))
    return metrics


if __name__ == "__main__":
    main()
