"""Immutable result records: one `ExitResult` per refinement, one `FrameResult` per frame.

>>> r = FrameResult(frame_id=3, status=StopReason.NO_RESULT, best=None, exits=(), budget_s=0.001,
...                 start_s=0.0, deadline_s=0.001, delivered_s=0.001)
>>> r.label is None, r.met_deadline, r.status.value
(True, False, 'no_result')
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable

import numpy as np


class StopReason(str, Enum):
    """Why a frame stopped refining."""

    FINAL = "final"              # the plan ran to its last exit
    DEADLINE = "deadline"        # the next step did not fit before the deadline, or a step overran it
    CONFIDENCE = "confidence"    # the calibrated confidence reached the target
    INTERRUPTED = "interrupted"  # interrupt() was called
    DEGRADED = "degraded"        # a backend failed; the best result before the failure was delivered
    NO_RESULT = "no_result"      # no exit was reached by the deadline


@dataclass(frozen=True)
class Prediction:
    """A calibrated reading of one exit's logits (see confidence.py)."""

    label: int
    label_name: str
    confidence: float            # calibrated max softmax probability
    margin: float                # top-1 minus top-2 probability
    entropy: float               # nats, of the calibrated distribution
    top_k: tuple[tuple[int, float], ...]
    probabilities: np.ndarray    # read-only, calibrated
    coarse_label: int | None = None
    coarse_name: str | None = None
    coarse_confidence: float | None = None
    level: str = "fine"          # "coarse" when the fine confidence is below ControllerOptions.coarse_below


class ExitResult:
    """The prediction of one exit of one frame, published as soon as the exit is computed.

    Immutable. On the controller's hot path only the logits are kept: `prediction` (softmax,
    top-k, entropy, coarse class) is computed on first access, usually on the delivery thread.
    """

    __slots__ = ("frame_id", "exit_index", "elapsed_s", "steps_run", "fallback", "_prediction", "_compute")

    def __init__(self, frame_id: int, exit_index: int, prediction: Prediction | None = None, elapsed_s: float = 0.0,
                 steps_run: int = 0, *, compute: Callable[[], Prediction] | None = None,
                 fallback: bool = False) -> None:
        if (prediction is None) == (compute is None):
            raise ValueError("give a prediction or a compute function, not both")
        setter = object.__setattr__
        setter(self, "frame_id", frame_id)
        setter(self, "exit_index", exit_index)
        setter(self, "elapsed_s", elapsed_s)   # from frame start to this exit's availability
        setter(self, "steps_run", steps_run)   # steps executed for this frame so far
        setter(self, "fallback", fallback)     # computed by the fallback precision's graphs (fallback_precision)
        setter(self, "_prediction", prediction)
        setter(self, "_compute", compute)

    def __setattr__(self, name, value):
        raise AttributeError(f"ExitResult is immutable (cannot set {name!r})")

    @property
    def prediction(self) -> Prediction:
        prediction = self._prediction
        if prediction is None:
            prediction = self._compute()
            object.__setattr__(self, "_prediction", prediction)
        return prediction

    @property
    def label(self) -> int:
        """The predicted class: the argmax of the exit's logits, read without computing the whole prediction
        (the calibrated softmax, top-k and entropy cost 20-30 us; the argmax about 1 us)."""
        if self._prediction is None:
            label = getattr(self._compute, "label", None)
            if label is not None:
                return label()
        return self.prediction.label

    @property
    def label_name(self) -> str:
        """The predicted class's name, read like `label` (without computing the whole prediction)."""
        if self._prediction is None:
            name = getattr(self._compute, "label_name", None)
            if name is not None:
                return name()
        return self.prediction.label_name

    @property
    def confidence(self) -> float:
        return self.prediction.confidence

    def __eq__(self, other) -> bool:
        if not isinstance(other, ExitResult):
            return NotImplemented
        return ((self.frame_id, self.exit_index, self.elapsed_s, self.steps_run) ==
                (other.frame_id, other.exit_index, other.elapsed_s, other.steps_run)
                and self.prediction == other.prediction)

    __hash__ = None

    def __repr__(self) -> str:
        return (f"ExitResult(frame_id={self.frame_id}, exit_index={self.exit_index}, label={self.label}, "
                f"confidence={self.confidence:.4f}, elapsed_s={self.elapsed_s:.6f}, steps_run={self.steps_run}"
                f"{', fallback=True' if self.fallback else ''})")


@dataclass(frozen=True)
class FrameResult:
    """The final answer for a frame, delivered once, by its deadline."""

    frame_id: int
    status: StopReason
    best: ExitResult | None      # the result delivered (the deepest exit reached), None if no_result
    exits: tuple[ExitResult, ...]
    budget_s: float
    start_s: float               # controller clock
    deadline_s: float            # controller clock, absolute
    delivered_s: float           # controller clock, when the result was handed over
    steps_run: int = 0
    steps_skipped: int = 0       # steps of the plan not admitted (no time left) or not needed
    late_steps: int = 0          # steps that finished after the deadline (their results were dropped)
    mode: str = "anytime"
    error: str | None = None     # what went wrong, for degraded frames and rejected inputs
    user_data: object = None     # whatever the caller attached to the frame (ground truth, timestamps)

    def _restamp(self, delivered_s: float) -> None:
        """The controller's own: the time the result actually left it (set once, before the caller has it)."""
        object.__setattr__(self, "delivered_s", delivered_s)

    @classmethod
    def assemble(cls, **fields) -> "FrameResult":
        """The controller's constructor, every field given by keyword: the same frozen object, built in a
        third of the time (a frozen dataclass sets each field through object.__setattr__), because it is made
        between a frame's last step and its delivery."""
        result = object.__new__(cls)
        result.__dict__.update(fields)
        return result

    @property
    def label(self) -> int | None:
        return None if self.best is None else self.best.label

    @property
    def label_name(self) -> str | None:
        return None if self.best is None else self.best.label_name

    @property
    def confidence(self) -> float | None:
        return None if self.best is None else self.best.prediction.confidence

    @property
    def exit_index(self) -> int | None:
        return None if self.best is None else self.best.exit_index

    @property
    def fallback(self) -> bool:
        """True when the fallback precision's graphs (`ControllerOptions.fallback_precision`, e.g. int8) computed
        the delivered exit."""
        return self.best is not None and self.best.fallback

    @property
    def lateness_s(self) -> float:
        """Delivery time minus deadline (negative: early)."""
        return self.delivered_s - self.deadline_s

    @property
    def met_deadline(self) -> bool:
        """True when a result (not no_result) was delivered by the deadline."""
        return self.best is not None and self.delivered_s <= self.deadline_s
