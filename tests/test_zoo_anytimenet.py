"""AnytimeNet: the stage program reproduces Table I of Kim, Bradford & Shao, re-executed segments
reuse one graph, and BASELINE is the final network with one exit."""

from __future__ import annotations

import pytest
import torch

from training.models import create_model
from training.models.anytimenet import block_table, cumulative_blocks
from tests.test_zoo_contract import single_thread  # noqa: F401 (autouse fixture)

TABLE_I = [  # IN, SEC 1, SEC 2, SEC 3, OUT, Total: cumulative blocks executed by iterations 1..7
    [1, 1, 1, 1, 1, 5],
    [1, 5, 2, 2, 2, 12],
    [1, 8, 3, 3, 3, 18],
    [1, 8, 7, 4, 4, 24],
    [1, 8, 10, 5, 5, 29],
    [1, 8, 10, 9, 6, 34],
    [1, 8, 10, 12, 7, 38],
]
EXAMPLE = torch.zeros(1, 3, 16, 16)
NARROW = [4, 8, 8]  # block counts do not depend on the widths; narrow sections keep the test fast


@pytest.fixture(scope="module")
def paper_model():
    return create_model("anytimenet", num_classes=43, widths=NARROW, iteration_bn="shared")  # the paper's schedule


@pytest.fixture(scope="module")
def paper_program(paper_model):
    return paper_model.stage_program(EXAMPLE).program


def test_table_one(paper_model, paper_program):
    assert cumulative_blocks(paper_program, paper_model.graph_blocks()) == [5, 12, 18, 24, 29, 34, 38]
    rows = block_table(paper_program, paper_model.graph_blocks())
    assert [list(row.values()) for row in rows] == TABLE_I
    assert list(rows[0]) == ["IN", "SEC 1", "SEC 2", "SEC 3", "OUT", "Total"]


def test_paper_architecture():
    model = create_model("anytimenet", num_classes=43)  # the paper's configuration and schedule
    assert model.num_exits == 7
    assert [sum(len(g) for g in section) for section in model.sections] == [8, 8, 8]
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert model.out_blocks[0].fc.in_features == 64


def test_reexecuted_segments_share_one_graph(paper_program):
    steps = paper_program.steps
    assert len(paper_program.graphs) == 11  # in_block, 3 sections x 3 groups, one shared OUT
    assert [steps[i].name for i in paper_program.steps_for_graph("sec3_grp0")] == [
        "it1_sec3_grp0", "it2_sec3_grp0", "it3_sec3_grp0", "it4_sec3_grp0", "it5_sec3_grp0"]
    assert len(paper_program.steps_for_graph("out")) == 7
    # Iteration 2 reads the cached output of iteration 1's first section and re-runs the rest.
    segment = paper_program.anytime_segments()[1]
    assert [steps[i].name for i in segment.steps] == ["it2_sec1_grp1", "it2_sec2_grp0", "it2_sec3_grp0", "it2_out"]
    assert steps[segment.steps[0]].inputs == {"x": "it1_s1g0"}


def test_schedule_is_a_parameter():
    model = create_model("anytimenet", num_classes=10, widths=[4, 8, 8], schedule=[[2, 1], [0, 2]])
    program = model.stage_program(torch.zeros(1, 3, 16, 16)).program
    # it1: 5 blocks; it2: +1 in SEC 3 and OUT; it3: +2 in SEC 1, then SEC 2 (1) and SEC 3 (2 groups: 2) again, OUT.
    assert cumulative_blocks(program, model.graph_blocks()) == [5, 7, 13]
    with pytest.raises(ValueError, match="numbered from 0"):
        create_model("anytimenet", num_classes=10, schedule=[[3, 1]])
    with pytest.raises(ValueError, match="initial_blocks"):
        create_model("anytimenet", num_classes=10, initial_blocks=[1, 0, 1])


def test_non_shared_out_heads():
    model = create_model("anytimenet", num_classes=10, widths=[4, 8, 8], shared_out=False)
    program = model.stage_program(torch.zeros(1, 3, 16, 16)).program
    assert [g for g in program.graphs if g.startswith("out")] == [f"out{j}" for j in range(1, 8)]
    assert cumulative_blocks(program, model.graph_blocks())[-1] == 38


