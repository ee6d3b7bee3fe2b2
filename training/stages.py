"""The torch side of the stage program: graph modules plus the shared Program.

Every registered architecture describes itself as a `StagedModel`: the
`edge_anytime.program.Program` (graphs with batch-1 port shapes, steps, exits)
and one `torch.nn.Module` per graph. Each graph module takes its input ports as
positional arguments in port order and returns a tuple of its outputs in port
order. The exporter converts each graph module once; the torch reference
backend runs them; `run_staged` executes the program with torch at any batch
size, which tests compare with the model's monolithic `forward`.

>>> staged = model.stage_program()                                # doctest: +SKIP
>>> [t.shape for t in run_staged(staged, torch.zeros(8, 3, 32, 32))]   # doctest: +SKIP
[torch.Size([8, 43]), torch.Size([8, 43]), torch.Size([8, 43])]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from edge_anytime.interpreter import ProgramInterpreter
from edge_anytime.program import GraphSignature, Port, Program, Step


@dataclass(frozen=True)
class StagedModel:
    program: Program
    graph_modules: Mapping[str, nn.Module]

    def __post_init__(self) -> None:
        self.program.validate()
        missing = set(self.program.graphs) - set(self.graph_modules)
        if missing:
            raise ValueError(f"stage program has graphs without modules: {sorted(missing)}")


class ModuleRunner:
    """A graph module as a runner of the one program interpreter (edge_anytime.interpreter): named torch
    tensors in, named torch tensors out, any batch size."""

    def __init__(self, signature, module: nn.Module) -> None:
        self.graph = signature.name
        self._inputs = tuple(p.name for p in signature.inputs)
        self._outputs = tuple(p.name for p in signature.outputs)
        self._module = module

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        result = self._module(*[inputs[name] for name in self._inputs])
        if not isinstance(result, (tuple, list)):
            result = (result,)
        return dict(zip(self._outputs, result))

    def close(self) -> None:
        pass


def run_staged_env(staged: StagedModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Execute every step of the program with torch through the one program interpreter; returns the whole
    tensor environment."""
    program = staged.program
    runners = {name: ModuleRunner(program.graphs[name], module) for name, module in staged.graph_modules.items()}
    return ProgramInterpreter(program, runners).run_all(x)


def run_staged(staged: StagedModel, x: torch.Tensor, exits: tuple[int, ...] | None = None) -> list[torch.Tensor]:
    """Execute the program step by step with torch; returns the logits of each exit (or of `exits`)."""
    program = staged.program
    env = run_staged_env(staged, x)
    wanted = range(len(program.exits)) if exits is None else exits
    return [env[program.exits[i].tensor] for i in wanted]


def trace_signature(name: str, module: nn.Module, inputs: Mapping[str, torch.Tensor],
                    output_names: tuple[str, ...], flops: int = 0) -> tuple[GraphSignature, tuple[torch.Tensor, ...]]:
    """Run `module` once on batch-1 example inputs and build its GraphSignature from the shapes."""
    with torch.no_grad():
        result = module(*inputs.values())
    if not isinstance(result, (tuple, list)):
        result = (result,)
    if len(result) != len(output_names):
        raise ValueError(f"graph {name!r} returned {len(result)} outputs, expected names {output_names}")
    params = sum(p.numel() for p in module.parameters())
    signature = GraphSignature(
        name=name,
        inputs=tuple(Port(k, tuple(v.shape)) for k, v in inputs.items()),
        outputs=tuple(Port(n, tuple(r.shape)) for n, r in zip(output_names, result)),
        flops=int(flops), params=int(params))
    return signature, tuple(result)


class ProgramBuilder:
    """Builds a Program by running graph modules on batch-1 examples, step by step.

    >>> b = ProgramBuilder("image", torch.zeros(1, 3, 32, 32))               # doctest: +SKIP
    >>> b.step("s0", "stem", stem, {"x": "image"}, {"y": "f0"})              # doctest: +SKIP
    >>> b.step("h0", "head0", head0, {"x": "f0"}, {"logits": "logits0"})     # doctest: +SKIP
    >>> staged = b.build(exit_tensors=["logits0"])                           # doctest: +SKIP
    """

    def __init__(self, input_tensor: str, example: torch.Tensor) -> None:
        self.input_tensor = input_tensor
        self.env: dict[str, torch.Tensor] = {input_tensor: example}
        self.graphs: dict[str, GraphSignature] = {}
        self.modules: dict[str, nn.Module] = {}
        self.steps: list[Step] = []

    def step(self, step_name: str, graph_name: str, module: nn.Module, inputs: Mapping[str, str],
             outputs: Mapping[str, str], flops: int | None = None) -> None:
        example_inputs = {port: self.env[tensor] for port, tensor in inputs.items()}
        if flops is None:
            from .flops import count_flops
            flops = count_flops(module, tuple(example_inputs.values()))
        signature, result = trace_signature(graph_name, module, example_inputs, tuple(outputs), flops)
        if graph_name in self.graphs:
            if self.modules[graph_name] is not module:
                raise ValueError(f"graph name {graph_name!r} used for two different modules")
            if self.graphs[graph_name].inputs != signature.inputs:
                raise ValueError(f"graph {graph_name!r} reused with different input shapes")
        else:
            self.graphs[graph_name] = signature
            self.modules[graph_name] = module
        for (port, tensor), value in zip(outputs.items(), result):
            self.env[tensor] = value
        self.steps.append(Step(step_name, graph_name, dict(inputs), dict(outputs)))

    def build(self, exit_tensors: list[str], coarse_tensors: list[str | None] | None = None) -> StagedModel:
        from edge_anytime.program import Exit

        coarse_tensors = coarse_tensors or [None] * len(exit_tensors)
        program = Program(self.input_tensor, dict(self.graphs), tuple(self.steps),
                          tuple(Exit(i, t, coarse_tensor=c) for i, (t, c) in enumerate(zip(exit_tensors, coarse_tensors))))
        program.validate()
        flops = program.cumulative_flops()
        program = Program(program.input_tensor, program.graphs, program.steps,
                          tuple(Exit(e.index, e.tensor, flops=f, coarse_tensor=e.coarse_tensor)
                                for e, f in zip(program.exits, flops)))
        return StagedModel(program, dict(self.modules))
