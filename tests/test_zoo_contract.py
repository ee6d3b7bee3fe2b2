"""The AnytimeModel contract for the zoo architectures (AnytimeNet, EANN, I-/IS-ResNeXt), on tiny configs:
the program validates, the staged run equals the monolithic forward for every exit, a backward pass
works, and the JSON config rebuilds the same model through `create_model`."""

from __future__ import annotations

import json

import pytest
import torch

from training.models import create_model
from training.stages import run_staged

TINY = {
    "anytimenet": dict(widths=[4, 8, 8]),
    "anytimenet-baseline": dict(widths=[4, 8, 8], blocks=[2, 2, 1]),
    "eann": dict(num_anns=3, base_units=1, width=4, exit_period=2),
    "i-resnext": dict(blocks=3, width=8, num_subnets=2, bottleneck=2, cardinality=2),
    "is-resnext": dict(blocks=6, width=6, num_subnets=3, bottleneck=2, cardinality=3),
}
NON_DEFAULT = [
    ("anytimenet", dict(widths=[4, 8, 8], shared_out=False)),
    ("anytimenet", dict(widths=[4, 8, 8], schedule=[[2, 1], [0, 1], [1, 2]])),
    ("eann", dict(num_anns=2, base_units=1, width=4, exit_period=1, keep_exits=[0, 2, 3])),
    ("i-resnext", dict(TINY["i-resnext"], hierarchical=True)),
    ("is-resnext", dict(TINY["is-resnext"], hierarchical=True)),
]
CASES = list(TINY.items()) + NON_DEFAULT
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]
EXAMPLE = torch.zeros(1, 3, 16, 16)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models run ~10x faster on one thread than on 2 contended cores; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters, so eval-mode parity means something."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


def build(name: str, kwargs: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=43, **kwargs)
    randomize_bn(model)
    return model.eval()


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_staged_equals_monolithic(name, kwargs):
    model = build(name, kwargs)
    staged = model.stage_program(EXAMPLE)
    staged.program.validate()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        reference = model(x)
        result = run_staged(staged, x)
    keep = getattr(model, "keep_exits", None)
    reference = reference if keep is None else [reference[i] for i in keep]
    assert len(result) == len(reference) == len(staged.program.exits)
    for k, (a, b) in enumerate(zip(result, reference)):
        assert a.shape == (2, 43), k
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"exit {k}")


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_program_shape(name, kwargs):
    model = build(name, kwargs)
    program = model.stage_program(EXAMPLE).program
    assert all(g.isidentifier() for g in program.graphs)
    assert len({s.name for s in program.steps}) == len(program.steps)
    assert all(g.flops > 0 and g.params > 0 for g in program.graphs.values())
    flops = program.cumulative_flops()
    assert list(flops) == sorted(flops) and [e.flops for e in program.exits] == list(flops)
    for k in range(len(program.exits)):
        plan = program.apriori_plan(k)
        assert program.exit_step(k) in plan


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_backward_and_config_roundtrip(name, kwargs):
    model = build(name, kwargs).train()
    x = torch.randn(2, 3, 16, 16)
    target = torch.tensor([1, 42])
    outputs = model(x)
    assert len(outputs) == model.num_exits
    loss = sum(torch.nn.functional.cross_entropy(logits, target) for logits in outputs)
    if getattr(model, "num_coarse", 0):
        coarse = torch.tensor([0, 2])
        loss = loss + sum(torch.nn.functional.cross_entropy(c, coarse) for _, c in model.forward_hierarchical(x))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    config = json.loads(json.dumps(model.config))
    rebuilt = create_model(name, num_classes=43, **config)
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        for a, b in zip(model(x), rebuilt(x)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name,kwargs", list(TINY.items()), ids=list(TINY))
def test_stage_program_leaves_the_model_alone(name, kwargs):
    model = build(name, kwargs).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    staged = model.stage_program()  # default example: one 32x32 image
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BN statistics untouched
    assert staged.program.graphs[staged.program.steps[0].graph].inputs[0].shape == (1, 3, 32, 32)
