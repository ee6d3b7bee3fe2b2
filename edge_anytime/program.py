"""The stage program: graphs, steps, exits, and the two plans derived from them.

An anytime model on the device is a small dataflow program, not one graph
(docs/architecture.md). A *graph* is a pure function from named input ports to
named output ports. A *step* invokes one graph, binding its ports to named
tensors of the frame's tensor environment. An *exit* is a step output that
holds logits. The *anytime plan* is the steps in order; the *a-priori plan* of
exit k is the backward slice of the dataflow from exit k.

>>> x = Port("x", (1, 4), "float32")
>>> h = Port("h", (1, 4), "float32")
>>> y = Port("logits", (1, 2), "float32")
>>> program = Program(
...     input_tensor="image",
...     graphs={"body": GraphSignature("body", (x,), (h,)),
...             "head": GraphSignature("head", (h,), (y,))},
...     steps=(Step("b0", "body", {"x": "image"}, {"h": "f0"}),
...            Step("e0", "head", {"h": "f0"}, {"logits": "exit0"}),
...            Step("b1", "body", {"x": "f0"}, {"h": "f1"}),
...            Step("e1", "head", {"h": "f1"}, {"logits": "exit1"})),
...     exits=(Exit(0, "exit0"), Exit(1, "exit1")),
... )
>>> program.validate()
>>> program.apriori_plan(1)
(0, 2, 3)
>>> [segment.steps for segment in program.anytime_segments()]
[(0, 1), (2, 3)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .errors import ProgramError

SUPPORTED_DTYPES = ("float32", "float16", "int8", "uint8", "int32", "int64")


@dataclass(frozen=True)
class Port:
    """A named tensor slot of a graph, with its static shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.dtype not in SUPPORTED_DTYPES:
            raise ProgramError(f"port {self.name!r}: dtype {self.dtype!r} is not one of {SUPPORTED_DTYPES}")


@dataclass(frozen=True)
class GraphSignature:
    """The ports of one graph (a converted segment of the network)."""

    name: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    flops: int = 0
    params: int = 0

    def input(self, port: str) -> Port:
        return _find_port(self.inputs, port, f"graph {self.name!r} input")

    def output(self, port: str) -> Port:
        return _find_port(self.outputs, port, f"graph {self.name!r} output")


def _find_port(ports: tuple[Port, ...], name: str, what: str) -> Port:
    for port in ports:
        if port.name == name:
            return port
    raise ProgramError(f"{what} {name!r} does not exist; it has {[p.name for p in ports]}")


@dataclass(frozen=True)
class Step:
    """One invocation of a graph: graph port -> environment tensor bindings."""

    name: str
    graph: str
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]


@dataclass(frozen=True)
class Exit:
    """An exit: the environment tensor holding its logits, plus metadata."""

    index: int
    tensor: str
    name: str = ""
    flops: int = 0
    val_accuracy: float | None = None
    temperature: float = 1.0
    coarse_tensor: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"exit{self.index}")
        if not self.temperature > 0:
            raise ProgramError(f"exit {self.index}: temperature must be > 0, got {self.temperature}")


@dataclass(frozen=True)
class Segment:
    """The steps of the anytime plan that end with one exit becoming available."""

    exit_index: int
    steps: tuple[int, ...]


