"""I-ResNeXt and IS-ResNeXt (Lee & Shin 2018): slice k of IS-ResNeXt depends only on slices 1..k,
I-ResNeXt sub-networks have their own BN layers, and hierarchical heads bind coarse logits."""

from __future__ import annotations

import pytest
import torch

from training.models import create_model
from training.models.resnext import GTSRB_FINE_TO_COARSE, GTSRB_SUPERCLASSES, coarse_targets
from tests.test_zoo_contract import single_thread  # noqa: F401 (autouse fixture)

IS_TINY = dict(blocks=6, width=6, num_subnets=3, bottleneck=2, cardinality=3)
I_TINY = dict(blocks=3, width=8, num_subnets=2, bottleneck=2, cardinality=2)


def model(name, **kwargs):
    torch.manual_seed(0)
    return create_model(name, num_classes=43, **kwargs)


def test_paper_defaults():
    assert model("is-resnext").config["cardinality"] == 18  # C = 0.75 W / B with W=96, B=4 (App. B)
    assert model("i-resnext", blocks=3).config["cardinality"] == 8  # C = 0.5 W / B with W=64
    with pytest.raises(ValueError, match="divisible"):
        model("is-resnext", width=10, num_subnets=3)


@pytest.mark.parametrize("train", [False, True])
def test_is_resnext_slice_independence(train):
    net = model("is-resnext", **IS_TINY).train(train)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        before = net(x)
        # Perturb everything that feeds slice 3 (its stem weights) and block 2's branch group 2 output.
        net.slices[2].stem.weight.add_(torch.randn_like(net.slices[2].stem.weight))
        handle = net.slices[1].groups[2].bn_b.register_forward_hook(lambda m, i, out: out * 3 + 1)
        after = net(x)
        handle.remove()
    torch.testing.assert_close(after[0], before[0], atol=0, rtol=0)  # sub-network 1 sees slice 1 only
    assert not torch.allclose(after[1], before[1])  # sub-network 2 sees the perturbed group 2
    assert not torch.allclose(after[2], before[2])


def test_is_resnext_steps_read_only_earlier_slices():
    net = model("is-resnext", **IS_TINY)
    program = net.stage_program(torch.zeros(1, 3, 16, 16)).program
    assert [s.name for s in program.steps] == ["slice1", "head1", "slice2", "head2", "slice3", "head3"]
    for k in range(3):
        plan = [program.steps[i].name for i in program.apriori_plan(k)]
        assert plan == [f"slice{j}" for j in range(1, k + 2)] + [f"head{k + 1}"]
    slice3 = program.graphs["slice3"]
    assert slice3.input("cache_x").shape[1] == 2 * 24 // 3 and slice3.output("x").shape[1] == 3 * 24 // 3
    # Each step is a distinct graph with its own weights: together they hold the whole body once.
    body = sum(program.graphs[f"slice{k}"].params for k in (1, 2, 3))
    assert body == sum(p.numel() for p in net.slices.parameters())


def test_i_resnext_independent_batch_norm():
    net = model("i-resnext", **I_TINY).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = net(x)
        for bn in net.norms[1].modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.weight.mul_(2.0)
        after = net(x)
    torch.testing.assert_close(after[0], before[0], atol=0, rtol=0)  # sub-network 1 has its own BNs
    assert not torch.allclose(after[1], before[1])
    program = net.stage_program(torch.zeros(1, 3, 16, 16)).program
    assert [program.steps[i].name for i in program.apriori_plan(1)] == ["subnet2", "head2"]  # no reuse


def test_gtsrb_superclasses():
    assert [name for name, _ in GTSRB_SUPERCLASSES][0] == "speed limits" and len(GTSRB_SUPERCLASSES) == 6
    assert sorted(f for _, ids in GTSRB_SUPERCLASSES for f in ids) == list(range(43))
    assert GTSRB_FINE_TO_COARSE[6] == 2 and GTSRB_FINE_TO_COARSE[14] == 5 and GTSRB_FINE_TO_COARSE[25] == 4
    assert coarse_targets(torch.tensor([0, 9, 32, 35, 11, 17])).tolist() == [0, 1, 2, 3, 4, 5]
    data = pytest.importorskip("training.data")
    if hasattr(data, "GTSRB_FINE_TO_COARSE"):
        assert tuple(data.GTSRB_FINE_TO_COARSE) == GTSRB_FINE_TO_COARSE


@pytest.mark.parametrize("name,kwargs", [("is-resnext", IS_TINY), ("i-resnext", I_TINY)])
def test_hierarchical_heads(name, kwargs):
    net = model(name, hierarchical=True, **kwargs).eval()
    staged = net.stage_program(torch.zeros(1, 3, 16, 16))
    program = staged.program
    assert [e.coarse_tensor for e in program.exits] == [f"coarse{k}" for k in range(1, net.K + 1)]
    assert program.graphs["head1"].output("coarse").shape == (1, 6)
    x = torch.randn(2, 3, 16, 16)
    env = {"image": x}
    with torch.no_grad():
        for step in program.steps:  # run the program keeping every tensor
            graph = program.graphs[step.graph]
            out = staged.graph_modules[step.graph](*[env[step.inputs[p.name]] for p in graph.inputs])
            out = out if isinstance(out, tuple) else (out,)
            env.update({step.outputs[p.name]: v for p, v in zip(graph.outputs, out)})
        pairs = net.forward_hierarchical(x)
    for exit_, (fine, coarse) in zip(program.exits, pairs):
        torch.testing.assert_close(env[exit_.tensor], fine, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(env[exit_.coarse_tensor], coarse, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="hierarchical=True"):
        model(name, **kwargs).forward_hierarchical(x)
    with pytest.raises(ValueError, match="num_coarse"):
        create_model(name, num_classes=10, hierarchical=True, **kwargs)
