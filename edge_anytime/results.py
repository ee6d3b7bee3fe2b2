"""Immutable result records: one `ExitResult` per refinement, one `FrameResult` per frame.

>>> r = FrameResult(frame_id=3, status=StopReason.NO_RESULT, best=None, exits=(), budget_s=0.001,
...                 start_s=0.0, deadline_s=0.001, delivered_s=0.001)
>>> r.label is None, r.met_deadline, r.status.value
(True, False, 'no_result')
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

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


@dataclass(frozen=True)
class ExitResult:
    """The prediction of one exit of one frame, published as soon as the exit is computed."""

    frame_id: int
    exit_index: int
    prediction: Prediction
    elapsed_s: float             # from frame start to this exit's availability
    steps_run: int               # steps executed for this frame so far

    @property
    def label(self) -> int:
        return self.prediction.label

    @property
    def confidence(self) -> float:
        return self.prediction.confidence


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

    @property
    def label(self) -> int | None:
        return None if self.best is None else self.best.prediction.label

    @property
    def label_name(self) -> str | None:
        return None if self.best is None else self.best.prediction.label_name

    @property
    def confidence(self) -> float | None:
        return None if self.best is None else self.best.prediction.confidence

    @property
    def exit_index(self) -> int | None:
        return None if self.best is None else self.best.exit_index

    @property
    def lateness_s(self) -> float:
        """Delivery time minus deadline (negative: early)."""
        return self.delivered_s - self.deadline_s

    @property
    def met_deadline(self) -> bool:
        """True when a result (not no_result) was delivered by the deadline."""
        return self.best is not None and self.delivered_s <= self.deadline_s
