"""The simulator: replay a sensor stream with a budget per frame through the anytime Controller.

>>> from simulator import open_stream, parse_budget
>>> parse_budget("large:0.5:3").mean_ms()
2.375

Pieces (docs/simulator.md): stream sources (`sources`), budget models
(`budgets`), the prediction cache (`cache`), the vectorised replay (`fast`),
live replays through the Controller (`live`), baselines, metrics, sweeps,
plots, and the command line `python -m simulator.replay`.
"""

from .budgets import BudgetError, BudgetModel, parse_budget, parse_sweep
from .cache import CacheError, PredictionCache, build_cache, cached_predictions
from .fast import ExitPredictions, ReplaySetup, exit_predictions, replay_fast
from .metrics import Metrics, Outcomes, compute_metrics, outcomes_from_results
from .sources import SensorFrame, Stream, StreamError, load_npz, open_stream, save_npz
from .sweep import Scenario, SweepConfig, run_sweep
from .timing import LatencyDraws, PlanInfo, draw_latencies

__all__ = [
    "BudgetError", "BudgetModel", "CacheError", "ExitPredictions", "LatencyDraws", "Metrics", "Outcomes", "PlanInfo",
    "PredictionCache", "ReplaySetup", "Scenario", "SensorFrame", "Stream", "StreamError", "SweepConfig",
    "build_cache", "cached_predictions", "compute_metrics", "draw_latencies", "exit_predictions", "load_npz",
    "open_stream", "outcomes_from_results", "parse_budget", "parse_sweep", "replay_fast", "run_sweep", "save_npz",
]
