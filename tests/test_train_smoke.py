"""training.train / training.evaluate: a one-epoch CLI run on a tiny synthetic dataset, resume, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training import data
from training.evaluate import expected_calibration_error, fit_temperature, nll, softmax
from training.train import TrainConfig, lr_at, load_checkpoint, main, parse_args


@pytest.fixture
def tiny_data(tmp_path):
    data.clear_cache()
    data.write_synthetic(tmp_path / "data", "gtsrb32", tracks_per_class=2, test_per_class=2)
    yield tmp_path / "data"
    data.clear_cache()


def test_one_epoch_cli_run_and_resume(tmp_path, tiny_data):
    run = tmp_path / "run"
    args = ["--arch", "resann", "--dataset", "gtsrb32", "--out", str(run), "--data-dir", str(tiny_data),
            "--limit-train", "256", "--limit-eval", "128", "--batch-size", "64", "--weighting", "adaloss", "--device", "cpu",
            "--arch-kwargs", '{"widths": [8, 16, 16]}']
    metrics = main(args + ["--epochs", "1"])
    assert len(metrics["test_accuracy"]) == 3 and len(metrics["temperatures"]) == 3
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["test_accuracy"] == metrics["test_accuracy"]
    exit0 = on_disk["exits"][0]
    for key in ("accuracy", "confidence", "mean_max_softmax", "ece", "ece_calibrated", "superclass_accuracy"):
        assert 0 <= exit0["test"][key] <= 1
    assert exit0["flops"] < on_disk["exits"][2]["flops"] and exit0["params"] > 0
    assert len(exit0["test_per_class"]) == 43
    lines = [json.loads(s) for s in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0] and len(lines[0]["val_accuracy"]) == 3

    state = torch.load(run / "checkpoint.pt", weights_only=True)  # tensors + plain values only
    assert state["config"]["normalisation"]["mean"] == list(data.DATASETS["gtsrb32"].mean)
    model, config = load_checkpoint(run / "checkpoint.pt")
    assert config["arch_kwargs"]["widths"] == [8, 16, 16] and config["temperatures"] == metrics["temperatures"]
    assert not model.training and len(model(torch.zeros(1, 3, 32, 32))) == 3

    main(args + ["--epochs", "2", "--resume"])
    lines = [json.loads(s) for s in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    assert load_checkpoint(run / "checkpoint.pt")[1]["epoch"] == 1


def test_cli_parsing_and_schedule():
    config = parse_args(["--arch", "resann", "--dataset", "cifar10", "--epochs", "4", "--out", "x",
                         "--arch-kwargs", '{"blocks_per_section": 2}', "--schedule", "step"])
    assert config == TrainConfig(arch="resann", dataset="cifar10", epochs=4, out="x", schedule="step",
                                 arch_kwargs={"blocks_per_section": 2})
    assert [lr_at(config, s, 10) for s in (0, 19, 20, 30, 39)] == pytest.approx([0.1, 0.1, 0.01, 0.001, 0.001])
    cosine = TrainConfig(arch="resann", dataset="cifar10", epochs=2, out="x", warmup_epochs=0.5)
    assert lr_at(cosine, 0, 10) == pytest.approx(0.02) and lr_at(cosine, 19, 10) < 0.002
    with pytest.raises(SystemExit):
        parse_args(["--arch", "resann", "--dataset", "cifar10", "--epochs", "1", "--out", "x", "--arch-kwargs", "{"])


def test_the_validation_split_follows_split_seed_not_the_training_seed(tiny_data):
    from training.loaders import LoaderOptions, split_arrays

    def val_images(**seeds):
        return split_arrays("gtsrb32", "val", LoaderOptions(data_dir=str(tiny_data), **seeds))[0]

    split0 = val_images(seed=0)
    assert len(split0) and not np.array_equal(val_images(seed=1), split0)   # by default it follows --seed
    np.testing.assert_array_equal(val_images(seed=1, split_seed=0), split0)
    config = parse_args(["--arch", "resann", "--dataset", "gtsrb32", "--epochs", "1", "--out", "x", "--seed", "1",
                         "--split-seed", "0"])
    assert (config.seed, config.validation_seed, config.loader_options().split_seed) == (1, 0, 0)
    assert parse_args(["--arch", "resann", "--dataset", "gtsrb32", "--epochs", "1", "--out", "x",
                       "--seed", "3"]).validation_seed == 3


def test_missing_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="training.train"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_temperature_scaling_recovers_the_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(4000, 10))
    labels = np.array([rng.choice(10, p=p) for p in softmax(logits, 2.0)])  # true temperature 2
    t = fit_temperature(logits, labels)
    assert 1.8 < t < 2.2
    assert nll(logits, labels, t) < nll(logits, labels, 1.0)
    probs = softmax(logits)
    assert expected_calibration_error(softmax(logits, t), labels) < expected_calibration_error(probs, labels)


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    # bin of 0.9: accuracy 0.5 -> |0.5 - 0.9| = 0.4; bin of 0.6: accuracy 1 -> 0.4; each half of the data
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)


@pytest.mark.parametrize("arch", ["anytimenet", "anytimenet-baseline", "eann", "is-resnext", "i-resnext",
                                  "is-resnext-hier"])
def test_one_epoch_smoke_run_per_architecture(tmp_path, tiny_data, arch):
    """Every zoo architecture trains for one epoch through the same CLI and reports per-exit metrics."""
    from tests.test_zoo_contract import TINY

    name, kwargs = (("is-resnext", dict(TINY["is-resnext"], hierarchical=True)) if arch == "is-resnext-hier"
                    else (arch, TINY[arch]))
    run = tmp_path / "run"
    metrics = main(["--arch", name, "--dataset", "gtsrb32", "--out", str(run), "--data-dir", str(tiny_data),
                    "--limit-train", "128", "--limit-eval", "64", "--batch-size", "32", "--device", "cpu",
                    "--epochs", "1", "--arch-kwargs", json.dumps(kwargs)])
    model, config = load_checkpoint(run / "checkpoint.pt")
    n_exits = len(metrics["test_accuracy"])
    assert n_exits >= 1 and len(metrics["temperatures"]) == n_exits
    assert all(0.0 <= a <= 1.0 for a in metrics["test_accuracy"])
    assert all(np.isfinite(t) and t > 0 for t in metrics["temperatures"])
    assert config["arch"] == name


def test_cpu_recipe_flags_train_and_save_a_plain_checkpoint(tmp_path, tiny_data):
    """--channels-last / --threads / --label-smoothing / --augment signs: a run whose checkpoint loads into a
    plain (contiguous) model that gives the same logits, and whose config records the recipe."""
    threads = torch.get_num_threads()
    run = tmp_path / "run"
    try:
        main(["--arch", "resann", "--dataset", "gtsrb32", "--out", str(run), "--data-dir", str(tiny_data),
              "--limit-train", "128", "--limit-eval", "64", "--batch-size", "64", "--device", "cpu", "--epochs", "1",
              "--arch-kwargs", '{"widths": [8, 16, 16], "head_pool": [4, 2, 1]}', "--channels-last",
              "--threads", "1", "--label-smoothing", "0.1", "--augment", "signs", "--weight-decay", "5e-4"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    model, config = load_checkpoint(run / "checkpoint.pt")
    recipe = config["train_config"]
    assert (recipe["channels_last"], recipe["threads"], recipe["label_smoothing"], recipe["augment"]) == \
        (True, 1, 0.1, "signs")
    assert config["arch_kwargs"]["head_pool"] == [4, 2, 1]
    assert all(p.is_contiguous() for p in model.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        model.to(memory_format=torch.channels_last)
        for a, b in zip(model(x.contiguous(memory_format=torch.channels_last)), plain):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_recipe_flags_are_checked():
    base = ["--arch", "resann", "--dataset", "gtsrb32", "--epochs", "1", "--out", "x"]
    config = parse_args(base + ["--threads", "2", "--channels-last", "--label-smoothing", "0.1", "--augment", "signs"])
    assert (config.threads, config.channels_last, config.label_smoothing, config.augment) == (2, True, 0.1, "signs")
    for bad in (["--threads", "0"], ["--label-smoothing", "1.5"], ["--augment", "heavy"]):
        with pytest.raises(SystemExit):
            parse_args(base + bad)


def test_fine_tune_the_last_section_keeps_frozen_exits_exact(tmp_path, tiny_data):
    """--init-from + --freeze: the frozen modules (weights and BatchNorm statistics) and so the early exits
    come out bit-identical, the rest trains."""
    common = ["--arch", "resann", "--dataset", "gtsrb32", "--data-dir", str(tiny_data), "--limit-train", "128",
              "--limit-eval", "64", "--batch-size", "64", "--device", "cpu", "--epochs", "1",
              "--arch-kwargs", '{"widths": [8, 16, 16]}']
    main(common + ["--out", str(tmp_path / "base")])
    main(common + ["--out", str(tmp_path / "tuned"), "--init-from", str(tmp_path / "base" / "checkpoint.pt"),
                   "--freeze", "segments.0,heads.0,segments.1,heads.1", "--lr", "0.05"])
    base, _ = load_checkpoint(tmp_path / "base" / "checkpoint.pt")
    tuned, _ = load_checkpoint(tmp_path / "tuned" / "checkpoint.pt")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before, after = base(x), tuned(x)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert not torch.allclose(before[2], after[2])
    with pytest.raises(ValueError, match="no such module"):
        main(common + ["--out", str(tmp_path / "bad"), "--freeze", "segment0"])