def test_baseline_is_the_final_network(paper_model):
    baseline = create_model("anytimenet-baseline", num_classes=43, widths=NARROW)  # same convolutions, one BN each
    assert baseline.num_exits == 1
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(baseline) == count(paper_model)
    program = baseline.stage_program(EXAMPLE).program
    assert cumulative_blocks(program, baseline.graph_blocks()) == [26]  # 24 inner blocks, IN and OUT


def trained_statistics(model, steps: int = 3):
    """Running statistics from a few training-mode passes (each BatchNorm sees its own iteration's inputs)."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(8, 3, 16, 16) * 2 + 0.5)
    return model.eval()


@pytest.mark.parametrize("mode", ["stats", "affine"])
def test_per_iteration_batchnorm_staged_equals_monolithic_per_iteration(mode):
    model = create_model("anytimenet", num_classes=10, widths=NARROW, iteration_bn=mode)
    with torch.no_grad():
        for m in model.modules():  # distinct scale/shift wherever a layer has its own
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.add_(torch.rand(m.num_features) * 0.5)
                m.bias.add_(torch.randn(m.num_features) * 0.1)
    model = trained_statistics(model)
    staged = model.stage_program(EXAMPLE)
    program = staged.program
    assert len(program.exits) == 7 and program.graphs.keys() >= {"sec3_grp0", "sec3_grp0_it2", "out", "out_it7"}
    # every run of a re-executed group has its own graph; the block counts of Table I are unchanged
    assert all(len(program.steps_for_graph(g)) == 1 for g in program.graphs)
    assert [list(row.values()) for row in block_table(program, model.graph_blocks())] == TABLE_I
    from training.stages import run_staged
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        for j, (a, b) in enumerate(zip(run_staged(staged, x), model(x))):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"iteration {j + 1}")


def test_per_iteration_statistics_are_their_own_and_convolutions_are_shared():
    shared = create_model("anytimenet", num_classes=10, widths=NARROW, iteration_bn="shared")
    stats = create_model("anytimenet", num_classes=10, widths=NARROW, iteration_bn="stats")
    affine = create_model("anytimenet", num_classes=10, widths=NARROW, iteration_bn="affine")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(stats) == count(shared) < count(affine)
    rerun = stats.iteration_groups["s2g0it2"][0]
    assert rerun.conv1 is stats.sections[2][0][0].conv1 and rerun.bn1.weight is stats.sections[2][0][0].bn1.weight
    assert affine.iteration_groups["s2g0it2"][0].bn1.weight is not affine.sections[2][0][0].bn1.weight
    assert stats.iteration_outs["it2"].fc is stats.out_blocks[0].fc
    trained_statistics(stats)
    first, second = stats.sections[2][0][0].bn1.running_mean, rerun.bn1.running_mean
    assert not torch.allclose(first, second)  # iteration 2 normalised its own (refined) inputs
    # the OUT statistics of one iteration move that iteration's logits only
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = stats(x)
        stats.iteration_outs["it3"].bn.running_mean.add_(1.0)
        after = stats(x)
    changed = [not torch.allclose(a, b) for a, b in zip(before, after)]
    assert changed == [False, False, True, False, False, False, False]
    clone = create_model("anytimenet", num_classes=10, **stats.config)
    clone.load_state_dict(stats.state_dict())
    assert create_model("anytimenet", num_classes=10).config["iteration_bn"] == "affine"  # the default
    with pytest.raises(ValueError, match="iteration_bn"):
        create_model("anytimenet", num_classes=10, iteration_bn="per-layer")


def test_checkpoints_from_before_per_iteration_bn_load_as_shared(tmp_path):
    from training.train import CHECKPOINT_FORMAT, load_checkpoint

    old = create_model("anytimenet", num_classes=10, widths=NARROW, iteration_bn="shared")
    kwargs = {k: v for k, v in old.config.items() if k != "iteration_bn"}  # what older checkpoints stored
    torch.save({"config": {"format": CHECKPOINT_FORMAT, "arch": "anytimenet", "arch_kwargs": kwargs,
                           "num_classes": 10}, "model": old.state_dict()}, tmp_path / "old.pt")
    model, _ = load_checkpoint(tmp_path / "old.pt")
    assert model.config["iteration_bn"] == "shared" and not model.iteration_groups
