"""Resampling plans in plain numpy: each output value is a weighted sum of a few input samples.

A `TapPlan` holds, for every output element of an `(H, W, C)` image, `K` flat
indices into the frame's buffer and their weights; applying it is one
`numpy.take` and one reduction, so the cost depends on the output size and `K`,
never on the frame size. Colour order, alpha, grey -> RGB, the crop and the
resize all live in the indices, so none of them copies the frame.

* `area`: each output pixel averages `S x S` point samples spread evenly over
  its footprint in the frame (`S = min(ceil(scale), max_taps)` per axis). When
  the scale is an integer <= `max_taps` this is the exact box filter (OpenCV's
  INTER_AREA); above it, a box filter on a regular sub-grid (1280x720 -> 32x32
  reads 16 samples per output pixel, not 900). Upscaling falls back to bilinear.
* `bilinear`: half-pixel centres, edges clamped (OpenCV's INTER_LINEAR).
* `nearest`: the sample at each output pixel's centre.

>>> frame = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
>>> plan = plan_resize(frame.shape, (0, 0, 4, 4), (2, 2), [[(0, 1.0)]], "area", 4)
>>> plan.apply(frame).reshape(2, 2)
array([[ 2.5,  4.5],
       [10.5, 12.5]], dtype=float32)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

ChannelMix = Sequence[Sequence[Tuple[int, float]]]  # per output channel: (frame channel, weight) pairs


@dataclass(frozen=True)
class TapPlan:
    """`indices` (K, N) into the frame's flat buffer (in elements), `weights` (K, N) or None for a plain mean."""

    indices: np.ndarray
    weights: np.ndarray | None
    out_shape: tuple[int, int, int]

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, C) float32 output of `frame` (C-contiguous, the shape and strides the plan was made for)."""
        values = frame.reshape(-1).take(self.indices)
        if self.weights is None:
            taps = self.indices.shape[0]
            if taps == 1:
                out = values[0].astype(np.float32)
            elif values.dtype == np.uint8 and taps <= 257:
                out = values.sum(axis=0, dtype=np.uint16).astype(np.float32) * np.float32(1.0 / taps)
            else:
                out = values.sum(axis=0, dtype=np.float32) * np.float32(1.0 / taps)
        else:
            out = np.einsum("kn,kn->n", values.astype(np.float32), self.weights)
        return out.reshape(self.out_shape)


def _area_taps(start: int, length: int, out: int, max_taps: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample positions (out, S) and weights (out, S) along one axis, S evenly spaced samples per cell."""
    taps = max(1, min(math.ceil(length / out), max_taps))
    centres = (np.arange(out)[:, None] + (np.arange(taps)[None, :] + 0.5) / taps) * (length / out)
    positions = np.minimum(np.floor(centres).astype(np.intp), length - 1) + start
    return positions, np.full(positions.shape, 1.0 / taps)


def _linear_taps(start: int, length: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    source = np.clip((np.arange(out) + 0.5) * (length / out) - 0.5, 0, length - 1)
    low = np.floor(source).astype(np.intp)
    high = np.minimum(low + 1, length - 1)
    frac = source - low
    return np.stack([low, high], 1) + start, np.stack([1.0 - frac, frac], 1)


def _nearest_taps(start: int, length: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    positions = np.minimum(np.floor((np.arange(out) + 0.5) * (length / out)).astype(np.intp), length - 1)
    return positions[:, None] + start, np.ones((out, 1))


def axis_taps(start: int, length: int, out: int, interpolation: str, max_taps: int):
    """Positions and weights of one axis: `length` input samples from `start` resampled to `out`."""
    if interpolation == "nearest":
        return _nearest_taps(start, length, out)
    if interpolation == "area" and length >= out:
        return _area_taps(start, length, out, max_taps)
    return _linear_taps(start, length, out)


def plan_resize(shape: tuple[int, ...], box: tuple[int, int, int, int], size: tuple[int, int], mix: ChannelMix,
                interpolation: str, max_taps: int) -> TapPlan:
    """The plan taking `box` = (top, left, height, width) of a C-contiguous (H, W, C) frame to `size`.

    `mix[c]` lists the frame channels (and weights) that make output channel c:
    [[(2, 1.0)], [(1, 1.0)], [(0, 1.0)]] swaps BGR to RGB, [[(0, 1.0)]] * 3 makes grey RGB.
    """
    row_stride, col_stride, chan_stride = shape[1] * shape[2], shape[2], 1
    top, left, height, width = box
    rows, row_w = axis_taps(top, height, size[0], interpolation, max_taps)        # (H, Ky)
    cols, col_w = axis_taps(left, width, size[1], interpolation, max_taps)        # (W, Kx)
    taps_c = max(len(m) for m in mix)
    chans = np.array([[m[i][0] if i < len(m) else m[0][0] for i in range(taps_c)] for m in mix])       # (C, Kc)
    chan_w = np.array([[m[i][1] if i < len(m) else 0.0 for i in range(taps_c)] for m in mix])
    # tap axes first (Ky, Kx, Kc), then the output (H, W, C)
    index = (rows.T[:, None, None, :, None, None] * row_stride + cols.T[None, :, None, None, :, None] * col_stride
             + chans.T[None, None, :, None, None, :] * chan_stride)
    weight = row_w.T[:, None, None, :, None, None] * col_w.T[None, :, None, None, :, None] \
        * chan_w.T[None, None, :, None, None, :]
    out_shape = (size[0], size[1], len(mix))
    taps = index.shape[0] * index.shape[1] * index.shape[2]
    index = np.broadcast_to(index, (*index.shape[:3], *out_shape)).reshape(taps, -1)
    weight = np.broadcast_to(weight, (*weight.shape[:3], *out_shape)).reshape(taps, -1)
    uniform = np.allclose(weight, 1.0 / taps)
    return TapPlan(np.ascontiguousarray(index, dtype=np.intp),
                   None if uniform else np.ascontiguousarray(weight, dtype=np.float32), out_shape)


def exact_area(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Reference box filter with integer cell boundaries over every pixel (slow: for tests and benchmarks)."""
    rows = (np.arange(size[0] + 1) * image.shape[0]) // size[0]
    cols = (np.arange(size[1] + 1) * image.shape[1]) // size[1]
    summed = np.add.reduceat(np.add.reduceat(image, cols[:-1], axis=1, dtype=np.float64), rows[:-1], axis=0)
    counts = np.diff(rows)[:, None, None] * np.diff(cols)[None, :, None]
    return (summed / counts).astype(np.float32)
