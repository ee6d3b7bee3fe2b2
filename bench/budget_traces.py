"""Speed-driven budget traces in units of the first exit's latency, so they carry across hardware.

A vehicle's speed v(t) sets the time to react: budget(t) = L0 * lo * (v_max / v(t)) with v in
[v_max / (hi / lo), v_max], i.e. budgets between `lo` and `hi` times the first exit's median latency
L0 (0.8x-12x by default). Shapes (each seeded):

* `cruise`     - smooth random speed changes every 2-6 s of stream time;
* `stop-and-go` - alternating slow and fast phases of random length, with short ramps;
* `sweep`      - accelerate and brake sinusoidally with a random period of 3-10 s;
* `bursty`     - mostly slow (large budgets) with sudden fast spells (tight budgets);
* `random`     - the speed drawn anew for every frame, uniform over its range: budgets that jump from frame
                 to frame with no trend to follow (mostly tight: the budget goes as 1 / speed).

>>> b = speed_trace("cruise", seed=0, timestamps=np.arange(300) / 30, l0_s=1e-3)
>>> bool(0.8e-3 <= b.min() and b.max() <= 12e-3)
True
"""

from __future__ import annotations

import numpy as np

SHAPES = ("cruise", "stop-and-go", "sweep", "bursty", "random")


def _speed(shape: str, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Speed as a fraction of the maximum, in [0, 1], at times `t` (seconds)."""
    span = float(t.max() - t.min()) if t.size else 0.0
    t = t - (t.min() if t.size else 0.0)
    if shape == "cruise":
        knots = np.cumsum(rng.uniform(2, 6, int(span / 2) + 3))
        return np.interp(t, np.concatenate([[0.0], knots]), rng.uniform(0, 1, knots.size + 1))
    if shape == "stop-and-go":
        edges = np.cumsum(rng.uniform(1, 5, int(span) + 3))
        levels = np.where(np.arange(edges.size + 1) % 2 == 0, rng.uniform(0, 0.2, edges.size + 1),
                          rng.uniform(0.7, 1, edges.size + 1))
        phase = np.searchsorted(edges, t)
        ramp = np.clip((t - np.concatenate([[0.0], edges])[phase]) / 0.5, 0, 1)
        previous = levels[np.maximum(phase - 1, 0)]
        return previous + (levels[phase] - previous) * ramp
    if shape == "sweep":
        period = rng.uniform(3, 10)
        return 0.5 + 0.5 * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    if shape == "bursty":
        speed = np.full(t.shape, 0.1)
        for start in rng.uniform(0, max(span, 1e-9), int(span / 5) + 1):
            speed[(t >= start) & (t < start + rng.uniform(0.3, 1.5))] = rng.uniform(0.8, 1)
        return speed
    if shape == "random":
        return rng.uniform(0, 1, t.shape)
    raise ValueError(f"unknown trace shape {shape!r}; use one of {SHAPES}")


def speed_trace(shape: str, seed: int, timestamps: np.ndarray, l0_s: float, lo: float = 0.8,
                hi: float = 12.0) -> np.ndarray:
    """Per-frame budgets in seconds for frames at `timestamps` (see the module docstring)."""
    rng = np.random.default_rng([seed, SHAPES.index(shape) if shape in SHAPES else 99])
    fraction = np.clip(_speed(shape, np.asarray(timestamps, np.float64), rng), 0.0, 1.0)
    v_min = lo / hi
    speed = v_min + (1 - v_min) * fraction            # in [lo/hi, 1] of the maximum speed
    return l0_s * lo / speed
