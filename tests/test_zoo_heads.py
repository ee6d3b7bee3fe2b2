"""Exit heads that keep spatial information: shapes, FLOPs, configs, staged == monolithic, old checkpoints."""

from __future__ import annotations

import pytest
import torch

from training.flops import count_flops
from training.models import create_model
from training.models.heads import BoostedHead, ExitHead, boost_flags, head_specs
from training.stages import run_staged


def test_pooled_head_sees_a_grid_and_its_flops_are_counted():
    head = ExitHead(16, 43, pool=4).eval()
    assert head.fc.in_features == 16 * 4 * 4
    x = torch.randn(2, 16, 8, 8)
    # a change confined to one corner must move the logits through the corner's own weights only:
    # the global-pool head cannot tell a pattern in the top-left from the same pattern bottom-right
    corner = x.clone()
    corner[:, :, :2, :2], corner[:, :, 6:, 6:] = x[:, :, 6:, 6:], x[:, :, :2, :2]
    glob = ExitHead(16, 43, pool=1).eval()
    with torch.no_grad():
        assert not torch.allclose(head(x), head(corner))
        torch.testing.assert_close(glob(x), glob(corner))
    bn, pool, fc = 2 * 16 * 64, 16 * 16 * 4, 2 * 256 * 43 + 43
    assert count_flops(head, (torch.zeros(1, 16, 8, 8),)) == bn + pool + fc
    conv = ExitHead(16, 43, pool=2, conv_channels=8)
    conv_flops = 2 * 8 * 64 * 16 * 9 + 2 * 8 * 64
    assert count_flops(conv, (torch.zeros(1, 16, 8, 8),)) == bn + conv_flops + 8 * 4 * 16 + 2 * 32 * 43 + 43


def test_head_specs_and_errors():
    assert head_specs(2, 0, 2) == [(2, 0), (2, 0)]
    assert head_specs([4, 1], (8, 0), 2) == [(4, 8), (1, 0)]
    with pytest.raises(ValueError, match="one value per exit"):
        head_specs([4, 2], 0, 3)
    with pytest.raises(ValueError, match="head_pool values must be >= 1"):
        head_specs(0, 0, 1)
    with pytest.raises(ValueError, match="choose a head_pool that divides 8"):
        ExitHead(4, 3, pool=3)(torch.zeros(1, 4, 8, 8))


def randomized(**kwargs):
    torch.manual_seed(0)
    model = create_model("resann", num_classes=43, **kwargs)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize("kwargs", [dict(head_pool=4), dict(head_pool=[4, 4, 2], blocks_per_section=[2, 2, 3]),
                                    dict(head_pool=[2, 1, 1], head_conv=[8, 0, 16]),
                                    dict(head_pool=4, head_boost=True), dict(head_pool=4, head_boost=[0, 0, 1])])
def test_resann_spatial_heads_staged_equals_monolithic(kwargs):
    model = randomized(**kwargs)
    staged = model.stage_program(torch.zeros(1, 3, 32, 32))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        for k, (a, b) in enumerate(zip(run_staged(staged, x), model(x))):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"exit {k}")
    clone = create_model("resann", **model.config)
    clone.load_state_dict(model.state_dict())
    assert clone.config == model.config


def test_spatial_heads_cost_flops_and_parameters_in_the_program():
    plain = randomized().stage_program().program
    spatial = randomized(head_pool=[4, 2, 1]).stage_program().program
    for k, extra in enumerate([15 * 16 * 43 * 2, 3 * 32 * 43 * 2, 0]):
        graph = f"head{k}"
        assert spatial.graphs[graph].params - plain.graphs[graph].params == extra // 2
        assert spatial.graphs[graph].flops - plain.graphs[graph].flops >= extra
    assert spatial.graphs["head0"].outputs[0].shape == (1, 43)


