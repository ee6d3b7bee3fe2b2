"""EANN: independent members (a-priori slices never include earlier members), exits kept only when
they beat every earlier one on validation, and programs built with only the kept exits."""

from __future__ import annotations

import pytest
import torch

from training.models import create_model
from training.models.eann import select_exits
from training.stages import run_staged
from tests.test_zoo_contract import single_thread  # noqa: F401 (autouse fixture)

EXAMPLE = torch.zeros(1, 3, 16, 16)


def tiny(**kwargs):
    torch.manual_seed(0)
    return create_model("eann", num_classes=10, **{**dict(base_units=1, width=4, exit_period=1), **kwargs}).eval()


def test_select_exits():
    assert select_exits([0.5, 0.62, 0.6, 0.7, 0.7, 0.71]) == [0, 1, 3, 5]
    assert select_exits([0.9, 0.5, 0.6]) == [0]
    assert select_exits([0.1]) == [0]
    assert select_exits([]) == []


def test_depths_grow_exponentially():
    assert tiny(num_anns=4).units == [1, 2, 4, 8]
    assert tiny(num_anns=3, base=3.0).units == [1, 3, 9]
    model = tiny(num_anns=3)
    assert [len(ann.heads) for ann in model.anns] == [3, 6, 12]  # one exit per unit
    assert model.num_exits == 21


def test_apriori_slices_are_independent():
    model = tiny(num_anns=3)
    program = model.stage_program(EXAMPLE).program
    owners = model.exit_owners()
    for k, (member, _) in enumerate(owners):
        plan = program.apriori_plan(k)
        assert all(program.steps[i].name.startswith(f"ann{member}_") for i in plan), (k, plan)
        assert program.steps[plan[0]].name == f"ann{member}_stem"
        reads = {t for i in plan for t in program.steps[i].inputs.values()}
        assert not any(t.startswith(f"ann{m}_") for t in reads for m in range(member))
    # The first exit of member 2 needs only its stem, first group and head, whatever ran before it.
    first = owners.index((2, 0))
    assert [program.steps[i].name for i in program.apriori_plan(first)] == ["ann2_stem", "ann2_grp0", "ann2_head0"]
    assert program.exits[first].name == "ann2_exit0"


def test_kept_exits_program():
    model = tiny(num_anns=3)
    keep = select_exits([0.3, 0.4, 0.35, 0.38, 0.45, 0.5, 0.5] + [0.4] * 14)  # -> [0, 1, 4, 5]
    assert keep == [0, 1, 4, 5]
    staged = model.stage_program(EXAMPLE, keep=keep)
    program = staged.program
    assert [e.name for e in program.exits] == ["ann0_exit0", "ann0_exit1", "ann1_exit1", "ann1_exit2"]
    names = [s.name for s in program.steps]
    assert names == ["ann0_stem", "ann0_grp0", "ann0_head0", "ann0_grp1", "ann0_head1",
                     "ann1_stem", "ann1_grp0", "ann1_grp1", "ann1_head1", "ann1_grp2", "ann1_head2"]
    assert set(program.graphs) == {s.graph for s in program.steps}
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        full = model(x)
        for got, k in zip(run_staged(staged, x), keep):
            torch.testing.assert_close(got, full[k], atol=1e-5, rtol=1e-5)
    # keep_exits in the config makes it the default, so exported checkpoints keep the selection.
    rebuilt = create_model("eann", num_classes=10, **{**model.config, "keep_exits": keep})
    assert [e.name for e in rebuilt.stage_program(EXAMPLE).program.exits] == [e.name for e in program.exits]
    assert rebuilt.num_exits == 21  # forward still returns every exit


@pytest.mark.parametrize("scope", ["member", "all"])
def test_members_train_with_their_own_weighting(tmp_path, scope):
    """`--weighting-scope member` (default): each member's exits get the scheme on their own, the final exit
    of every member at 1; `all`: one scheme over every exit of the ensemble."""
    import json

    from training import data
    from training.train import main

    data.clear_cache()
    data.write_synthetic(tmp_path / "data", "gtsrb32", tracks_per_class=2, test_per_class=1)
    try:
        main(["--arch", "eann", "--dataset", "gtsrb32", "--out", str(tmp_path / "run"), "--data-dir",
              str(tmp_path / "data"), "--limit-train", "64", "--limit-eval", "32", "--batch-size", "32",
              "--device", "cpu", "--epochs", "1", "--weighting", "linear", "--weighting-scope", scope,
              "--arch-kwargs", '{"num_anns": 2, "base_units": 1, "width": 4, "exit_period": 1}'])
    finally:
        data.clear_cache()
    weights = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])["weights"]
    if scope == "member":  # members of 3 and 6 units: 3 and 6 exits
        assert weights == pytest.approx([0.25, 0.625, 1.0, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0])
    else:
        assert len(weights) == 9 and weights[2] < 0.5 and weights[-1] == 1.0
