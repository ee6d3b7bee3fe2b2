"""The record every source yields, and the error every source raises."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import EdgeAnytimeError


class SourceError(EdgeAnytimeError):
    """A source cannot be opened or read; the message names the fix."""


@dataclass(frozen=True)
class SourceFrame:
    """One frame as captured.

    `capture_s` is the steady clock (`time.perf_counter`, the controller's clock) when
    the frame became available, so a live deadline is `capture_s + control period`;
    `color_order` is the frame's channel order ("RGB", or "BGR" for OpenCV frames).
    `budget_s` and `label` come from recordings that store them.
    """

    frame: np.ndarray
    budget_s: float | None = None
    label: int | None = None
    name: str = ""
    capture_s: float | None = None
    color_order: str = "RGB"
