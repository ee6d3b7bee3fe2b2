"""Loss weights of the exits: static schemes, SIEVE oscillation, AdaLoss, Impatient DNNs.

An anytime net with exits 1..L is trained on sum_i B_i * loss_i. Every scheme
here scales its largest weight to 1 (as SIEVE sets B_L = 1 and AdaLoss App. C.1
scales the max weight to 1, "since DNNs often have elaborate learning rate
schedules that assume B_L = 1"), so one learning rate suits all of them; the
ratios are the ones each paper defines.

>>> static_weights("sieve", 8)
[0.09090909090909091, 0.18181818181818182, 0.09090909090909091, 0.2727272727272727, 0.09090909090909091, 0.18181818181818182, 0.09090909090909091, 1.0]
>>> static_weights("anytimenet", 3)
[0.1111111111111111, 0.25, 1.0]
>>> w = make_weighting("adaloss", 3)
>>> w.step([4.0, 2.0, 1.0])            # gamma=0.05: 0.95 * min/loss_i + 0.05
[0.2875, 0.525, 1.0]
"""

from __future__ import annotations

import math
import random
from typing import Sequence

STATIC_SCHEMES = ("const", "linear", "half_end", "sieve", "anytimenet")
BUDGET_DISTRIBUTIONS = ("uniform", "large", "small", "normal")
WEIGHTINGS = STATIC_SCHEMES + ("adaloss",) + tuple(f"impatient-{d}" for d in BUDGET_DISTRIBUTIONS)


def static_weights(scheme: str, num_exits: int) -> list[float]:
    """Fixed weights B_1..B_L of `scheme`:

    - const: all 1 (Lee et al. 2015; Huang et al. 2018), adaloss-hu-2019.md Sec. 3.
    - linear: 0.25 to 1 linearly (Zamir et al. 2017), adaloss-hu-2019.md Sec. 3.
    - half_end: "half of the total weights in the final layer and the other half
      evenly" (adaloss-hu-2019.md Sec. 3): B_L = 1, B_i = 1 / (L - 1) otherwise.
    - sieve: ann-sieve-eann-hu-2018-workshop.txt Sec. 2, see `sieve_weights`.
    - anytimenet: AnytimeNet eq. 4, B_j = 1 / (L - j + 1)^2 (anytimenet-kim-bradford-shao.md Sec. II-C).
    """
    n = int(num_exits)
    if n < 1:
        raise ValueError(f"num_exits must be >= 1, got {num_exits}")
    if scheme == "const":
        return [1.0] * n
    if scheme == "linear":
        return [1.0] if n == 1 else [0.25 + 0.75 * i / (n - 1) for i in range(n)]
    if scheme == "half_end":
        return [1.0] if n == 1 else [1.0 / (n - 1)] * (n - 1) + [1.0]
    if scheme == "sieve":
        return sieve_weights(n)
    if scheme == "anytimenet":
        return [1.0 / (n - j + 1) ** 2 for j in range(1, n + 1)]
    raise ValueError(f"unknown static scheme {scheme!r}; choose one of {STATIC_SCHEMES}")


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def sieve_weights(num_exits: int) -> list[float]:
    """SIEVE (ann-sieve-eann-hu-2018-workshop.txt, Sec. 2, "Alternating SIEVE weights").

    Add one unit to B_round(L/2); then one to each B_round(kL/4), k = 1..3; then to each
    B_round(kL/8), k = 1..7, and so on, until every early exit 1..L-1 has a weight (round
    half up, 1-based). Normalise so B_1 + ... + B_{L-1} = 1, and set B_L = 1: half of the
    total weight is on the final loss. For L = 8 the units are 1,2,1,3,1,2,1 (sum 11).
    """
    n = int(num_exits)
    if n == 1:
        return [1.0]
    units = [0] * (n + 1)  # 1-based; units[n] is overwritten by B_L = 1
    level = 1
    while not all(units[1:n]):
        parts = 2 ** level
        for k in range(1, parts):
            index = _round_half_up(k * n / parts)
            if 1 <= index <= n:
                units[index] += 1
        level += 1
    early = sum(units[1:n])
    return [u / early for u in units[1:n]] + [1.0]


def sieve_oscillate(weights: Sequence[float], rng: random.Random) -> list[float]:
    """One iteration's SIEVE weights: sample an exit i with probability proportional to B_i and
    add B_L to B_i for this iteration only (ann-sieve-eann Sec. 2: "sample proportional to the
    B_i a layer i, and add temporarily to the total loss B_L l_i")."""
    weights = list(weights)
    i = rng.choices(range(len(weights)), weights=weights, k=1)[0]
    weights[i] += weights[-1]
    return weights


