"""The one stage-program interpreter: every caller that executes a Program goes through here.

The controller (with its deadline hooks), warm-up, self-test, profiling, export
parity, the simulator's prediction cache and the torch reference
(`training/stages.py`) all walk a program with `ProgramInterpreter`, so a fix
to how steps run lands everywhere at once.

>>> from edge_anytime.backends.fake import FakeBackend
>>> from edge_anytime.backends.base import GraphLoadSpec
>>> import numpy as np
>>> from edge_anytime.program import Exit, GraphSignature, Port, Program, Step
>>> x, y = Port("x", (1, 2)), Port("logits", (1, 2))
>>> program = Program("image", {"net": GraphSignature("net", (x,), (y,))},
...                   (Step("s0", "net", {"x": "image"}, {"logits": "out"}),), (Exit(0, "out"),))
>>> backend = FakeBackend()
>>> interpreter = ProgramInterpreter(program, {"net": backend.load_graph(GraphLoadSpec(program.graphs["net"]))})
>>> sorted(interpreter.run_all(np.zeros((1, 2), np.float32)))
['image', 'out']

Two ways to run:

* `run_all(tensor, timer=..., on_error=...)`: every step in plan order (profiling,
  parity, caches). `timer(step, seconds)` sees each step's latency; with
  `on_error(step, exc)` a failing step is reported and the steps that need its
  outputs are skipped instead of raising.
* `execute(tensor, segments, hooks)`: segment by segment under a `FrameHooks`
  object: `admit` before each segment, `observe` after each step, `publish` at
  each exit. Every exception a step or a hook raises is contained here, in one
  place, and returned with the stop reason; nothing escapes to the caller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence

from .program import Program


class BoundStep:
    """A step of the program bound to the runner of its graph (the per-step hot-path record)."""

    __slots__ = ("index", "name", "graph", "run", "inputs", "outputs")

    def __init__(self, index: int, step, runner) -> None:
        self.index = index
        self.name = step.name
        self.graph = step.graph
        self.run = runner.run
        self.inputs = tuple(step.inputs.items())
        self.outputs = tuple(step.outputs.items())


@dataclass(frozen=True)
class BoundSegment:
    """Steps that run, in order, before exit `exit_index` is available; `position` in its plan."""

    position: int
    exit_index: int
    steps: tuple[BoundStep, ...]


class FrameHooks(Protocol):
    """What the controller plugs into `ProgramInterpreter.execute`."""

    def admit(self, segment: BoundSegment, now: float) -> bool:
        """Before a segment: False stops the frame (it does not fit before the deadline)."""

    def observe(self, step: BoundStep, started: float, ended: float) -> bool:
        """After each step: False stops the frame and drops the step's outputs (it ended too late)."""

    def publish(self, segment: BoundSegment, env: Mapping[str, Any], started: float, ended: float) -> bool:
        """After a segment, its exit is available in `env`: False stops the frame (delivered, confident)."""


class Execution(NamedTuple):
    """How `execute` ended: `stopped` is 'done', 'refused', 'hook' (a hook said stop) or 'error'.
    (A named tuple: it is made once per frame, on the path between the last step and the caller.)"""

    stopped: str
    segments_run: int
    steps_run: int
    error: BaseException | None = None
    where: str = ""          # the step or hook that raised, for the error message


class ProgramInterpreter:
    """A Program compiled against one runner per graph; see the module docstring."""

    def __init__(self, program: Program, runners: Mapping[str, Any]) -> None:
        missing = set(program.graphs) - set(runners)
        if missing:
            raise ValueError(f"no runner for graphs {sorted(missing)}")
        self.program = program
        self.steps = tuple(BoundStep(i, step, runners[step.graph]) for i, step in enumerate(program.steps))
        self.segments = tuple(BoundSegment(position, seg.exit_index, tuple(self.steps[i] for i in seg.steps))
                              for position, seg in enumerate(program.anytime_segments()))
        self.slices = {e.index: BoundSegment(0, e.index, tuple(self.steps[i] for i in program.apriori_plan(e.index)))
                       for e in program.exits}
        self.slice_plans = {index: (segment,) for index, segment in self.slices.items()}   # one-segment plans

    def run_all(self, tensor: Any, *, timer: Callable[[BoundStep, float], None] | None = None,
                on_error: Callable[[BoundStep, BaseException], None] | None = None,
                steps: Sequence[BoundStep] | None = None, now: Callable[[], float] = time.perf_counter,
                env: dict | None = None) -> dict:
        """Run `steps` (default: the whole anytime plan) on one input; returns the tensor environment.
        Pass the `env` an earlier call returned (and `tensor=None`) to go on with the same frame."""
        env = {self.program.input_tensor: tensor} if env is None else env
        for step in self.steps if steps is None else steps:
            if on_error is None:
                inputs = {port: env[name] for port, name in step.inputs}
            else:
                try:
                    inputs = {port: env[name] for port, name in step.inputs}
                except KeyError as exc:
                    on_error(step, KeyError(f"input tensor {exc.args[0]!r} missing (an earlier step failed)"))
                    continue
            start = now()
            if on_error is None:
                outputs = step.run(inputs)
            else:
                try:
                    outputs = step.run(inputs)
                    for port, _ in step.outputs:
                        outputs[port]
                except Exception as exc:  # reported; the steps that need its outputs are skipped
                    on_error(step, exc)
                    continue
            if timer is not None:
                timer(step, now() - start)
            for port, name in step.outputs:
                env[name] = outputs[port]
        return env

    def execute(self, tensor: Any, segments: Sequence[BoundSegment], hooks: FrameHooks,
                now: Callable[[], float]) -> Execution:
        """Run `segments` under `hooks`; see the module docstring. Never raises an Exception."""
        env = {self.program.input_tensor: tensor}
        steps_run = 0
        phase, step = "admit", None      # where we are; the error message is written only if one is raised
        position = 0
        try:
            for position, segment in enumerate(segments):
                phase = "admit"
                seg_start = now()
                if not hooks.admit(segment, seg_start):
                    return Execution("refused", position, steps_run)
                for step in segment.steps:
                    phase = "step"
                    inputs = {port: env[name] for port, name in step.inputs}
                    started = now()
                    outputs = step.run(inputs)
                    ended = now()
                    steps_run += 1
                    phase = "observe"
                    if not hooks.observe(step, started, ended):
                        return Execution("hook", position, steps_run)
                    phase = "outputs"
                    for port, name in step.outputs:
                        env[name] = outputs[port]
                phase = "publish"
                if not hooks.publish(segment, env, seg_start, now()):
                    return Execution("hook", position + 1, steps_run)
        except Exception as exc:  # the one place that contains whatever a step or a hook raises
            return Execution("error", position, steps_run, exc, _where(phase, step))
        return Execution("done", len(segments), steps_run)


def _where(phase: str, step: BoundStep | None) -> str:
    """The part of a frame that raised, for its error message."""
    if phase == "step":
        return f"step {step.name!r} (graph {step.graph!r})"
    if phase == "outputs":
        return f"step {step.name!r} (graph {step.graph!r}) outputs"
    return phase
