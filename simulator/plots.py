"""Plots of a replay (matplotlib, Agg): accuracy vs budget with baselines, deadline-miss timeline,
exit histogram.

>>> plot_scenarios(scenarios, "docs/figures/gtsrb-sweep.png")        # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .sweep import Scenario


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib; install it with: pip install matplotlib") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scenarios(scenarios: Sequence[Scenario], path: str | os.PathLike, controller: str = "anytime",
                   threshold: float = 0.9, title: str = "", timeline: int | None = None) -> None:
    """Write a three-panel PNG. `timeline` picks the scenario of the middle panel (default: the one
    with the most misses of the controller, else the middle one)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    _accuracy(axes[0], scenarios, controller, threshold)
    if timeline is None:  # the scenario with the most varied outcomes (exits and misses)
        timeline = int(np.argmax([_entropy(sc.metrics[controller].exit_histogram) for sc in scenarios]))
    _timeline(axes[1], scenarios[timeline], controller)
    _histogram(axes[2], scenarios, controller)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _entropy(histogram) -> float:
    p = np.asarray(histogram, float)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())


def _accuracy(ax, scenarios, controller, threshold) -> None:
    policies = [controller, "apriori" if controller != "apriori" else "anytime", "best-static",
                f"threshold:{threshold:g}"]
    twin = "sim:" + controller
    mixed = twin in scenarios[0].metrics          # a real-clock run: mark what was simulated
    if mixed:
        policies.insert(1, twin)
    statics = sorted(p for p in scenarios[0].metrics if p.startswith("static:"))
    x = np.array([sc.budgets_s.mean() * 1e3 for sc in scenarios])

    def acc(policy):
        return np.array([100 * (sc.metrics[policy].accuracy or 0.0) for sc in scenarios])

    def name(policy):
        if not mixed:
            return policy
        if policy == controller:
            return f"{policy} (real clock)"
        return f"{policy[4:]} (simulated)" if policy == twin else f"{policy} (sim)"

    if len(scenarios) == 1:
        names = policies + statics
        colors = [f"C{i}" for i in range(len(policies))] + ["0.7"] * len(statics)
        ax.bar(range(len(names)), [acc(p)[0] for p in names], color=colors)
        ax.set_xticks(range(len(names)), [name(p) for p in names], rotation=30, ha="right")
        ax.set_title(f"accuracy at {scenarios[0].budget.spec}")
    elif any(sc.budget.kind != "constant" for sc in scenarios):  # distributions: bars per scenario
        width = 0.8 / len(policies)
        for i, policy in enumerate(policies):
            ax.bar(np.arange(len(scenarios)) + (i - (len(policies) - 1) / 2) * width, acc(policy), width,
                   label=name(policy), color=f"C{i}")
        ax.set_xticks(range(len(scenarios)), [sc.budget.spec for sc in scenarios], rotation=20, ha="right",
                      fontsize=8)
        ax.legend(fontsize=7)
        ax.set_title("expected accuracy per budget model (ms)")
    else:
        styles = ("-o", "--o", "-s", "--", ":") if mixed else ("-o", "-s", "--", ":")
        colors = ("C0", "C0", "C1", "C2", "C3") if mixed else ("C0", "C1", "C2", "C3")
        for policy, style, color in zip(policies, styles, colors):
            ax.plot(x, acc(policy), style, color=color, label=name(policy), markersize=3,
                    alpha=0.6 if policy == twin else 1.0)
        for policy in statics:
            ax.plot(x, acc(policy), "-", color="0.75", linewidth=0.8)
        ax.plot([], [], "-", color="0.75", label="static exits")
        ax.set_xlabel("mean budget (ms)")
        ax.legend(fontsize=8)
        ax.set_title("expected accuracy vs budget")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)


def _timeline(ax, sc: Scenario, controller: str, frames: int = 300) -> None:
    out = sc.outcomes[controller]
    n = min(frames, len(out))
    t = (out.start_s - out.start_s.min())[:n]
    budget = sc.budgets_s[:n] * 1e3
    latency = ((out.delivered_s - out.start_s) * 1e3)[:n]
    ax.plot(t, budget, "_", color="0.5", markersize=4, label="budget")
    on_time = out.on_time[:n]
    error = out.error[:n]
    exits = out.exit[:n]
    points = ax.scatter(t[on_time], latency[on_time], c=exits[on_time], s=8, cmap="viridis",
                        vmin=0, vmax=max(1, int(out.exit.max())), label="result (delivery time; colour: exit)")
    miss = ~on_time & ~error
    ax.scatter(t[miss], budget[miss], marker="x", color="red", s=18, label=f"deadline miss ({int(miss.sum())})")
    if error.any():
        ax.scatter(t[error], budget[error], marker="+", color="black", s=18, label="error")
    ax.figure.colorbar(points, ax=ax, label="exit")
    ax.set_xlabel(f"stream time (s), first {n} frames")
    ax.set_ylabel("ms")
    ax.set_title(f"{controller} timeline at {sc.budget.spec}")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)


def _histogram(ax, scenarios, controller) -> None:
    hist = np.array([sc.metrics[controller].exit_histogram for sc in scenarios], float)
    frac = hist / hist.sum(axis=1, keepdims=True)
    constant = all(sc.budget.kind == "constant" for sc in scenarios)
    labels = [f"{sc.budgets_s.mean() * 1e3:.2g}" if constant else sc.budget.spec for sc in scenarios]
    bottom = np.zeros(len(scenarios))
    cmap = _pyplot().get_cmap("viridis")
    exits = hist.shape[1] - 1
    for k in range(exits + 1):
        color = "red" if k == exits else cmap(k / max(1, exits - 1))
        ax.bar(range(len(scenarios)), 100 * frac[:, k], bottom=bottom, color=color,
               label="no result" if k == exits else f"exit {k}")
        bottom += 100 * frac[:, k]
    step = max(1, len(scenarios) // 12)
    ax.set_xticks(range(0, len(scenarios), step), labels[::step], rotation=45 if constant else 20,
                  ha="center" if constant else "right", fontsize=None if constant else 8)
    ax.set_xlabel("budget (ms)" if constant else "")
    ax.set_ylabel("frames (%)")
    ax.set_title(f"exit reached ({controller})")
    ax.legend(fontsize=7)
