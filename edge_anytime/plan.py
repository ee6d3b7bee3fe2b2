"""The per-frame hot path: a Program compiled against loaded runners, executed under a deadline.

`CompiledPlan.execute` implements the admission rule of the deadline monitor
(docs/runtime.md): a segment (the steps up to the next exit) runs only if
`now + sum(pWCET) + margin <= deadline`. Per-step work is a dict lookup per
port, one runner call and one estimator update.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

from .confidence import calibrated_prediction
from .frame_job import FrameJob
from .manifest import ModelInfo
from .options import ControllerOptions
from .program import Program
from .results import ExitResult, StopReason


class _Step:
    __slots__ = ("name", "graph", "run", "inputs", "outputs")

    def __init__(self, step, runner) -> None:
        self.name = step.name
        self.graph = step.graph
        self.run = runner.run
        self.inputs = tuple(step.inputs.items())
        self.outputs = tuple(step.outputs.items())


class _Exit:
    __slots__ = ("index", "tensor", "coarse_tensor", "temperature", "rank")

    def __init__(self, exit_, rank: float) -> None:
        self.index = exit_.index
        self.tensor = exit_.tensor
        self.coarse_tensor = exit_.coarse_tensor
        self.temperature = exit_.temperature
        self.rank = rank


def exit_ranks(program: Program) -> list[float]:
    """How good each exit is expected to be: validation accuracy when every exit has one, else depth.

    The controller delivers the best-ranked exit reached, so an exit that is worse on the
    validation set than an earlier one (EANN, Sec. 4 of adaloss-hu-2019.md) never replaces it.
    """
    accuracies = [e.val_accuracy for e in program.exits]
    if all(a is not None for a in accuracies):
        return [float(a) + 1e-9 * e.index for a, e in zip(accuracies, program.exits)]
    return [float(e.index) for e in program.exits]


class CompiledPlan:
    def __init__(self, program: Program, runners: Mapping, model: ModelInfo, options: ControllerOptions) -> None:
        missing = set(program.graphs) - set(runners)
        if missing:
            raise ValueError(f"no runner for graphs {sorted(missing)}")
        self.program = program
        self.model = model
        self.options = options
        self.steps = [_Step(step, runners[step.graph]) for step in program.steps]
        ranks = exit_ranks(program)
        self.exits = [_Exit(e, r) for e, r in zip(program.exits, ranks)]
        self.segments = [(seg.exit_index, tuple(self.steps[i] for i in seg.steps)) for seg in program.anytime_segments()]
        self.apriori = {e.index: tuple(self.steps[i] for i in program.apriori_plan(e.index)) for e in program.exits}
        self._apriori_order = sorted(range(len(self.exits)), key=lambda i: -ranks[i])

    def choose_apriori_exit(self, now: float, deadline: float, estimators) -> int | None:
        """The best-ranked exit whose backward slice fits before the deadline by pWCET; failing that,
        by the typical latency (first_exit_quantile); None if nothing fits."""
        margin = self.options.margin_s
        for index in self._apriori_order:
            cost = sum([estimators[s.graph].estimate() for s in self.apriori[index]])
            if now + cost + margin <= deadline:
                return index
        quantile = self.options.first_exit_quantile
        if quantile is not None:
            for index in self._apriori_order:
                cost = sum([estimators[s.graph].typical(quantile) for s in self.apriori[index]])
                if now + cost + margin <= deadline:
                    return index
        return None

    def execute(self, job: FrameJob, clock, estimators, counts: dict, publish: Callable[[ExitResult], None],
                inline: bool) -> tuple[StopReason, BaseException | None]:
        """Run `job` until done; returns why it stopped and the backend error, if any."""
        margin = self.options.margin_s
        deadline = job.deadline
        if job.mode == "apriori":
            chosen = self.choose_apriori_exit(clock.now(), deadline, estimators)
            if chosen is None:
                skipped = len(self.apriori[self._apriori_order[-1]])
                job.steps_skipped += skipped
                counts["steps_skipped"] += skipped
                return StopReason.DEADLINE, None
            segments = [(chosen, self.apriori[chosen])]
        else:
            segments = self.segments
        env = {self.program.input_tensor: job.tensor}
        first_quantile = self.options.first_exit_quantile
        for position, (exit_index, steps) in enumerate(segments):
            pwcets = [estimators[step.graph].estimate() for step in steps]
            if job.best is None and first_quantile is not None:
                cost = sum([estimators[step.graph].typical(first_quantile) for step in steps])
            else:
                cost = sum(pwcets)
            if clock.now() + cost + margin > deadline:
                for step in steps:
                    estimators[step.graph].refused()
                skipped = sum(len(s) for _, s in segments[position:])
                job.steps_skipped += skipped
                counts["steps_skipped"] += skipped
                return StopReason.DEADLINE, None
            for step, admitted_with in zip(steps, pwcets):
                if job.finalized:
                    return StopReason.DEADLINE, None
                estimator = estimators[step.graph]
                counts["steps_admitted"] += 1
                t0 = clock.now()
                try:
                    outputs = step.run({port: env[tensor] for port, tensor in step.inputs})
                except Exception as exc:  # a backend fault degrades the frame, never the controller
                    job.steps_run += 1
                    return StopReason.DEGRADED, exc
                t1 = clock.now()
                latency = t1 - t0
                estimator.observe(latency)
                job.steps_run += 1
                if latency > admitted_with:
                    counts["steps_overrun"] += 1
                if job.finalized or (inline and t1 > job.fire_at):
                    job.late_steps += 1
                    counts["late_steps"] += 1
                    return StopReason.DEADLINE, None
                for port, tensor in step.outputs:
                    env[tensor] = outputs[port]
            exit_ = self.exits[exit_index]
            source = _PredictionSource(self, exit_, env[exit_.tensor],
                                       env[exit_.coarse_tensor] if exit_.coarse_tensor else None)
            exit_result = ExitResult(job.frame_id, exit_index, None, clock.now() - job.start, job.steps_run,
                                     compute=source)
            if not job.offer(exit_result, exit_.rank):
                return StopReason.DEADLINE, None
            publish(exit_result)
            target = job.confidence_target
            if target is not None and exit_result.prediction.confidence >= target:
                remaining = sum(len(s) for _, s in segments[position + 1:])
                job.steps_skipped += remaining
                return StopReason.CONFIDENCE, None
        return StopReason.FINAL, None

    def predict(self, exit_: _Exit, logits, coarse_logits):
        model = self.model
        prediction = calibrated_prediction(
            logits, exit_.temperature, model.labels, self.options.top_k, coarse_logits=coarse_logits,
            coarse_labels=model.coarse_labels, fine_to_coarse=model.fine_to_coarse)
        threshold = self.options.coarse_below
        if threshold is not None and prediction.coarse_label is not None and prediction.confidence < threshold:
            prediction = dataclasses.replace(prediction, level="coarse")
        return prediction


class _PredictionSource:
    """Computes an exit's Prediction on first access (off the hot path)."""

    __slots__ = ("plan", "exit", "logits", "coarse_logits")

    def __init__(self, plan: CompiledPlan, exit_: _Exit, logits, coarse_logits) -> None:
        self.plan = plan
        self.exit = exit_
        self.logits = logits
        self.coarse_logits = coarse_logits

    def __call__(self):
        return self.plan.predict(self.exit, self.logits, self.coarse_logits)