@dataclass(frozen=True)
class Program:
    """Graphs, steps and exits of an anytime model; see the module docstring."""

    input_tensor: str
    graphs: Mapping[str, GraphSignature]
    steps: tuple[Step, ...]
    exits: tuple[Exit, ...]
    _producer: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def validate(self) -> None:
        """Check the dataflow: every step reads tensors produced earlier, ports exist,
        shapes agree, exits are in plan order. Raises ProgramError naming the problem."""
        shapes: dict[str, tuple[tuple[int, ...], str]] = {}
        producer: dict[str, int] = {}
        if not self.steps:
            raise ProgramError("the program has no steps")
        if not self.exits:
            raise ProgramError("the program has no exits")
        for index, step in enumerate(self.steps):
            if step.graph not in self.graphs:
                raise ProgramError(f"step {step.name!r} uses unknown graph {step.graph!r}; graphs: {sorted(self.graphs)}")
            graph = self.graphs[step.graph]
            if set(step.inputs) != {p.name for p in graph.inputs}:
                raise ProgramError(
                    f"step {step.name!r} binds inputs {sorted(step.inputs)} but graph {graph.name!r} "
                    f"has inputs {[p.name for p in graph.inputs]}")
            for port_name, tensor in step.inputs.items():
                port = graph.input(port_name)
                if tensor == self.input_tensor:
                    continue
                if tensor not in producer:
                    raise ProgramError(
                        f"step {step.name!r} reads tensor {tensor!r}, which no earlier step produces "
                        f"(unknown tensor)")
                if shapes[tensor] != (port.shape, port.dtype):
                    raise ProgramError(
                        f"step {step.name!r}: tensor {tensor!r} has shape/dtype {shapes[tensor]} but graph "
                        f"{graph.name!r} port {port_name!r} expects {(port.shape, port.dtype)} (shape mismatch)")
            for port_name, tensor in step.outputs.items():
                port = graph.output(port_name)
                if tensor in producer or tensor == self.input_tensor:
                    raise ProgramError(f"step {step.name!r} writes tensor {tensor!r} a second time; tensors are single-assignment")
                producer[tensor] = index
                shapes[tensor] = (port.shape, port.dtype)
        last_step = -1
        for position, exit_ in enumerate(self.exits):
            if exit_.index != position:
                raise ProgramError(f"exit at position {position} has index {exit_.index}; exits must be numbered 0..n-1")
            if exit_.tensor not in producer:
                raise ProgramError(f"exit {exit_.index} reads tensor {exit_.tensor!r}, which no step produces (unknown tensor)")
            if exit_.coarse_tensor is not None and exit_.coarse_tensor not in producer:
                raise ProgramError(f"exit {exit_.index} coarse tensor {exit_.coarse_tensor!r} is produced by no step")
            step_index = producer[exit_.tensor]
            if step_index < last_step:
                raise ProgramError(f"exit {exit_.index} becomes available before exit {exit_.index - 1}; exits must be in plan order")
            last_step = step_index
        self._producer.clear()
        self._producer.update(producer)

    def producer_of(self, tensor: str) -> int:
        """Index of the step that writes `tensor`."""
        if not self._producer:
            self.validate()
        try:
            return self._producer[tensor]
        except KeyError:
            raise ProgramError(f"no step produces tensor {tensor!r}") from None

    def exit_step(self, exit_index: int) -> int:
        """Index of the step after which exit `exit_index` is available."""
        exit_ = self.exits[exit_index]
        steps = [self.producer_of(exit_.tensor)]
        if exit_.coarse_tensor is not None:
            steps.append(self.producer_of(exit_.coarse_tensor))
        return max(steps)

    def apriori_plan(self, exit_index: int) -> tuple[int, ...]:
        """The backward slice from exit `exit_index`: only the steps it depends on, in plan order."""
        if not 0 <= exit_index < len(self.exits):
            raise ProgramError(f"exit {exit_index} does not exist; the program has {len(self.exits)} exits")
        exit_ = self.exits[exit_index]
        needed: set[int] = set()
        frontier = [exit_.tensor] + ([exit_.coarse_tensor] if exit_.coarse_tensor else [])
        while frontier:
            tensor = frontier.pop()
            if tensor == self.input_tensor:
                continue
            step_index = self.producer_of(tensor)
            if step_index in needed:
                continue
            needed.add(step_index)
            frontier.extend(self.steps[step_index].inputs.values())
        return tuple(sorted(needed))

    def anytime_segments(self) -> tuple[Segment, ...]:
        """The anytime plan cut after each exit: segment k holds the steps that run
        after exit k-1 is available and up to (including) the step producing exit k."""
        segments = []
        start = 0
        for exit_ in self.exits:
            end = self.exit_step(exit_.index)
            segments.append(Segment(exit_.index, tuple(range(start, end + 1))))
            start = end + 1
        return tuple(segments)

    def steps_for_graph(self, graph: str) -> tuple[int, ...]:
        return tuple(i for i, step in enumerate(self.steps) if step.graph == graph)

    def cumulative_flops(self) -> tuple[int, ...]:
        """FLOPs executed in anytime mode up to and including each exit."""
        total, out = 0, []
        for segment in self.anytime_segments():
            total += sum(self.graphs[self.steps[i].graph].flops for i in segment.steps)
            out.append(total)
        return tuple(out)


def exit_values(program: Program) -> list[float]:
    """What a result at each exit is worth: its validation accuracy when every exit has one, else its depth
    scaled to (0, 1]. The controller delivers the best-valued exit reached, so an exit that is worse on the
    validation set than an earlier one (EANN, Sec. 4 of adaloss-hu-2019.md) never replaces it; the deadline
    policy weighs gains in these units."""
    accuracies = [e.val_accuracy for e in program.exits]
    if all(a is not None for a in accuracies):
        return [float(a) for a in accuracies]
    return [(e.index + 1) / len(program.exits) for e in program.exits]