def impatient_weights(distribution: str, exit_costs: Sequence[float], t_max: float | None = None,
                      mean: float | None = None, std: float | None = None) -> list[float]:
    """Impatient DNNs (impatient-dnns-amthor-2016.md): weights from a time-budget distribution.

    The risk integrates the loss of the prediction available at budget t over p(t). With exit k
    done after cumulative cost c_k, the prediction at budget t is that of the last exit with
    c_k <= t, so exit k's weight is P(c_k <= T < c_{k+1}) = F(c_{k+1}) - F(c_k) (and 1 - F(c_L)
    for the last). Budgets below c_1 have no prediction and do not depend on the weights.

    Budgets lie in [0, t_max]; the paper does not fix the support, so by default
    t_max = c_L * (L + 1) / L (the final exit gets a budget interval as wide as the mean
    cost of one exit). The four Table-1 distributions:

    - uniform: p(t) constant.
    - large ("large budgets likely"): p(t) proportional to t, F(t) = (t / t_max)^2.
    - small ("small budgets likely"): p(t) proportional to t_max - t, F(t) = 1 - (1 - t / t_max)^2.
    - normal: N(mean, std^2) truncated to [0, t_max]; defaults mean = t_max / 2, std = t_max / 6.

    Scaled so the largest weight is 1.

    >>> impatient_weights("uniform", [1, 2, 3])
    [1.0, 1.0, 1.0]
    """
    costs = [float(c) for c in exit_costs]
    if not costs or costs[0] <= 0 or any(b <= a for a, b in zip(costs, costs[1:])):
        raise ValueError(f"exit_costs must be positive and strictly increasing (cumulative), got {costs}")
    n = len(costs)
    t_max = costs[-1] * (n + 1) / n if t_max is None else float(t_max)
    if t_max <= costs[-1]:
        raise ValueError(f"t_max={t_max} must exceed the last exit's cost {costs[-1]}, else it never runs")
    if distribution == "uniform":
        cdf = lambda t: t / t_max  # noqa: E731
    elif distribution == "large":
        cdf = lambda t: (t / t_max) ** 2  # noqa: E731
    elif distribution == "small":
        cdf = lambda t: 1 - (1 - t / t_max) ** 2  # noqa: E731
    elif distribution == "normal":
        mu = t_max / 2 if mean is None else float(mean)
        sigma = t_max / 6 if std is None else float(std)
        phi = lambda t: 0.5 * (1 + math.erf((t - mu) / (sigma * math.sqrt(2))))  # noqa: E731
        lo, hi = phi(0.0), phi(t_max)
        cdf = lambda t: (phi(t) - lo) / (hi - lo)  # noqa: E731
    else:
        raise ValueError(f"unknown budget distribution {distribution!r}; choose one of {BUDGET_DISTRIBUTIONS}")
    edges = [min(c, t_max) for c in costs] + [t_max]
    probs = [max(0.0, cdf(b) - cdf(a)) for a, b in zip(edges, edges[1:])]
    top = max(probs)
    if top <= 0:
        raise ValueError(f"the {distribution} budget distribution puts no mass on any exit; change t_max/mean/std")
    return [p / top for p in probs]


class LossWeighting:
    """Weights for one training step: `step(losses)` takes the exits' current (detached)
    loss values and returns the weights to use for this step."""

    name = "static"

    def step(self, losses: Sequence[float]) -> list[float]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class StaticWeighting(LossWeighting):
    """Fixed weights, optionally with SIEVE's per-iteration oscillation."""

    def __init__(self, weights: Sequence[float], oscillate: bool = False, seed: int = 0, name: str = "static") -> None:
        self.weights = [float(w) for w in weights]
        self.oscillate = oscillate
        self.rng = random.Random(seed)
        self.name = name

    def step(self, losses: Sequence[float]) -> list[float]:
        return sieve_oscillate(self.weights, self.rng) if self.oscillate else list(self.weights)

    def state_dict(self) -> dict:
        return {"rng": repr(self.rng.getstate())} if self.oscillate else {}

    def load_state_dict(self, state: dict) -> None:
        if self.oscillate and "rng" in state:
            import ast
            version, internal, gauss = ast.literal_eval(state["rng"])
            self.rng.setstate((version, tuple(internal), gauss))


