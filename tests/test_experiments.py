"""training.experiments: every experiment end to end on a tiny synthetic GTSRB (1 epoch, a few hundred
images, tiny widths), the JSON/markdown structure, numbers in range; budget maths against impatient_weights."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pytest
import torch

from training import data
from training.experiments import EXPERIMENTS, ExperimentConfig, anytimenet, anytimenet_bn, budgets, common, ensembles, \
    weightings
from training.experiments.__main__ import main, parse_args
from training.weighting import BUDGET_DISTRIBUTIONS, impatient_weights

TINY_RESANN = weightings.WeightingSpec(widths=(4, 8), blocks_per_section=2, schemes=("const", "adaloss"),
                                       opt_exits=(1, 3))


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments-data")
    data.clear_cache()
    data.write_synthetic(root, "gtsrb32", tracks_per_class=2, test_per_class=2)
    yield root
    data.clear_cache()


@pytest.fixture
def config(tiny_data, tmp_path):
    return ExperimentConfig(epochs=1, limit_train=256, limit_eval=86, batch_size=64, out=str(tmp_path / "out"),
                            data_dir=str(tiny_data), log_every=0)


def check_tables(result: dict, out: str, name: str) -> None:
    assert result["tables"], "an experiment prints at least one table"
    for table in result["tables"]:
        assert "SHORT CPU schedule" in table["markdown"]
        assert all(len(row) == len(table["headers"]) for row in table["rows"])
    on_disk = json.loads((Path(out) / f"{name}.json").read_text())
    assert on_disk["experiment"] == name and on_disk["config"]["epochs"] == 1
    assert "| " in (Path(out) / f"{name}.md").read_text()


def accuracies(run: dict) -> list[float]:
    return [e["test_accuracy"] for e in run["exits"]]


def test_weighting_and_budgets_share_runs(config):
    result = weightings.run(config, TINY_RESANN)
    check_tables(result, config.out, "weighting")
    assert set(result["runs"]) == {"const", "adaloss"} and set(result["opt"]) == {"1", "3"}
    assert all(0 <= a <= 1 for r in result["runs"].values() for a in accuracies(r))
    assert len(result["flops"]) == 4 and result["flops"] == sorted(result["flops"])
    for k, opt in result["opt"].items():  # OPT = the same blocks as the anytime slice, one exit
        assert len(opt["exits"]) == 1 and opt["exits"][0]["flops"] <= result["flops"][int(k)]
    rel = result["tables"][1]
    assert rel["rows"][0][:3] == ["OPT", 0.0, 0.0] and len(rel["rows"]) == 3
    curves = result["curves_table"]  # one row per run (4 anytime + OPT), one column per epoch
    assert [r[0] for r in curves["rows"]] == ["resann4-const", "resann4-adaloss", "resann4-opt1", "resann4-opt3"]
    assert curves["headers"][1] == "ep 1" and all(0 <= r[1] <= 100 for r in curves["rows"])
    assert len(result["runs"]["const"]["curve"]) == 1 and len(result["runs"]["const"]["curve"][0]["val_accuracy"]) == 4
    assert "Validation accuracy (%) of the final exit per epoch" in (Path(config.out) / "weighting.md").read_text()
    assert (Path(config.out) / "weighting-curves-gtsrb32.png").stat().st_size > 1000

    spec = budgets.BudgetSpec(model=TINY_RESANN, distributions=("uniform", "small"), others=("adaloss",))
    result = budgets.run(config, spec)
    check_tables(result, config.out, "budgets")
    assert result["runs"]["const"]["reused"] and result["runs"]["adaloss"]["reused"]
    assert result["runs"]["const"]["curve"]  # a reused run still reports its curve
    assert not result["runs"]["impatient-small"]["reused"]
    assert [r[0] for r in result["tables"][1]["rows"]] == ["const", "impatient-uniform", "impatient-small", "adaloss",
                                                         "independent, a priori"]
    assert result["opt"]["1"]["reused"] and not result["opt"]["0"]["reused"]
    for row in result["expected_accuracy"].values():
        assert all(0 <= v <= 1 for v in row.values())
    assert [r[0] for r in result["tables"][0]["rows"]] == [budgets.LABELS["uniform"], budgets.LABELS["small"]]

    # --schemes limits the cross table's other weightings (here to none but const, which is always there)
    result = budgets.run(dataclasses.replace(config, schemes=("const",)), dataclasses.replace(spec, others=()))
    assert list(result["runs"]) == ["const", "impatient-uniform", "impatient-small"]
    assert all(r["reused"] for r in result["runs"].values())
    assert budgets.restrict(budgets.BudgetSpec(), ExperimentConfig(schemes=("sieve",))).others == ("sieve",)
    assert budgets.restrict(spec, ExperimentConfig()) == spec
    with pytest.raises(ValueError, match="unknown or no weighting schemes"):
        budgets.restrict(spec, ExperimentConfig(schemes=("impatient-small2",)))


def test_anytimenet_experiment(config, tmp_path):
    spec = anytimenet.AnytimeNetSpec(widths=(4, 4, 8), schedule=((0, 1), (2, 1)), timing_images=64,
                                     timing_batch=32, repeats=1)
    config = ExperimentConfig(**{**config.describe(), "figures": str(tmp_path / "figs")})
    result = anytimenet.run(config, spec)
    check_tables(result, config.out, "anytimenet")
    fig3, table1, table2, kinds = result["tables"]
    assert [r[0] for r in fig3["rows"]] == ["iteration 1", "iteration 2", "iteration 3", "BASELINE"]
    assert [r[-1] for r in table1["rows"]] == [5, 9, 11]  # then +SEC 1, SEC 2 and 3 re-run, OUT; then +SEC 3, OUT
    assert fig3["rows"][-1][1] == 2 + 2 + 1 + 2  # BASELINE: IN, 2+1+2 blocks, OUT
    ms = [r[3] for r in fig3["rows"][:-1]]
    assert ms == sorted(ms) and all(m > 0 for m in ms)
    assert all(0 <= v <= 100 for r in fig3["rows"] for v in r[4:7])
    assert len(result["batch_stat_bn_accuracy"]["anytimenet"]) == 3
    assert {r[0] for r in kinds["rows"]} == {"IN", "SEC 1", "SEC 2", "SEC 3", "OUT"}
    assert result["verdict"] in ("beats", "matches (within noise)", "falls short of")
    assert all(os.path.getsize(f) > 1000 for f in result["figures"]) and len(result["figures"]) == 2


def test_batch_stat_diagnostic_shuffles_a_class_sorted_test_set(monkeypatch):
    """With one class per batch, batch statistics would erase the label; the diagnostic shuffles first."""
    import training.loaders

    class Probe(torch.nn.Module):  # logit sign = the batch-normalised mean pixel, which encodes the label
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm1d(1, affine=False)

        def forward(self, x):
            z = self.bn(x.mean((1, 2, 3))[:, None])[:, 0]
            return [torch.stack([-z, z], 1)]

    labels = torch.tensor([0] * 100 + [1] * 100)  # sorted by class, batches of 50: one class each
    batches = [(labels[i:i + 50].float()[:, None, None, None].expand(50, 3, 2, 2), labels[i:i + 50])
               for i in range(0, 200, 50)]
    monkeypatch.setattr(training.loaders, "make_loader", lambda *a, **k: iter(batches))
    probe = Probe().eval()
    assert anytimenet.batch_stat_accuracy(probe, ExperimentConfig(), batch=50) == [1.0]
    assert not probe.training  # evaluated on a copy


def test_anytimenet_bn_experiment_reuses_the_default_run(config):
    spec = anytimenet.AnytimeNetSpec(widths=(4, 4, 8), schedule=((0, 1), (2, 1)), timing_images=64,
                                     timing_batch=32, repeats=1)
    anytimenet.run(config, spec)  # trains the default (affine) AnytimeNet and BASELINE under the same tags
    result = anytimenet_bn.run(config, spec)
    check_tables(result, config.out, "anytimenet-bn")
    assert [r["reused"] for r in result["runs"].values()] == [False, False, True, True]  # affine: the default
    table, params = result["tables"]
    assert [r[0] for r in table["rows"]] == ["shared", "stats", "affine"]
    assert all(len(r) == 1 + 3 + 2 and all(0 <= v <= 100 for v in r[1:4]) for r in table["rows"])
    counts = {r[0]: r[1:] for r in params["rows"]}
    assert counts["shared"][0] == counts["stats"][0] < counts["affine"][0]  # trainable
    assert counts["shared"][1] < counts["stats"][1] == counts["affine"][1]  # stored: convs and BN once per graph
    assert counts["shared"][2] < counts["stats"][2] == counts["affine"][2]
    stats = result["runs"]["stats"]["arch_kwargs"]
    assert stats["iteration_bn"] == "stats"


def test_eann_and_resnext_experiments(config):
    spec = ensembles.EannSpec(num_anns=2, base_units=1, width=4, exit_period=2)
    result = ensembles.run_eann(config, spec)
    check_tables(result, config.out, "eann")
    assert result["ann_units"] >= 2  # the single ANN is deeper than any member
    for curve in result["curves"].values():
        assert curve["flops"] == sorted(curve["flops"]) and curve["kept"][0] == 0
    row = result["tables"][0]["rows"][0]
    assert row[0] == "EANN" and all(v is None or 0 <= v <= 100 for v in row[4:])
    assert [r[0] for r in result["tables"][0]["rows"]] == ["EANN", "EANN, one weighting over all exits", "ANN"]
    assert [r["weighting_scope"] for r in result["runs"].values()] == ["member", "all", "member"]

    spec = ensembles.ResNeXtSpec(is_resnext={"blocks": 3, "width": 6, "num_subnets": 3, "bottleneck": 2,
                                             "cardinality": 3}, shallow=TINY_RESANN, i_resnext=None)
    result = ensembles.run_resnext(config, spec)
    check_tables(result, config.out, "resnext")
    assert len(result["tables"]) == 1 and len(result["tables"][0]["rows"]) == 3
    assert set(result["runs"]) == {"is-resnext", "resann"}
    assert all(0 <= v <= 1 for v in result["expected_accuracy_uniform"].values())


def test_resnext_experiment_with_i_resnext(config):
    tiny_is = {"blocks": 3, "width": 6, "num_subnets": 3, "bottleneck": 2, "cardinality": 3}
    spec = ensembles.ResNeXtSpec(is_resnext=tiny_is, shallow=TINY_RESANN, i_resnext=dict(tiny_is))
    result = ensembles.run_resnext(config, spec)
    check_tables(result, config.out, "resnext")
    assert list(result["runs"]) == ["is-resnext", "resann", "i-resnext"]
    assert result["runs"]["i-resnext"]["arch"] == "i-resnext" and not result["runs"]["i-resnext"]["reused"]
    dense = result["tables"][1]
    assert dense["title"].startswith("I-ResNeXt sub-networks") and len(dense["rows"]) == 3
    own = [r[1] for r in dense["rows"]]
    cumulative = [r[2] for r in dense["rows"]]
    assert own == sorted(own) and own[0] == pytest.approx(cumulative[0])  # sub-network 1 alone = its anytime cost
    assert all(o < c for o, c in zip(own[1:], cumulative[1:]))  # one pass per sub-network: not interruptible
    assert cumulative[-1] == pytest.approx(sum(own))
    assert ensembles.apriori_flops("i-resnext", tiny_is, 43) == [round(o * 1e6) for o in own]
    is_flops = [e["flops"] for e in result["runs"]["is-resnext"]["exits"]]  # interruptible: a priori ~ cumulative
    assert ensembles.apriori_flops("is-resnext", tiny_is, 43)[0] == is_flops[0]
    for row in dense["rows"]:  # every comparison costs no more than the sub-network's own FLOPs
        for col in (5, 8):
            if row[col] is not None:
                assert float(row[col].split("(")[1].split(" MF")[0]) <= row[1] + 0.005
    exp = result["expected_accuracy_uniform"]
    assert {"IS-ResNeXt", "ResANN", "I-ResNeXt, a priori", "I-ResNeXt, anytime"} <= set(exp)
    assert exp["I-ResNeXt, anytime"] <= exp["I-ResNeXt, a priori"]  # same accuracies, later in anytime mode
    assert "I-ResNeXt" in (Path(config.out) / "resnext.md").read_text()
    again = ensembles.run_resnext(config, spec)  # every run cached
    assert all(r["reused"] for r in again["runs"].values())
    assert ensembles.best_within([1, 2, 3], [0.5, 0.9, 0.7], 2.5) == 1
    assert ensembles.best_within([1, 2, 3], [0.5, 0.9, 0.7], 0.5) is None


@pytest.mark.parametrize("distribution", BUDGET_DISTRIBUTIONS)
def test_budget_probabilities_are_what_impatient_weights_train_with(distribution):
    costs = [2.0, 3.0, 7.0, 8.0]
    p_none, probs = budgets.budget_probabilities(distribution, costs)
    assert p_none + sum(probs) == pytest.approx(1.0)
    assert [p / max(probs) for p in probs] == pytest.approx(impatient_weights(distribution, costs))
    # a perfect anytime model scores the probability that some exit is done
    assert budgets.expected_accuracy([1, 1, 1, 1], costs, distribution) == pytest.approx(1 - p_none)


def test_budget_maths_edge_cases():
    assert budgets.expected_accuracy([0.5, 1.0], [1, 3], "uniform", t_max=2) == pytest.approx(0.25)  # exit 2 too late
    assert budgets.expected_accuracy([1.0], [1], "large", t_max=2) == pytest.approx(0.75)
    assert budgets.default_t_max([1, 2, 3]) == 4
    with pytest.raises(ValueError, match="non-decreasing"):
        budgets.budget_probabilities("uniform", [2, 1])
    with pytest.raises(ValueError, match="unknown budget"):
        budgets.expected_accuracy([1], [1], "weird")
    assert math.isclose(budgets.expected_cost([1, 3], "uniform", t_max=4), 0.5 * 1 + 0.25 * 3)


def test_curves_table_and_read_curve(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    records = [{"epoch": 0, "lr": 0.1, "train_accuracy": [0.2, 0.3], "val_accuracy": [0.1, 0.25]},
               {"epoch": 1, "lr": 0.0, "train_accuracy": [0.5, 0.6], "val_accuracy": [0.4, 0.5]},
               {"epoch": 1, "lr": 0.0, "train_accuracy": [0.5, 0.7], "val_accuracy": [0.4, 0.55]}]  # resumed: last wins
    (folder / "log.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    curve = common.read_curve(folder)
    assert [c["epoch"] for c in curve] == [0, 1] and curve[1]["val_accuracy"] == [0.4, 0.55]
    assert common.read_curve(tmp_path / "missing") == []
    runs = [{"tag": "a", "curve": curve}, {"tag": "b", "curve": curve[:1]}, {"tag": "c", "curve": []}]
    table = common.curves_table(runs, ExperimentConfig())
    assert table["headers"] == ["run", "ep 1", "ep 2", "last - previous (pp)", "train acc last ep %"]
    assert table["rows"][0][0] == "a" and table["rows"][0][1:] == pytest.approx([25.0, 55.0, 30.0, 70.0])
    assert table["rows"][1] == ["b", 25.0, None, None, 30.0] and len(table["rows"]) == 2
    assert common.curves_table([{"tag": "c", "curve": []}], ExperimentConfig()) is None
    assert [r["tag"] for r in common.result_runs({"runs": {"x": runs[0]}, "opt": {"1": runs[0], "2": runs[1]}})] == \
        ["a", "b"]


def test_helpers_and_cli_parsing():
    assert weightings.opt_arch_kwargs((8, 16, 32), 2, 5) == {"widths": [8, 16, 32], "blocks_per_section": [2, 2, 2],
                                                             "exit_every": 6}
    with pytest.raises(ValueError, match="beyond"):
        weightings.opt_arch_kwargs((8, 16), 2, 4)
    assert weightings.relative_increase(0.12, 0.10) == pytest.approx(20.0)
    assert ensembles.accuracy_at_budget([0.5, 0.8], [10, 20], 15) == 0.5
    assert ensembles.accuracy_at_budget([0.5, 0.8], [10, 20], 5) is None
    assert anytimenet.verdict(0.90, 0.80, 4000)[0] == "beats"
    assert anytimenet.verdict(0.80, 0.805, 1000)[0] == "matches (within noise)"
    names, config, as_json = parse_args(["all", "--epochs", "2", "--limit-train", "0", "--json"])
    assert names == list(EXPERIMENTS) and config.epochs == 2 and config.limit_train is None and as_json
    assert not config.channels_last and parse_args(["eann", "--channels-last"])[1].channels_last
    config = parse_args(["weighting", "--schemes", "const, adaloss", "--opt-exits", "1,6"])[1]
    assert config.schemes == ("const", "adaloss") and config.opt_exits == (0, 5)
    assert parse_args(["weighting"])[1].schemes is None and parse_args(["weighting"])[1].opt_exits is None
    spec = weightings.restrict(weightings.WeightingSpec(), config)
    assert spec.schemes == ("const", "adaloss") and spec.opt_exits == (0, 5)
    with pytest.raises(ValueError, match="unknown or no weighting schemes"):
        weightings.restrict(weightings.WeightingSpec(), ExperimentConfig(schemes=("nope",)))
    with pytest.raises(ValueError, match="not exits 1..6"):
        weightings.restrict(weightings.WeightingSpec(), ExperimentConfig(opt_exits=(6,)))
    for bad in ("x", "0"):
        with pytest.raises(SystemExit):
            parse_args(["weighting", "--opt-exits", bad])
    with pytest.raises(SystemExit):
        main(["nope"])


@pytest.mark.slow
def test_cli_runs_every_experiment_with_default_architectures(tiny_data, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["all", "--epochs", "1", "--limit-train", "128", "--limit-eval", "86", "--data-dir", str(tiny_data),
                 "--out", str(out), "--log-every", "0"]) == 0
    printed = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert (out / f"{name}.json").is_file() and f"wrote {out}/{name}.json" in printed
    assert "reusing" in printed  # budgets and resnext reuse the weighting runs


def test_seed_table_compares_result_files(tmp_path, capsys):
    from training.experiments import seeds

    def result(seed: int, accs: dict[str, float], extra: str) -> Path:
        runs = {t: {"tag": t, "exits": [{"test_accuracy": 0.1}, {"test_accuracy": a}]} for t, a in accs.items()}
        path = tmp_path / f"seed{seed}.json"
        path.write_text(json.dumps({"config": {"seed": seed, "epochs": 6}, "runs": runs,
                                    "opt": {"5": {"tag": extra, "exits": [{"test_accuracy": 0.95}]}}}))
        return path

    a = result(0, {"const": 0.90, "adaloss": 0.93}, "opt5")
    b = result(1, {"const": 0.92, "adaloss": 0.94, "only-here": 0.5}, "opt5")
    table = seeds.seed_table([a, b], against="const")
    assert table["headers"][:5] == ["run", "seed 0, 6 ep (%)", "seed 1, 6 ep (%)", "mean", "spread"]
    rows = {r[0]: r[1:] for r in table["rows"]}
    assert set(rows) == {"const", "adaloss", "opt5"}  # tags in every file only
    assert rows["adaloss"] == pytest.approx([93.0, 94.0, 93.5, 1.0, 3.0, 2.0])
    assert rows["opt5"][:2] == pytest.approx([95.0, 95.0])  # a one-exit run: its only exit is the final one
    with pytest.raises(ValueError, match="not a run of every file"):
        seeds.seed_table([a, b], against="only-here")
    with pytest.raises(ValueError, match="at least two"):
        seeds.seed_table([a])
    assert seeds.main([str(a), str(b), "--exit", "1"]) == 0
    assert "exit 2" in capsys.readouterr().out
    assert [r[0] for r in seeds.seed_table([a, b], exit_index=1)["rows"]] == ["const", "adaloss"]  # OPT: one exit


TINY_I = {"blocks": 3, "width": 6, "num_subnets": 3, "bottleneck": 2, "cardinality": 6}  # 2 branches per group


@pytest.mark.parametrize("kwargs", [TINY_I, dict(ensembles.ResNeXtSpec().i_resnext)])
def test_solo_network_is_i_resnext_sub_network_alone(kwargs):
    from training.evaluate import exit_costs
    from training.experiments.resnext_solo import solo_kwargs
    from training.models import create_model

    joint = create_model("i-resnext", num_classes=43, **kwargs)
    _, joint_params = exit_costs(joint)
    own = ensembles.apriori_flops("i-resnext", kwargs, 43)
    groups = kwargs["cardinality"] // kwargs["num_subnets"]
    for k in range(1, kwargs["num_subnets"] + 1):
        solo = solo_kwargs(kwargs, k)
        assert solo["num_subnets"] == 1 and solo["cardinality"] == k * groups
        model = create_model("i-resnext", num_classes=43, **solo)
        assert ensembles.apriori_flops("i-resnext", solo, 43) == [own[k - 1]]
        assert exit_costs(model)[1] == [joint_params[k - 1]] == [sum(p.numel() for p in model.parameters())]
    if kwargs is not TINY_I:
        return
    # Same function: sub-network k's weights, concatenated per block, make the solo net compute its logits.
    k = 2
    model = create_model("i-resnext", num_classes=43, **solo_kwargs(kwargs, k))
    with torch.no_grad():
        for bn in joint.modules():  # non-trivial BN statistics and affine
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2)
        model.stem.weight.copy_(joint.stem.weight)
        for l, (grp,) in enumerate(model.groups):
            parts = joint.groups[l][:k]
            grp.conv1.weight.copy_(torch.cat([g.conv1.weight for g in parts]))
            grp.conv2.weight.copy_(torch.cat([g.conv2.weight for g in parts]))
            grp.conv3.weight.copy_(torch.cat([g.conv3.weight for g in parts], 1))
        model.norms[0].load_state_dict(joint.norms[k - 1].state_dict())
        model.heads[0].load_state_dict(joint.heads[k - 1].state_dict())
    joint.eval(), model.eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model(x)[0], joint(x)[k - 1], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(model(x)[0], joint(x)[k - 2], atol=1e-3)


def fake_run(tag: str, arch: str, kwargs: dict, acc: list[float], val: list[float], flops: list[int]) -> dict:
    exits = [{"index": i, "flops": f, "params": 10 * (i + 1), "test_accuracy": a, "val_accuracy": v}
             for i, (a, v, f) in enumerate(zip(acc, val, flops))]
    return {"tag": tag, "arch": arch, "arch_kwargs": kwargs, "weighting": "const", "num_test": 10000,
            "train_seconds": 5.0, "reused": False, "exits": exits, "curve": []}


def test_solo_tables_from_fake_runs():
    from training.experiments import resnext_solo

    spec = resnext_solo.SoloSpec(i_resnext=TINY_I, shallow=TINY_RESANN)
    own = [1_000_000, 2_000_000, 3_000_000]
    joint = fake_run("i-resnext", "i-resnext", TINY_I, [0.80, 0.88, 0.90], [0.8, 0.9, 0.9], [1e6, 3e6, 6e6])
    solos = [fake_run(f"i-resnext-solo{k}", "i-resnext", {}, [a], [a], [f])
             for k, (a, f) in enumerate(zip([0.81, 0.87, 0.92], own), 1)]
    const = fake_run("resann4-const", "resann", {}, [0.20, 0.40, 0.60, 0.70], [0.2, 0.4, 0.6, 0.7],
                     [900_000, 1_900_000, 2_600_000, 4_000_000])
    # OPT 3 costs 2.5 <= 3 MFLOPs but is worse on validation than OPT 2 (test accuracies say otherwise).
    opts = [fake_run(f"resann4-opt{k}", "resann", {}, [a], [v], [f])
            for k, (a, v, f) in enumerate(zip([0.25, 0.50, 0.70, 0.80], [0.25, 0.55, 0.50, 0.8],
                                                       [800_000, 1_800_000, 2_500_000, 3_500_000]))]
    tables, summary = resnext_solo.solo_tables(ExperimentConfig(), spec, joint, solos, const, opts, own)
    thin, shallow, versus = tables
    assert summary["joint_cost"]["thin"] == pytest.approx([-1.0, 1.0, -2.0])
    assert summary["joint_cost"]["shallow"] == pytest.approx([-5.0, -10.0, -10.0, -10.0])
    assert "thin 2.00, shallow 10.00" in summary["answer"]
    assert [v for r in thin["rows"] for v in r[:6]] == pytest.approx([1, 1.0, 10, 81.0, 80.0, -1.0,
                                                                      2, 2.0, 10, 87.0, 88.0, 1.0,
                                                                      3, 3.0, 10, 92.0, 90.0, -2.0])
    assert thin["rows"][0][6] == pytest.approx(196 * math.sqrt((0.8 * 0.2 + 0.81 * 0.19) / 10000))
    assert shallow["rows"][1][1:6] == pytest.approx([1.8, 1.9, 50.0, 40.0, -10.0])
    rows = versus["rows"]
    assert [r[3] for r in rows] == ["1 (0.80 MF)", "2 (1.80 MF)", "2 (1.80 MF)"]  # chosen on val, not test
    assert [r[5] for r in rows] == pytest.approx([56.0, 37.0, 42.0])  # solo thin - solo shallow
    assert [r[8] for r in rows] == ["1 (0.90 MF)", "2 (1.90 MF)", "3 (2.60 MF)"]
    assert [r[10] for r in rows] == pytest.approx([60.0, 48.0, 30.0])  # joint thin - joint shallow
    none = resnext_solo.solo_tables(ExperimentConfig(), spec, joint, solos, const, opts, [500_000] + own[1:])[0][2]
    assert none["rows"][0][3:7] == [None] * 4 and none["rows"][0][8:] == [None] * 3  # nothing that cheap


def test_resnext_solo_experiment_and_references(config, tmp_path):
    from training.experiments import resnext_solo

    spec = resnext_solo.SoloSpec(i_resnext=TINY_I, shallow=TINY_RESANN)
    result = resnext_solo.run(config, spec)
    check_tables(result, config.out, "resnext-solo")
    assert list(result["runs"]) == ["i-resnext", "i-resnext-solo1", "i-resnext-solo2", "i-resnext-solo3", "resann"]
    assert list(result["opt"]) == ["0", "1", "2", "3"] and not any(r["reused"] for r in result["runs"].values())
    assert [r["exits"][0]["flops"] for k, r in result["runs"].items() if "solo" in k] == result["own_flops"]
    joint = [e["test_accuracy"] for e in result["runs"]["i-resnext"]["exits"]]
    solo = [result["runs"][f"i-resnext-solo{k}"]["exits"][0]["test_accuracy"] for k in (1, 2, 3)]
    assert result["joint_cost"]["thin"] == pytest.approx([100 * (j - s) for j, s in zip(joint, solo)])
    assert "Joint - solo" in (Path(config.out) / "resnext-solo.md").read_text()

    # Only the solo thin nets in a new OUT: the rest taken from the first run's result JSON.
    reference = Path(config.out) / "resnext-solo.json"
    other = dataclasses.replace(config, out=str(tmp_path / "other"), references=(str(reference),))
    doc = json.loads(reference.read_text())
    for tag in ("i-resnext-solo1", "i-resnext-solo2", "i-resnext-solo3"):
        doc["runs"].pop(tag)
    (tmp_path / "ref.json").write_text(json.dumps(doc))
    other = dataclasses.replace(other, references=(str(tmp_path / "ref.json"),))
    again = resnext_solo.run(other, spec)
    assert again["runs"]["i-resnext"]["reference"] == str(tmp_path / "ref.json")
    assert [r["reused"] for r in again["runs"].values()] == [True, False, False, False, True]
    assert again["joint_cost"]["shallow"] == result["joint_cost"]["shallow"]
    assert sorted(p.name for p in (tmp_path / "other" / "runs").iterdir()) == \
        ["i-resnext-solo1", "i-resnext-solo2", "i-resnext-solo3"]
    with pytest.raises(ValueError, match="another schedule"):
        resnext_solo.run(dataclasses.replace(other, epochs=2), spec)
    doc["runs"]["i-resnext"]["arch_kwargs"]["width"] = 12
    (tmp_path / "ref.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="not i-resnext"):
        resnext_solo.run(other, spec)
    assert parse_args(["resnext-solo", "--reference", "a.json, b.json"])[1].references == ("a.json", "b.json")
