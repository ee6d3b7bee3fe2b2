"""Per-frame time budgets from a spec string in milliseconds; seeded and reproducible.

>>> model = parse_budget("uniform:1:3")
>>> b = model.sample(4, seed=0)               # seconds, one per frame
>>> bool(((b >= 0.001) & (b <= 0.003)).all()), model.mean_ms()
(True, 2.0)
>>> parse_budget("uniform:3:1")
Traceback (most recent call last):
...
simulator.budgets.BudgetError: budget 'uniform:3:1': LO must be < HI (milliseconds), e.g. uniform:1:3

Specs (all times in milliseconds; options after `?`, e.g. `uniform:1:3?jitter=0.1`):

* `constant:MS`
* `uniform:LO:HI`
* `normal:MEAN:STD` - truncated to budgets > 0 (redrawn, not clipped)
* `large:LO:HI[:K]` / `small:LO:HI[:K]` - Impatient DNNs (Amthor et al. 2016) Table 1
  "large budgets are likely" / "small budgets are likely". The paper shows these only as
  icons; we use the power densities p(t) ~ u^K and p(t) ~ (1-u)^K with u = (t-LO)/(HI-LO),
  K = 2 by default: means LO + 3/4 (HI-LO) and LO + 1/4 (HI-LO), which match the ratio of the
  table's average times to the uniform scheme's (1.72/1.11 and 0.50/1.11).
* `speed:DIST_M:VMIN_KMH:VMAX_KMH[:PERIOD_S]` - budget = the time the vehicle needs to travel
  DIST_M at its current speed (1000 * DIST_M / (v / 3.6) ms), so it shrinks as the speed grows.
  The speed follows a smooth seeded trace between VMIN and VMAX (new random speed every
  PERIOD_S seconds of stream time, default 4, linearly interpolated at the frame timestamps).
  `speed:DIST_M:FILE.csv` reads the trace (columns time_s, speed_kmh) instead.
* `trace:FILE.csv` / `trace:FILE.json` - one budget per frame (a column `budget_ms`, or one
  number per line; JSON: a list or {"budget_ms": [...]}).

Option `jitter=MS` adds Gaussian noise with that standard deviation to every budget (clipped
at 1 us). Budgets must be > 0 and below 10 s (a larger number is probably in microseconds).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

MAX_BUDGET_MS = 10_000.0
KINDS = ("constant", "uniform", "normal", "large", "small", "speed", "trace")
_USAGE = {"constant": "constant:MS", "uniform": "uniform:LO:HI", "normal": "normal:MEAN:STD",
          "large": "large:LO:HI[:K]", "small": "small:LO:HI[:K]",
          "speed": "speed:DIST_M:VMIN_KMH:VMAX_KMH[:PERIOD_S] or speed:DIST_M:FILE.csv",
          "trace": "trace:FILE.csv or trace:FILE.json"}


class BudgetError(ValueError):
    """A budget spec or trace is unusable; the message names the fix."""


@dataclass(frozen=True)
class BudgetModel:
    """A parsed budget spec. `sample(n, seed, timestamps)` returns budgets in seconds."""

    spec: str
    kind: str
    params: tuple[float, ...] = ()
    path: str | None = None
    jitter_ms: float = 0.0

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, seed: int = 0, timestamps: np.ndarray | None = None) -> np.ndarray:
        """`n` budgets in seconds. The same (spec, seed) always gives the same budgets."""
        rng = np.random.default_rng([seed, _stable_hash(self.spec)])
        ms = self._sample_ms(n, rng, timestamps)
        if self.jitter_ms:
            ms = np.maximum(ms + rng.normal(0.0, self.jitter_ms, n), 1e-3)
        return ms / 1e3

    def _sample_ms(self, n: int, rng: np.random.Generator, timestamps) -> np.ndarray:
        p = self.params
        if self.kind == "constant":
            return np.full(n, p[0])
        if self.kind == "uniform":
            return rng.uniform(p[0], p[1], n)
        if self.kind == "normal":
            out = rng.normal(p[0], p[1], n)
            for _ in range(1000):
                bad = out <= 0
                if not bad.any():
                    return out
                out[bad] = rng.normal(p[0], p[1], int(bad.sum()))
            raise BudgetError(f"budget {self.spec!r}: almost no mass above 0 ms; raise MEAN or lower STD")
        if self.kind in ("large", "small"):
            u = rng.uniform(0.0, 1.0, n) ** (1.0 / (p[2] + 1.0))    # inverse CDF of p(u) ~ u^K
            if self.kind == "small":
                u = 1.0 - u
            return p[0] + (p[1] - p[0]) * u
        if self.kind == "speed":
            return self._speed_ms(n, rng, timestamps)
        return self._trace_ms(n)

    def _speed_ms(self, n: int, rng: np.random.Generator, timestamps) -> np.ndarray:
        t = np.arange(n) / 30.0 if timestamps is None else np.asarray(timestamps, np.float64)[:n]
        if self.path is not None:
            trace_t, trace_v = _read_speed_trace(Path(self.path), self.spec)
            speed = np.interp(t, trace_t, trace_v)
        else:
            _, vmin, vmax, period = self.params
            t = t - (t.min() if n else 0.0)
            knots = int(math.ceil((t.max() if n else 0.0) / period)) + 2
            speed = np.interp(t, np.arange(knots) * period, rng.uniform(vmin, vmax, knots))
        return 1e3 * self.params[0] / (speed / 3.6)

    def _trace_ms(self, n: int) -> np.ndarray:
        values = read_trace(Path(self.path), self.spec)
        if len(values) < n:
            raise BudgetError(f"budget {self.spec!r}: the trace has {len(values)} budgets but the stream has {n} "
                              f"frames; pass --frames {len(values)} or a longer trace")
        return values[:n].copy()

    # ------------------------------------------------------------------ definitions (for tests and docs)
    def mean_ms(self) -> float | None:
        """The analytic mean of the distribution without jitter (None for traces and speed)."""
        p = self.params
        if self.kind == "constant":
            return p[0]
        if self.kind == "uniform":
            return (p[0] + p[1]) / 2
        if self.kind == "normal":
            a = p[0] / p[1]
            return p[0] + p[1] * _phi(a) / _Phi(a)
        if self.kind in ("large", "small"):
            frac = (p[2] + 1) / (p[2] + 2)
            return p[0] + (p[1] - p[0]) * (frac if self.kind == "large" else 1 - frac)
        return None

    def cdf_ms(self, x_ms: float) -> float | None:
        """P(budget <= x_ms) without jitter (None for traces and speed)."""
        p = self.params
        if self.kind == "constant":
            return float(x_ms >= p[0])
        if self.kind in ("uniform", "large", "small"):
            u = min(1.0, max(0.0, (x_ms - p[0]) / (p[1] - p[0])))
            if self.kind == "uniform":
                return u
            k = p[2] + 1
            return u ** k if self.kind == "large" else 1.0 - (1.0 - u) ** k
        if self.kind == "normal":
            if x_ms <= 0:
                return 0.0
            z0 = _Phi(-p[0] / p[1])
            return (_Phi((x_ms - p[0]) / p[1]) - z0) / (1.0 - z0)
        return None

    def bounds_ms(self) -> tuple[float, float] | None:
        """(min, max) the budget can take without jitter, when bounded."""
        p = self.params
        if self.kind == "constant":
            return p[0], p[0]
        if self.kind in ("uniform", "large", "small"):
            return p[0], p[1]
        if self.kind == "speed" and self.path is None:
            return 1e3 * p[0] / (p[2] / 3.6), 1e3 * p[0] / (p[1] / 3.6)
        return None


def _phi(x: float) -> float:
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _Phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _check_ms(value: float, what: str, spec: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise BudgetError(f"budget {spec!r}: {what} must be > 0 milliseconds, got {value:g}")
    if value > MAX_BUDGET_MS:
        raise BudgetError(f"budget {spec!r}: {what} = {value:g} ms is over 10 s; budgets are in milliseconds "
                          f"(divide microseconds by 1000)")
    return value


def parse_budget(spec: str) -> BudgetModel:
    """Parse a budget spec (see the module docstring); errors say what to write instead."""
    text = spec.strip()
    body, _, query = text.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(options) - {"jitter"}
    if unknown:
        raise BudgetError(f"budget {spec!r}: unknown option(s) {sorted(unknown)}; the only option is jitter=MS")
    jitter = 0.0
    if "jitter" in options:
        try:
            jitter = float(options["jitter"])
        except ValueError:
            raise BudgetError(f"budget {spec!r}: jitter must be a number of milliseconds") from None
        if not math.isfinite(jitter) or jitter < 0:
            raise BudgetError(f"budget {spec!r}: jitter must be >= 0 milliseconds")
    kind, _, rest = body.partition(":")
    if kind not in KINDS:
        raise BudgetError(f"unknown budget {spec!r}; use one of: {', '.join(_USAGE.values())} (milliseconds)")
    usage = _USAGE[kind]
    if kind == "trace":
        if not rest:
            raise BudgetError(f"budget {spec!r}: write {usage}")
        read_trace(Path(rest), text)  # validate now, not in the middle of a sweep
        return BudgetModel(text, kind, (), rest, jitter)
    fields = rest.split(":") if rest else []
    if kind == "speed" and len(fields) == 2 and not _is_number(fields[1]):
        dist = _parse_numbers(fields[:1], text, usage)[0]
        _read_speed_trace(Path(fields[1]), text)
        return BudgetModel(text, kind, (_positive(dist, "DIST_M", text),), fields[1], jitter)
    values = _parse_numbers(fields, text, usage)
    arity = {"constant": (1,), "uniform": (2,), "normal": (2,), "large": (2, 3), "small": (2, 3), "speed": (3, 4)}
    if len(values) not in arity[kind]:
        raise BudgetError(f"budget {spec!r}: write {usage} (milliseconds)")
    if kind == "constant":
        _check_ms(values[0], "MS", text)
    elif kind in ("uniform", "large", "small"):
        _check_ms(values[0], "LO", text)
        _check_ms(values[1], "HI", text)
        if values[0] >= values[1]:
            raise BudgetError(f"budget {spec!r}: LO must be < HI (milliseconds), e.g. {kind}:1:3")
        if kind != "uniform":
            values = values[:2] + [values[2] if len(values) == 3 else 2.0]
            if not values[2] >= 0:
                raise BudgetError(f"budget {spec!r}: the shape K must be >= 0 (0 is uniform, 2 the default)")
    elif kind == "normal":
        _check_ms(values[0], "MEAN", text)
        if not values[1] > 0:
            raise BudgetError(f"budget {spec!r}: STD must be > 0 milliseconds (for a fixed budget use constant:MS)")
    elif kind == "speed":
        dist, vmin, vmax = (_positive(v, n, text) for v, n in zip(values, ("DIST_M", "VMIN_KMH", "VMAX_KMH")))
        if vmin > vmax:
            raise BudgetError(f"budget {spec!r}: VMIN_KMH must be <= VMAX_KMH, e.g. speed:0.05:30:130")
        period = _positive(values[3], "PERIOD_S", text) if len(values) == 4 else 4.0
        values = [dist, vmin, vmax, period]
        _check_ms(1e3 * dist / (vmax / 3.6), "the budget at VMAX", text)
        _check_ms(1e3 * dist / (vmin / 3.6), "the budget at VMIN", text)
    return BudgetModel(text, kind, tuple(float(v) for v in values), None, jitter)


def parse_sweep(spec: str) -> list[BudgetModel]:
    """'constant:START:STOP:STEP' (ms, STOP included) -> one constant budget model per value.

    >>> [m.spec for m in parse_sweep("constant:0.5:1.5:0.5")]
    ['constant:0.5', 'constant:1', 'constant:1.5']
    """
    kind, _, rest = spec.strip().partition(":")
    fields = rest.split(":")
    if kind != "constant" or len(fields) != 3:
        raise BudgetError(f"sweep {spec!r}: write constant:START:STOP:STEP in milliseconds "
                          f"(or repeat --budget SPEC for other distributions)")
    start, stop, step = _parse_numbers(fields, spec, "constant:START:STOP:STEP")
    if not step > 0 or stop < start:
        raise BudgetError(f"sweep {spec!r}: need STEP > 0 and STOP >= START, e.g. constant:0.5:5:0.25")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > 10_000:
        raise BudgetError(f"sweep {spec!r} has {count} budgets; use a larger STEP")
    return [parse_budget(f"constant:{round(start + i * step, 9):g}") for i in range(count)]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _parse_numbers(fields: list[str], spec: str, usage: str) -> list[float]:
    try:
        return [float(f) for f in fields]
    except ValueError:
        raise BudgetError(f"budget {spec!r}: write {usage} with numbers in milliseconds") from None


def _positive(value: float, name: str, spec: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise BudgetError(f"budget {spec!r}: {name} must be > 0, got {value:g}")
    return value


def read_trace(path: Path, spec: str) -> np.ndarray:
    """Budgets in ms from a .csv (column budget_ms, or one number per line) or .json file."""
    if not path.is_file():
        raise BudgetError(f"budget {spec!r}: trace file {path} does not exist")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            values = data.get("budget_ms") if isinstance(data, dict) else data
        elif path.suffix.lower() == ".csv":
            rows = [r for r in csv.reader(path.read_text().splitlines()) if r and r[0].strip()]
            column = 0
            if rows and not _is_number(rows[0][0]):
                header = [h.strip() for h in rows.pop(0)]
                if "budget_ms" not in header:
                    raise BudgetError(f"budget {spec!r}: {path} has columns {header}; name the budget column budget_ms")
                column = header.index("budget_ms")
            values = [float(r[column]) for r in rows]
        else:
            raise BudgetError(f"budget {spec!r}: trace files must end in .csv or .json, got {path.name}")
        values = np.asarray(values, np.float64)
    except (ValueError, TypeError, IndexError, json.JSONDecodeError) as exc:
        if isinstance(exc, BudgetError):
            raise
        raise BudgetError(f"budget {spec!r}: cannot read trace {path}: {exc}") from exc
    if values.ndim != 1 or len(values) == 0:
        raise BudgetError(f"budget {spec!r}: trace {path} holds no budgets")
    bad = np.flatnonzero(~np.isfinite(values) | (values <= 0) | (values > MAX_BUDGET_MS))
    if len(bad):
        _check_ms(float(values[bad[0]]), f"budget #{bad[0]} of {path.name}", spec)
    return values


def _read_speed_trace(path: Path, spec: str) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise BudgetError(f"budget {spec!r}: speed trace {path} does not exist (columns time_s, speed_kmh)")
    try:
        rows = [r for r in csv.reader(path.read_text().splitlines()) if r and r[0].strip()]
        if rows and not _is_number(rows[0][0]):
            rows.pop(0)
        t = np.array([float(r[0]) for r in rows])
        v = np.array([float(r[1]) for r in rows])
    except (ValueError, IndexError) as exc:
        raise BudgetError(f"budget {spec!r}: speed trace {path} must have columns time_s, speed_kmh ({exc})") from exc
    if len(t) == 0 or np.any(np.diff(t) < 0) or np.any(~(v > 0)):
        raise BudgetError(f"budget {spec!r}: speed trace {path} needs increasing times and speeds > 0 km/h")
    return t, v
