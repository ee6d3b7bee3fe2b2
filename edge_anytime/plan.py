"""The controller's per-frame plan: the interpreter's hooks that apply the deadline policy to one frame.

`FramePlan.execute(job)` runs a frame through `ProgramInterpreter.execute`
with itself as the hooks: `admit` asks the `DeadlinePolicy` whether the next
segment fits before `deadline - margin`; `observe` stops the frame when a step
ended after the frame was delivered (watchdog) or, inline, after its deadline;
`publish` measures the segment, checks its logits (finite, right size), records
the exit on the job and hands it to the callbacks. Every error a step or hook
raises comes back from the interpreter and degrades only this frame.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping

import numpy as np

from .clock import time_source
from .confidence import calibrated_prediction
from .frame_job import FrameJob
from .interpreter import BoundSegment, ProgramInterpreter
from .manifest import ModelInfo
from .options import ControllerOptions
from .policy import DeadlinePolicy, fallback_key, is_fallback
from .results import ExitResult, StopReason


STEP_SAMPLE_EVERY = 4   # step means (for the slices' savings) learn from one frame in 4: cheaper, still current
# A-priori slice runs not recorded on a real clock: a slice's first served runs take 1.3-2x its typical time here
# (the warm-up times slices outside the serving path's hooks), and one such sample among the few dozen a rarely
# chosen slice has keeps its fit probability under what a close choice needs, for good.
COLD_SLICE_RUNS = 2


class InvalidExit(ValueError):
    """An exit's logits are not finite or not the model's class count; that exit is skipped."""


class _Exit:
    __slots__ = ("index", "tensor", "coarse_tensor", "temperature", "rank", "graph", "zeros")

    def __init__(self, exit_, rank: float, graph: str, classes: int) -> None:
        self.zeros = np.zeros(classes, np.float32)   # logits . zeros is NaN iff a logit is not finite
        self.index = exit_.index
        self.tensor = exit_.tensor
        self.coarse_tensor = exit_.coarse_tensor
        self.temperature = exit_.temperature
        self.rank = rank
        self.graph = graph


class FramePlan:
    """Hooks of the interpreter for one controller (one frame at a time); see the module docstring."""

    def __init__(self, interpreter: ProgramInterpreter, model: ModelInfo, options: ControllerOptions,
                 policy: DeadlinePolicy, clock, publish: Callable[[ExitResult], None],
                 report: Callable[[BaseException, str], None], emulate_watchdog: bool,
                 fallbacks: Mapping[int, BoundSegment] | None = None) -> None:
        """`fallbacks`: exit -> its a-priori slice bound to the fallback precision's graphs (planned as
        `fallback_key(exit)`)."""
        program = interpreter.program
        self.interpreter = interpreter
        self.model = model
        self.options = options
        self.policy = policy
        self.clock = clock
        self.now = time_source(clock)
        self._publish = publish
        self._report = report
        self.emulate_watchdog = emulate_watchdog   # simulated clock: a late step is dropped at the fire time
        self.classes = len(model.labels)
        self.exits = [_Exit(e, value, program.steps[program.producer_of(e.tensor)].graph, self.classes)
                      for e, value in zip(program.exits, policy.values)]
        self.job: FrameJob | None = None
        self.limit = 0.0
        self.first_limit = 0.0   # the limit before the frame's first exit (see DeadlinePolicy.first_margin)
        self.apriori = False
        self.admit_all = False   # warm-up: run every segment, whatever the estimates say, and time it here
        self.forced_slice = None  # warm-up: the a-priori slice key every frame runs, timed through this path
        # a dry frame (FrameJob.priming, Controller.prime) gives way when this says a served frame waits
        self.frame_waiting: Callable[[], bool] = lambda: False
        self._segment: BoundSegment | None = None   # the segment running now
        self.started = 0.0
        self.counts = policy.counts
        # Samples measured during a frame are kept here and recorded in one go once its last exit is decided
        # (`take_samples`, applied by the controller's SampleBacklog or recorder thread): no estimator work
        # between steps.
        # (position or exit, seconds, reach, censored)
        self._segment_samples: list[tuple[int, float, float, bool]] = []
        self._step_samples: list[tuple[int, float]] = []
        self._exit_gaps: list[float] = []
        self._published_at = 0.0
        self._published_position = -1        # the anytime segment whose exit this frame published last
        self._frames = 0
        self._sample_steps = False           # this frame's step latencies are kept (one frame in STEP_SAMPLE_EVERY)
        self._first_segment = interpreter.segments[:1]   # an anytime frame where nothing can follow its first exit
        # steps a frame stopped before segment i skips, for the anytime plan (None) and each a-priori slice
        self._slice_plans = dict(interpreter.slice_plans)
        self._slice_plans.update({fallback_key(index): (bound,) for index, bound in (fallbacks or {}).items()})
        self._slice_key = None               # the a-priori slice this frame runs (an exit index, or a fallback key)
        self._fallback_frame = False         # ... and whether it is one of the fallback precision's
        # a-priori slice key -> its served runs still to leave unrecorded (COLD_SLICE_RUNS; none when simulated)
        self._cold_runs = dict.fromkeys(self._slice_plans, 0 if emulate_watchdog else COLD_SLICE_RUNS)
        self._steps_after = {None: _suffix_steps(interpreter.segments),
                             **{index: _suffix_steps(plan) for index, plan in self._slice_plans.items()}}
        self.reset_warmup()

    def reset_warmup(self) -> None:
        """Forget what warm-up frames measured (the cold passes)."""
        self.warmup_samples: list[list[float]] = [[] for _ in self.interpreter.segments]
        self.warmup_reach: list[list[float]] = [[] for _ in self.interpreter.segments]
        self.warmup_steps: dict[int, list[float]] = {i: [] for i in range(len(self.interpreter.steps))}
        self.warmup_slices: dict = {key: [] for key in self._slice_plans}   # from the frame's planning start

    def take_samples(self) -> tuple:
        """What the last frame measured, as a batch for `apply_samples` (possibly on another thread)."""
        batch = (self._segment_samples, self._step_samples, self._exit_gaps, self.apriori)
        self._segment_samples, self._step_samples, self._exit_gaps = [], [], []
        return batch

    def apply_samples(self, batch: tuple) -> None:
        """Feed a batch from `take_samples` to the policy's estimators."""
        segment_samples, step_samples, exit_gaps, apriori = batch
        policy = self.policy
        segments, reaches, slices = policy.segment_estimators, policy.reach_estimators, policy.slice_estimators
        for key, seconds, reach, censored in segment_samples:
            if apriori:   # planned with the time left at the frame's start: its sample runs from there
                if self._cold_runs[key]:
                    self._cold_runs[key] -= 1
                    continue
                estimator = slices[key]
                (estimator.observe_stopped if censored else estimator.observe)(reach)
            elif censored:
                segments[key].observe_stopped(seconds)
                reaches[key].observe_stopped(reach)
            else:
                segments[key].observe(seconds)
                reaches[key].observe(reach)
        for index, seconds in step_samples:
            policy.observe_step(index, seconds)
        for seconds in exit_gaps:
            policy.observe_exit_gap(seconds)
        policy.follow_shifts()

    def other_first_exit_steps(self) -> list[tuple]:
        """The steps of each way to the first exit (the primary first segment, the fallback precision's first
        slice) other than the one the last frame ran: what a dry frame (priming.py) warms besides its own."""
        key = fallback_key(0)
        candidates = {None: self.interpreter.segments[:1]}
        if key in self._slice_plans:
            candidates[key] = self._slice_plans[key]
        ran = (self._slice_key if self.apriori else None)
        return [tuple(step for segment in segments for step in segment.steps)
                for name, segments in candidates.items() if name != ran]

    # ----------------------------------------------------------------- one frame
    def execute(self, job: FrameJob, limit: float, first_limit: float | None = None
                ) -> tuple[StopReason, BaseException | None, str]:
        """Run `job`, admitting segments only while they fit before `limit` (its deadline minus the margin),
        its first segment before `first_limit` (default `limit`; see `DeadlinePolicy.frame_limits`).
        Returns why it stopped, the error that stopped it (None if none) and where it happened."""
        self.job, self.limit = job, limit
        self.first_limit = limit if first_limit is None else first_limit
        self.started = started = self.now()
        self._published_position = -1
        self._frames += 1
        self._sample_steps = not self._frames % STEP_SAMPLE_EVERY
        interpreter = self.interpreter
        counts = self.counts
        chosen = self.forced_slice
        first_only = False
        if job.mode == "anytime" and not self.admit_all:
            policy = self.policy
            policy.tick_floors()
            if self.options.plan_frames and job.confidence_target is None:
                chosen = policy.plan_frame(started, limit)
            first_only = chosen is None and policy.first_exit_only(limit - started)
        if job.mode == "apriori" or chosen is not None:
            if chosen is None:
                chosen = self.policy.choose_apriori(started, limit)
            if chosen is None:
                skipped = len(interpreter.slices[self.policy.apriori_order[-1]].steps)
                job.steps_skipped += skipped
                counts["steps_skipped"] += skipped
                return StopReason.DEADLINE, None, ""
            self.apriori = True
            self._slice_key = chosen
            segments = self._slice_plans[chosen]
            self._fallback_frame = is_fallback(chosen)
            if self._fallback_frame:
                self._sample_steps = False   # its steps are the fallback's graphs, not the ones step means follow
                if not self.admit_all:
                    counts["fallback_frames"] += 1
        else:
            self.apriori = self._fallback_frame = False
            segments = self._first_segment if first_only else interpreter.segments
        outcome = interpreter.execute(job.tensor, segments, self, self.now)
        if outcome.stopped == "error":
            if self._fallback_frame:   # a fallback graph raised: the primary graphs answer from now on
                self.policy.drop_fallbacks()
                return StopReason.DEGRADED, outcome.error, f"{outcome.where} (fallback precision: no longer planned)"
            return StopReason.DEGRADED, outcome.error, outcome.where
        if outcome.stopped == "done" and not first_only:
            return StopReason.FINAL, None, ""
        # refused, or a hook stopped it: a late step (deadline), confidence, or no exit ahead worth more (final)
        remaining = self._steps_after[chosen if self.apriori else None][outcome.segments_run]
        job.steps_skipped += remaining
        counts["steps_skipped"] += remaining
        return job.stop_reason or StopReason.DEADLINE, None, ""

    # ----------------------------------------------------------------- hooks
    def admit(self, segment: BoundSegment, now: float) -> bool:
        job = self.job
        if job.finalized or (job.priming and self.frame_waiting()):
            return False
        policy = self.policy
        if self.apriori or self.admit_all:
            admitted = True   # a-priori: chosen by policy.choose_apriori just before
        else:
            best = job.best
            value = 0.0 if best is None else policy.values[best.exit_index]
            if best is not None and policy.reach_values[segment.position] <= value:
                job.stop_reason = StopReason.FINAL   # no exit ahead is worth more than the one in hand (EANN)
                return False
            admitted = policy.admits(segment.position, now, self.limit if best is not None else self.first_limit,
                                     value)
            if segment.position and self._published_position == segment.position - 1:
                self._exit_gaps.append(now - self._published_at)   # what an a-priori slice skips per exit
        if admitted:
            job.admitted = True
            job.segment_start = now
            self._segment = segment
            if not self.admit_all:
                self.counts["steps_admitted"] += len(segment.steps)
        return admitted

    def observe(self, step, started: float, ended: float) -> bool:
        job = self.job
        job.steps_run += 1
        if job.priming and self.frame_waiting():
            return False                   # a dry frame gives the interpreters to a served one at once
        if self.admit_all:
            if not self._fallback_frame:   # the fallback's steps are other graphs than the ones step means follow
                self.warmup_steps[step.index].append(ended - started)
        elif self._sample_steps:
            self._step_samples.append((step.index, ended - started))
        if job.finalized or (self.emulate_watchdog and ended > job.fire_at) or ended > job.deadline:
            job.late_steps += 1
            self.counts["late_steps"] += 1
            if not self.admit_all:   # the segment overran: about this long with the steps it skips (censored)
                skipped = self._skipped_mean(self._segment, step)
                self._measured(self._segment, ended - job.segment_start + skipped, ended + skipped, censored=True)
                self.counts["steps_overrun"] += 1
            return False
        return True

    def _skipped_mean(self, segment: BoundSegment, step) -> float:
        """The typical time of the steps of `segment` after `step` (a late step stopped the segment there)."""
        steps = segment.steps
        mean = self.policy.step_mean
        return sum(mean[later.index] for later in steps[steps.index(step) + 1:])

    def _measured(self, segment: BoundSegment, seconds: float, ended: float, censored: bool = False) -> None:
        """Keep a served segment's (or a-priori slice's) latency for its estimators (`take_samples`);
        `censored`: it was stopped after a late step (`seconds` adds the typical time of the steps it skipped)."""
        self._segment_samples.append((self._slice_key if self.apriori else segment.position, seconds,
                                      ended - self.started, censored))

    def publish(self, segment: BoundSegment, env, started: float, ended: float) -> bool:
        job = self.job
        seconds = ended - started
        if self.admit_all:
            if self.apriori:    # a slice's time runs from the frame's planning start, as served slices' do
                self.warmup_slices[self._slice_key].append(ended - self.started)
            else:
                self.warmup_samples[segment.position].append(seconds)
                self.warmup_reach[segment.position].append(ended - self.started)
        else:
            self._measured(segment, seconds, ended)
            if ended > self.limit and not self.apriori:
                self.counts["steps_overrun"] += 1
        exit_ = self.exits[segment.exit_index]
        logits = env[exit_.tensor]
        if logits.size != self.classes or math.isnan(logits.ravel().dot(exit_.zeros)):   # 3x np.isfinite's speed
            problem = (f"has {logits.size} values for {self.classes} classes" if logits.size != self.classes
                       else "has non-finite logits")
            error = InvalidExit(f"exit {exit_.index} (graph {exit_.graph!r}) {problem}; the exit was skipped")
            job.error = str(error)
            if not self.admit_all:      # warm-up frames are not served: nothing to count or report
                self.counts["invalid_exits"] += 1
                self._report(error, "exit")
            return True
        coarse = env[exit_.coarse_tensor] if exit_.coarse_tensor else None
        result = ExitResult(job.frame_id, exit_.index, None, ended - job.start, job.steps_run,
                            compute=_PredictionSource(self, exit_, logits, coarse), fallback=self._fallback_frame)
        if not job.offer(result, exit_.rank):
            return False
        job.last_exit_s = self._published_at = ended
        self._published_position = segment.position
        if job.priming:
            return False                   # a dry frame publishes nothing, and its first exit is as far as it goes
        self._publish(result)
        target = job.confidence_target
        if target is not None and result.prediction.confidence >= target:
            job.stop_reason = StopReason.CONFIDENCE
            return False
        return True

    def predict(self, exit_: _Exit, logits, coarse_logits):
        model = self.model
        prediction = calibrated_prediction(
            logits, exit_.temperature, model.labels, self.options.top_k, coarse_logits=coarse_logits,
            coarse_labels=model.coarse_labels, fine_to_coarse=model.fine_to_coarse)
        threshold = self.options.coarse_below
        if threshold is not None and prediction.coarse_label is not None and prediction.confidence < threshold:
            prediction = dataclasses.replace(prediction, level="coarse")
        return prediction


def _suffix_steps(segments) -> list[int]:
    """[steps in segments[i:] for i in 0..len]: what a frame stopped before segment i skips."""
    out = [0]
    for segment in reversed(segments):
        out.append(out[-1] + len(segment.steps))
    return out[::-1]


class _PredictionSource:
    """Computes an exit's Prediction on first access (off the hot path)."""

    __slots__ = ("plan", "exit", "logits", "coarse_logits")

    def __init__(self, plan: FramePlan, exit_: _Exit, logits, coarse_logits) -> None:
        self.plan = plan
        self.exit = exit_
        self.logits = logits
        self.coarse_logits = coarse_logits

    def __call__(self):
        return self.plan.predict(self.exit, self.logits, self.coarse_logits)

    def label(self) -> int:
        """The prediction's label alone: the argmax of the logits (a temperature does not move it)."""
        return int(self.logits.argmax())

    def label_name(self) -> str:
        labels, label = self.plan.model.labels, self.label()
        return str(labels[label]) if label < len(labels) else str(label)   # as calibrated_prediction names it