class AdaLoss(LossWeighting):
    """AdaLoss (adaloss-hu-2019.md Sec. 3 and App. C): B_i proportional to 1 / EMA(loss_i).

    With the uniform mixture of App. C.1 (Eq. 7: alpha (1 - gamma) ln l_i + gamma l_i, whose
    gradient weights l_i by alpha (1 - gamma) / l_i + gamma) and alpha = min_j EMA_j so the max
    weight is 1:  B_i = (1 - gamma) * min_j EMA_j / EMA_i + gamma.
    Defaults are the paper's: EMA momentum m = 0.9, update every step (e = 1), gamma = 0.05.
    The EMA starts at the first observed losses. `eps` guards against a zero loss (our addition).
    """

    name = "adaloss"

    def __init__(self, num_exits: int, momentum: float = 0.9, gamma: float = 0.05, update_every: int = 1,
                 eps: float = 1e-8) -> None:
        self.num_exits, self.momentum, self.gamma = int(num_exits), float(momentum), float(gamma)
        self.update_every, self.eps = int(update_every), float(eps)
        self.ema: list[float] | None = None
        self.steps = 0
        self._weights = [1.0] * self.num_exits

    def observe(self, losses: Sequence[float]) -> None:
        values = [float(v) for v in losses]
        if len(values) != self.num_exits:
            raise ValueError(f"AdaLoss expects {self.num_exits} losses, got {len(values)}")
        if self.ema is None:
            self.ema = values
        else:
            m = self.momentum
            self.ema = [m * e + (1 - m) * v for e, v in zip(self.ema, values)]

    def weights(self) -> list[float]:
        if self.ema is None:
            return [1.0] * self.num_exits
        ema = [max(e, self.eps) for e in self.ema]
        alpha = min(ema)
        return [(1 - self.gamma) * alpha / e + self.gamma for e in ema]

    def step(self, losses: Sequence[float]) -> list[float]:
        self.observe(losses)
        if self.steps % self.update_every == 0:
            self._weights = self.weights()
        self.steps += 1
        return list(self._weights)

    def state_dict(self) -> dict:
        return {"ema": self.ema, "steps": self.steps, "weights": self._weights}

    def load_state_dict(self, state: dict) -> None:
        self.ema = None if state.get("ema") is None else [float(v) for v in state["ema"]]
        self.steps = int(state.get("steps", 0))
        self._weights = [float(v) for v in state.get("weights", self._weights)]


class GroupedWeighting(LossWeighting):
    """One weighting per group of consecutive exits, e.g. per member of an EANN (adaloss Sec. 4,
    5.3: each ANN of the ensemble is trained with its own weights, its final exit at B_L = 1).
    `step` hands each group its own losses and concatenates the weights.

    >>> w = GroupedWeighting([make_weighting("adaloss", 2), make_weighting("adaloss", 3)], [2, 3])
    >>> w.step([4.0, 2.0, 8.0, 2.0, 1.0])   # AdaLoss per member: each member's smallest loss gets 1
    [0.525, 1.0, 0.16875, 0.525, 1.0]
    """

    def __init__(self, parts: Sequence[LossWeighting], sizes: Sequence[int]) -> None:
        if len(parts) != len(sizes) or min(sizes, default=0) < 1:
            raise ValueError(f"need one weighting per group and >= 1 exit per group, got {len(parts)} for {sizes}")
        self.parts, self.sizes = list(parts), [int(n) for n in sizes]
        self.name = f"{parts[0].name} per group"

    def step(self, losses: Sequence[float]) -> list[float]:
        losses = list(losses)
        if len(losses) != sum(self.sizes):
            raise ValueError(f"expected {sum(self.sizes)} losses (groups {self.sizes}), got {len(losses)}")
        weights, start = [], 0
        for part, n in zip(self.parts, self.sizes):
            weights += part.step(losses[start:start + n])
            start += n
        return weights

    def state_dict(self) -> dict:
        return {"parts": [p.state_dict() for p in self.parts]}

    def load_state_dict(self, state: dict) -> None:
        for part, sub in zip(self.parts, state.get("parts", [])):
            part.load_state_dict(sub)


def make_weighting(name: str, num_exits: int, exit_costs: Sequence[float] | None = None,
                   seed: int = 0, groups: Sequence[int] | None = None) -> LossWeighting:
    """The weighting named on the command line. `sieve` oscillates every step; `impatient-*`
    needs the exits' cumulative costs (e.g. FLOPs from the stage program).

    `groups` (exits per group, e.g. per EANN member, summing to num_exits): static schemes and
    AdaLoss are applied to each group on its own (`GroupedWeighting`), so each group's last exit
    has weight 1. Impatient weights come from one budget distribution over all exits' costs and
    are never grouped.
    """
    if groups is not None and len(groups) > 1 and not name.startswith("impatient-"):
        if sum(groups) != num_exits:
            raise ValueError(f"groups {list(groups)} must cover the {num_exits} exits exactly")
        return GroupedWeighting([make_weighting(name, n, seed=seed + i) for i, n in enumerate(groups)], groups)
    if name in STATIC_SCHEMES:
        return StaticWeighting(static_weights(name, num_exits), oscillate=(name == "sieve"), seed=seed, name=name)
    if name == "adaloss":
        return AdaLoss(num_exits)
    if name.startswith("impatient-"):
        if exit_costs is None:
            raise ValueError(f"{name} needs the exits' cumulative costs (exit_costs)")
        return StaticWeighting(impatient_weights(name.split("-", 1)[1], exit_costs), name=name)
    raise ValueError(f"unknown weighting {name!r}; choose one of {', '.join(WEIGHTINGS)}")
