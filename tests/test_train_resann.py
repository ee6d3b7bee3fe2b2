"""resann: the stage program (segment/head graphs in anytime order) equals the monolithic forward."""

from __future__ import annotations

import pytest
import torch

from training.models import create_model, list_models
from training.stages import run_staged


def randomized(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("resann", num_classes=43, **kwargs)
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
    return model.eval()


@pytest.mark.parametrize("kwargs,exits", [({}, 3), (dict(blocks_per_section=2, exit_every=1), 6),
                                          (dict(blocks_per_section=[1, 2, 2], exit_every=2, bn_eps=1e-3), 3),
                                          (dict(widths=[8, 16], blocks_per_section=1), 2)])
def test_staged_equals_monolithic(kwargs, exits):
    model = randomized(**kwargs)
    staged = model.stage_program(torch.zeros(1, 3, 32, 32))
    assert model.num_exits == len(staged.program.exits) == exits
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        result = run_staged(staged, x)
    for k, (a, b) in enumerate(zip(result, reference)):
        assert a.shape == (3, 43)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"exit {k}")


def test_program_order_names_costs_and_slices():
    model = randomized()
    program = model.stage_program(torch.zeros(1, 3, 32, 32)).program
    assert [s.name for s in program.steps] == ["segment0", "head0", "segment1", "head1", "segment2", "head2"]
    assert all(name.isidentifier() for name in program.graphs)
    flops = [e.flops for e in program.exits]
    assert flops == sorted(flops) and flops[0] > 0
    assert program.apriori_plan(1) == (0, 2, 3)
    assert program.graphs["segment0"].inputs[0].shape == (1, 3, 32, 32)
    assert program.graphs["head2"].outputs[0].shape == (1, 43)


def test_config_rebuilds_and_stage_program_keeps_mode():
    model = create_model("resann", num_classes=10, blocks_per_section=2, exit_every=3, bn_eps=1e-3)
    assert "resann" in list_models()
    clone = create_model("resann", **model.config)
    clone.load_state_dict(model.state_dict())
    assert clone.config == model.config and clone.num_exits == model.num_exits == 2
    model.train()
    model.stage_program(torch.zeros(1, 3, 32, 32))
    assert model.training
    loss = sum(z.sum() for z in model(torch.randn(2, 3, 32, 32)))
    loss.backward()
    with pytest.raises(ValueError, match="exit_every"):
        create_model("resann", num_classes=10, exit_every=0)