def test_global_pool_heads_load_checkpoints_of_the_original_head():
    """The original ResANN head (bn, AdaptiveAvgPool2d(1), fc) has the same state-dict keys."""
    model = randomized()
    state = model.state_dict()
    assert {k for k in state if k.startswith("heads.0.")} == {
        "heads.0.bn.weight", "heads.0.bn.bias", "heads.0.bn.running_mean", "heads.0.bn.running_var",
        "heads.0.bn.num_batches_tracked", "heads.0.fc.weight", "heads.0.fc.bias"}
    legacy = {k: v for k, v in state.items()}
    clone = create_model("resann", num_classes=43)
    clone.load_state_dict(legacy)


@pytest.mark.parametrize("arch,kwargs", [("anytimenet", dict(widths=(4, 8, 8), schedule=((1, 1),))),
                                         ("eann", dict(num_anns=2, base_units=1, width=4, exit_period=3)),
                                         ("is-resnext", dict(blocks=3, width=6, num_subnets=3, bottleneck=2,
                                                             cardinality=3))])
def test_every_family_takes_a_head_pool(arch, kwargs):
    model = create_model(arch, num_classes=10, head_pool=2, **kwargs).eval()
    heads = [m for m in model.modules() if isinstance(m, ExitHead)]
    assert heads and all(h.pool.output_size == 2 for h in heads)
    assert create_model(arch, num_classes=10, **model.config).config == model.config
    x = torch.randn(2, 3, 32, 32)
    staged = model.stage_program(torch.zeros(1, 3, 32, 32))
    with torch.no_grad():
        for a, b in zip(run_staged(staged, x), model(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_a_boosted_exit_refines_the_previous_exits_logits():
    model = randomized(head_pool=4, head_boost=[0, 0, 1])
    assert [type(h) for h in model.heads] == [ExitHead, ExitHead, BoostedHead]
    assert model.config["head_boost"] == [False, False, True]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        features = model.segments[2](model.segments[1](model.segments[0](x)))
        own = model.heads[2].head(features)
        torch.testing.assert_close(logits[2], own + logits[1])            # scale starts at 1
        model.heads[2].scale.fill_(0.5)
        torch.testing.assert_close(model(x)[2], own + 0.5 * logits[1])
    program = model.stage_program().program
    head2 = next(step for step in program.steps if step.name == "head2")
    assert dict(head2.inputs) == {"x": "feat2", "previous": "logits1"}
    assert [p.name for p in program.graphs["head2"].inputs] == ["x", "previous"]
    # an a-priori slice to the boosted exit runs the head it refines, and not the one before that
    names = [program.steps[i].name for i in program.apriori_plan(2)]
    assert names == ["segment0", "segment1", "head1", "segment2", "head2"]
    assert "head_boost" not in randomized(head_pool=4).config   # unboosted configs are as before


def test_boost_flags_and_errors():
    assert boost_flags(False, 3) == [False, False, False]
    assert boost_flags(True, 2) == [False, True]
    with pytest.raises(ValueError, match="one flag per exit"):
        boost_flags([0, 1], 3)
    with pytest.raises(ValueError, match="first exit has no earlier exit"):
        create_model("resann", num_classes=43, head_boost=[1, 0, 0])
    with pytest.raises(ValueError, match="set head_boost too"):
        create_model("resann", num_classes=43, head_boost_detach=True)
    with pytest.raises(ValueError, match="coarse exit heads are not boosted"):
        BoostedHead(ExitHead(8, 10, num_coarse=3))


@pytest.mark.parametrize("detach", [False, True])
def test_a_detached_boost_leaves_the_refined_exit_to_its_own_loss(detach):
    model = create_model("resann", num_classes=43, head_pool=4, head_boost=[0, 0, 1], head_boost_detach=detach)
    assert model.config.get("head_boost_detach", False) is detach
    model(torch.randn(2, 3, 32, 32))[2].sum().backward()      # the final exit's loss alone
    grad = model.heads[1].fc.weight.grad
    assert (grad is None or not grad.any()) if detach else grad.abs().sum() > 0
    assert model.segments[0][0].weight.grad.abs().sum() > 0    # the shared trunk learns from it either way
