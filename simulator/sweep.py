"""Budget scenarios over one prediction cache: the controller and the baselines side by side.

>>> setup = ReplaySetup.create(cache.program, profile, cache.precisions)              # doctest: +SKIP
>>> scenarios = run_sweep(cache, setup, profile, parse_sweep("constant:0.5:5:0.25"))   # doctest: +SKIP
>>> print(format_table(scenarios))                                                    # doctest: +SKIP

Every scenario of a sweep sees the same frames and the same per-frame latency
draws (common random numbers), so differences between budgets and policies
are not sampling noise of the latencies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from edge_anytime.profile import LatencyProfile

from .baselines import baseline_outcomes
from .budgets import BudgetModel
from .fast import ExitPredictions, ReplaySetup, exit_predictions, replay_fast
from .metrics import Metrics, Outcomes, compute_metrics
from .progress import progress
from .timing import LatencyDraws, draw_latencies

CONTROLLER_MODES = ("anytime", "apriori")


@dataclass(frozen=True)
class SweepConfig:
    """How scenarios are replayed. engine: 'fast' (vectorised) or 'live' (Controller + FakeBackend)."""

    seed: int = 0
    threshold: float = 0.9
    engine: str = "fast"
    verify: bool = False
    show_progress: bool = True
    latency_scale: float = 1.0    # drawn step latencies times this (a slower target than profiled)
    dispatch_s: float = 0.0       # capture -> controller delay (transfer, queueing, thread hand-off)

    def __post_init__(self) -> None:
        if self.engine not in ("fast", "live"):
            raise ValueError(f"engine must be 'fast' or 'live', got {self.engine!r}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if not self.dispatch_s >= 0:
            raise ValueError(f"dispatch_s must be >= 0, got {self.dispatch_s}")
        if not self.latency_scale > 0:
            raise ValueError(f"latency_scale must be > 0, got {self.latency_scale}")


@dataclass(frozen=True, eq=False)
class Scenario:
    """One budget model replayed: per-frame budgets, and outcomes and metrics per policy."""

    budget: BudgetModel
    budgets_s: np.ndarray
    outcomes: Mapping[str, Outcomes]
    metrics: Mapping[str, Metrics]
    best_static: int | None
    simulated: tuple[str, ...] = field(default=())   # policies replayed on the simulated clock


class ReplayMismatch(AssertionError):
    """The live and the vectorised replay disagree (a bug: please report it with the command line)."""


def compare_outcomes(a: Outcomes, b: Outcomes) -> list[int]:
    """Frames where exit, status, label or precision (fallback or not) differ."""
    differ = (a.exit != b.exit) | (a.status != b.status) | (a.label != b.label) | (a.fallback != b.fallback)
    return [int(i) for i in np.flatnonzero(differ)]


def policy_metrics(outcomes: Mapping[str, Outcomes], cache) -> dict[str, Metrics]:
    model = cache.model
    return {name: compute_metrics(out, cache.labels, len(cache.program.exits), model.fine_to_coarse)
            for name, out in outcomes.items()}


def simulate_policies(cache, setup: ReplaySetup, preds: ExitPredictions, budgets: np.ndarray,
                      draws: LatencyDraws, threshold: float, dispatch_s: float = 0.0,
                      fallback=None) -> tuple[dict[str, Outcomes], int | None]:
    """Controller modes and baselines on the simulated clock (vectorised); `fallback`: a drawn FallbackReplay
    (simulator/fallback.py) for a setup with the precision fallback."""
    out = {mode: replay_fast(setup, preds, budgets, cache.timestamps, draws, cache.valid, cache.bad_steps, mode,
                             dispatch_s, fallback) for mode in CONTROLLER_MODES}
    baselines, best = baseline_outcomes(setup, preds, budgets, cache.timestamps, draws, threshold, cache.valid,
                                        cache.bad_steps, dispatch_s)
    out.update(baselines)
    return out, best


def run_sweep(cache, setup: ReplaySetup, profile: LatencyProfile, models: Sequence[BudgetModel],
              config: SweepConfig = SweepConfig(), fallback=None) -> list[Scenario]:
    """Replay every budget model on the simulated clock (`fallback`: the setup's FallbackReplay, if any)."""
    from .live import replay_live_sim

    preds = exit_predictions(cache, setup.options.coarse_below)
    draws = draw_latencies(setup.plan, profile, cache.precisions, len(cache), config.seed, config.latency_scale)
    if fallback is not None:
        fallback = fallback.drawn(setup.plan, profile, config.seed, config.latency_scale)
    scenarios = []
    for model in progress(models, desc="budget scenarios", enabled=config.show_progress and len(models) > 1):
        budgets = model.sample(len(cache), config.seed, cache.timestamps)
        outcomes, best = simulate_policies(cache, setup, preds, budgets, draws, config.threshold, config.dispatch_s,
                                           fallback)
        if config.engine == "live":
            mode = setup.options.mode
            live, _ = replay_live_sim(cache, setup, profile, budgets, draws, dispatch_s=config.dispatch_s,
                                      show_progress=config.show_progress and len(models) == 1, fallback=fallback)
            if config.verify:
                differ = compare_outcomes(live, outcomes[mode])
                if differ:
                    raise ReplayMismatch(f"{model.spec}: live and vectorised replays differ on {len(differ)} frames, "
                                         f"first {differ[:5]}")
            outcomes[mode] = live
        scenarios.append(Scenario(model, budgets, outcomes, policy_metrics(outcomes, cache), best,
                                  tuple(outcomes)))
    return scenarios


def result_budget(setup: ReplaySetup, preds: ExitPredictions, draws: LatencyDraws, starts_s: np.ndarray,
                  exit_index: int, fraction: float = 0.99, mode: str = "anytime", fallback=None) -> float:
    """The smallest constant budget (seconds) with which at least `fraction` of the frames get, by the deadline,
    a result at exit `exit_index` or one worth at least as much (validation accuracy; bisection over the
    vectorised replay)."""
    worth = np.asarray(setup.values) >= setup.values[exit_index]

    def share(budget: float) -> float:
        out = replay_fast(setup, preds, np.full(len(starts_s), budget), starts_s, draws, mode=mode, fallback=fallback)
        return float(np.mean(out.on_time & (out.exit >= 0) & worth[np.maximum(out.exit, 0)]))

    low, high = 0.0, 1e-3
    while share(high) < fraction:
        low, high = high, high * 2
        if high > 10.0:
            return float("inf")
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (low, mid) if share(mid) >= fraction else (mid, high)
        if high - low < 1e-7:
            break
    return high


def exit_table(cache, setup: ReplaySetup, profile: LatencyProfile, measured_scale: float = 1.0,
               seed: int = 0, fallback=None) -> list[dict]:
    """Per exit: validation and stream accuracy, measured latency to reach it (anytime path, from the
    cache build, times `measured_scale`), its segment's typical and tail latency, and the smallest
    constant budget with which the controller delivers it (or a deeper exit) for 99% of the frames on the
    simulated clock (`result_budget`; with the setup's `fallback`, a FallbackReplay, its results count too)."""
    program, plan = cache.program, setup.plan
    preds = exit_predictions(cache)
    draws = draw_latencies(plan, profile, cache.precisions, len(cache), seed)
    if fallback is not None:
        fallback = fallback.drawn(plan, profile, seed)
    truth = cache.labels
    labelled = (truth >= 0) & cache.valid
    measured = np.cumsum(np.nan_to_num(cache.step_latency_s.astype(np.float64)), axis=1) * measured_scale
    rows = []
    for position, (k, steps) in enumerate(plan.segments):
        exit_ = program.exits[k]
        correct = preds.label[:, k] == truth
        reach = measured[cache.valid, steps[-1]] * 1e3 if cache.valid.any() else np.zeros(1)
        needed = result_budget(setup, preds, draws, cache.timestamps, k, fallback=fallback)
        rows.append({"index": k, "name": exit_.name, "val_accuracy": exit_.val_accuracy,
                     "accuracy": float(correct[labelled].mean()) if labelled.any() else None,
                     "latency_ms": {"p50": float(np.percentile(reach, 50)), "p99": float(np.percentile(reach, 99))},
                     "segment_estimate_ms": setup.segment_tail[position] * 1e3, "min_budget_ms": needed * 1e3,
                     "apriori_tail_ms": setup.slice_tail[k] * 1e3, "flops": exit_.flops})
    return rows


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


def format_real_table(scenarios: Sequence[Scenario], controller: str = "anytime") -> str:
    """Real-clock runs: budget -> exits reached, accuracy, deadline met, delivery latency."""
    n_exits = len(scenarios[0].metrics[controller].exit_histogram) - 1
    exits = " ".join(f"{'e' + str(i):>5}" for i in range(n_exits))
    head = (f"{'budget (ms)':<16} | {'exits reached (% of frames)':^{6 * n_exits + 6}} | {'accuracy':>8} "
            f"{'coarse':>7} {'deadline met':>12} {'p99 latency':>12}")
    sub = f"{'':<16} | {exits} {'none':>5} |"
    lines = [head, sub, "-" * len(head)]
    for sc in scenarios:
        m = sc.metrics[controller]
        hist = np.asarray(m.exit_histogram, float) / max(1, m.frames) * 100
        cells = " ".join(f"{v:5.1f}" for v in hist)
        p99 = m.latency_ms.get("p99") if m.latency_ms else None
        lines.append(f"{sc.budget.spec.split(':', 1)[-1] if sc.budget.spec.startswith('constant:') else sc.budget.spec:<16} | "
                     f"{cells} | {_pct(m.accuracy):>8} {_pct(m.coarse_accuracy):>7} {_pct(m.deadline_met):>12} "
                     f"{'-' if p99 is None else f'{p99:.3f} ms':>12}")
    lines.append("accuracy: correct results delivered by the deadline / all frames (a frame with no result counts "
                 "as wrong); coarse: the superclass right;")
    lines.append("deadline met: frames with a result by their deadline; p99 latency: frame start -> result delivered.")
    return "\n".join(lines)


def format_table(scenarios: Sequence[Scenario], controller: str = "anytime", threshold: float = 0.9) -> str:
    """budget -> exit reached, accuracy, deadline met/missed, with the baselines' accuracy."""
    thr = f"threshold:{threshold:g}"
    other = "anytime" if controller == "apriori" else "apriori"
    twin = "sim:" + controller
    has_twin = twin in scenarios[0].metrics
    fallback = any(sc.metrics[controller].fallback_results for sc in scenarios)   # a column only when it answered
    head = (f"{'budget (ms)':<22} {'mean':>6} | {controller + ' exit':>13} " + (f"{'fallbk':>6} " if fallback else "")
            + f"{'acc':>6} {'met':>6} {'missed':>6} "
            + (f"{'sim acc':>7} {'sim met':>7} " if has_twin else "")
            + f"| {other:>7} {'best-static':>14} {thr:>15} {'miss':>6}")
    lines = [head, "-" * len(head)]
    for sc in scenarios:
        m = sc.metrics[controller]
        apriori = sc.metrics.get(other)
        best = sc.metrics["best-static"]
        th = sc.metrics[thr]
        exit_text = "-" if m.mean_exit is None else f"{m.mean_exit:.2f}"
        best_text = f"{_pct(best.accuracy)} (" + ("none" if sc.best_static is None else f"e{sc.best_static}") + ")"
        sim = (f"{_pct(sc.metrics[twin].accuracy):>7} {_pct(sc.metrics[twin].deadline_met):>7} " if has_twin else "")
        share = f"{_pct(m.fallback_results / m.frames if m.frames else None):>6} " if fallback else ""
        lines.append(f"{sc.budget.spec:<22} {sc.budgets_s.mean() * 1e3:6.2f} | {exit_text:>13} {share}{_pct(m.accuracy):>6} "
                     f"{_pct(m.deadline_met):>6} {_pct(m.miss_rate):>6} {sim}| "
                     f"{_pct(apriori.accuracy if apriori else None):>7} "
                     f"{best_text:>14} {_pct(th.accuracy):>15} {_pct(th.miss_rate):>6}")
    return "\n".join(lines)


def format_exits(rows: Sequence[dict]) -> str:
    head = f"{'exit':<10} {'val acc':>8} {'acc':>7} {'reach p50':>10} {'p99':>8} {'seg p99':>10} {'99% budget':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['name']:<10} {_pct(r['val_accuracy']):>8} {_pct(r['accuracy']):>7} "
                     f"{r['latency_ms']['p50']:8.3f}ms {r['latency_ms']['p99']:6.3f}ms {r['segment_estimate_ms']:8.3f}ms "
                     f"{r['min_budget_ms']:9.3f}ms")
    return "\n".join(lines)


def scenario_json(sc: Scenario, timeline: bool = False) -> dict:
    b = sc.budgets_s * 1e3
    out = {"budget": sc.budget.spec, "budget_ms": {"mean": float(b.mean()), "min": float(b.min()),
                                                    "max": float(b.max()), "p50": float(np.median(b))},
           "best_static_exit": sc.best_static, "simulated": list(sc.simulated),
           "policies": {name: m.to_json() for name, m in sc.metrics.items()}}
    if timeline:
        out["timeline"] = timeline_json(sc)
    return out


def timeline_json(sc: Scenario, policy: str = "anytime") -> dict:
    """Per-frame records of one policy (columns of equal length)."""
    out = sc.outcomes[policy]
    return {"policy": policy, "start_s": out.start_s.round(6).tolist(),
            "budget_ms": (sc.budgets_s * 1e3).round(4).tolist(), "exit": out.exit.tolist(),
            "status": out.status_names(), "label": out.label.tolist(),
            "latency_ms": ((out.delivered_s - out.start_s) * 1e3).round(4).tolist(),
            "on_time": out.on_time.tolist()}
