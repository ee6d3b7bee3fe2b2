"""Warm-up: frames run through a controller's serving path at load, to seed its latency estimates.

`Controller.warm_up` (called by the constructor with `ControllerOptions.warmup_runs`) runs mid-grey camera
frames (`Preprocessor.sample_frame`) through `run()` with a generous deadline, so they take the same thread
hand-off and hooks as served frames. Each a-priori slice (the fallback precision's slices included) runs the
same way (`FramePlan.forced_slice`), timed from the frame's planning start as a served slice is. The first
COLD_PASSES are discarded (cold caches, lazy allocation); the rest seed the estimates
(`DeadlinePolicy.seed_from_warmup`). Threaded, it also measures the timer's lateness and the thread hand-back
on this host (`handoff`).
"""

from __future__ import annotations

import time

import numpy as np

from .errors import BackendError
from .handoff import HANDOFF_SAMPLES, hand_back_latency, tight_timer_slack, timer_lateness
from .policy import WarmupSamples, is_fallback

COLD_PASSES = 3   # warm-up frames never recorded: cold caches, lazy allocation


def warm_up_controller(ctrl, runs: int, max_seconds: float, record: bool) -> None:
    """`ctrl.warm_up(runs, max_seconds, record)`: see `Controller.warm_up` (this module is its body)."""
    needed = ctrl.options.estimator.min_online
    frame = ctrl._sample_frame
    policy = ctrl.policy
    plan = ctrl._plan
    ctrl._drain_samples()   # warm-up seeds the estimators: nothing else may write them meanwhile
    plan.reset_warmup()
    slice_keys = tuple(plan.warmup_slices)   # every a-priori slice the plan holds, the fallback's included
    started = time.perf_counter()
    ctrl._warmup_delivery = []    # filled by run() while ctrl._warming: the delivery path, ...
    ctrl._warmup_handover = []    # ... and threaded, the hand-over after a wake-up
    wake_lateness: list[float] = []
    hand_back: list[float] = []
    ctrl._warming = plan.admit_all = True
    try:
        if ctrl._threaded and not ctrl._simulated_clock:
            tight_timer_slack()
            wake_lateness = timer_lateness(HANDOFF_SAMPLES)
            hand_back = hand_back_latency(ctrl._queue, HANDOFF_SAMPLES, ctrl._cpu_sharing)
        passes = 0
        returns: list[float] = []   # from delivered_s to the caller having the result: the return path
        while True:
            result = ctrl.run(frame, deadline_s=ctrl.clock.now() + 3600.0, frame_id=-1, mode="anytime")
            returns.append(ctrl.clock.now() - result.delivered_s + ctrl._return_allowance)
            for key in slice_keys:      # each a-priori slice as a served frame runs it (plan.forced_slice)
                if key not in policy.slice_values:
                    continue            # a fallback slice whose precision was dropped (below)
                plan.forced_slice = key
                errors_before = ctrl._counts["backend_errors"]
                served = ctrl.run(frame, deadline_s=ctrl.clock.now() + 3600.0, frame_id=-1, mode="apriori")
                if ctrl._counts["backend_errors"] > errors_before and not is_fallback(key):   # a step raised
                    raise BackendError(f"warm-up: {served.error}; the bundle's graphs do not run on this backend "
                                       f"(check it with `edge-anytime selftest --bundle BUNDLE`)")
            plan.forced_slice = None
            # a fallback graph that raised made the plan drop the fallback precision for good (plan.py)
            slice_keys = tuple(key for key in slice_keys if key in policy.slice_values)
            passes += 1
            if passes == COLD_PASSES:   # cold caches, lazy allocation: never recorded
                returns.clear()
                plan.reset_warmup()
                ctrl._warmup_delivery = []
                ctrl._warmup_handover = []
            enough = all(len(plan.warmup_slices[key]) >= needed for key in slice_keys)
            if passes >= runs + COLD_PASSES and (ctrl._simulated_clock or enough or
                                                 time.perf_counter() - started >= max_seconds):
                break
    finally:
        ctrl._warming = plan.admit_all = False
        plan.forced_slice = None
    if returns and not ctrl._simulated_clock:
        ctrl._return_allowance = float(np.median(returns))
    slice_times = {key: plan.warmup_slices[key] for key in slice_keys}
    policy.seed_from_warmup(WarmupSamples(plan.warmup_samples, plan.warmup_reach, slice_times, plan.warmup_steps,
                                          ctrl._warmup_delivery, hand_back, wake_lateness,
                                          ctrl._warmup_handover), record)
