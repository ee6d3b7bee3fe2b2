"""Preprocessing a 1280x720 BGR camera frame vs the bundle's own final-exit plan, side by side in one run.

    .venv/bin/python bench/bench_preprocess.py [--bundle deploy/bundles/gtsrb-resann] [--frames 2000] [--json OUT]

Interleaves, frame by frame, on real GTSRB test images upscaled to 1280x720 and stored BGR (as OpenCV
delivers them), one thread (LiteRT num_threads=1; numpy has no threads here):
  preprocess  - edge_anytime.preprocess.Preprocessor(model.input, frame_order=BGR, resize=stretch, area):
                the frame -> the model input tensor,
  final_plan  - the a-priori plan of the last exit (every step it depends on) on that tensor, LiteRT fp32,
  cv2_area    - for comparison, cv2.resize(INTER_AREA, 1 thread) + the same normalisation, when OpenCV is
                importable (the runtime does not use it: see the ratio).
Prints medians and the ratio preprocess / final_plan (target < 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_anytime import Bundle  # noqa: E402
from edge_anytime.preprocess import PreprocessOptions, Preprocessor  # noqa: E402
from edge_anytime.runners import close_runners, load_runners  # noqa: E402


def camera_frames(count: int) -> np.ndarray:
    """`count` real GTSRB test images upscaled (nearest) to 720x1280, BGR."""
    try:
        from training.data import load_split

        x, _ = load_split("gtsrb32", "test")
        x = x[:count]
    except Exception:  # data not available: random frames still measure the cost
        x = np.random.default_rng(0).integers(0, 255, (count, 32, 32, 3), dtype=np.uint8)
    rows, cols = np.arange(720) * 32 // 720, np.arange(1280) * 32 // 1280
    return np.stack([np.ascontiguousarray(image[rows][:, cols][..., ::-1]) for image in x])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="deploy/bundles/gtsrb-resann")
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--distinct", type=int, default=64, help="distinct 720p frames cycled through")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    bundle = Bundle.load(args.bundle)
    program = bundle.program
    frames = camera_frames(args.distinct)
    prepare = Preprocessor(bundle.model.input, PreprocessOptions(frame_order="BGR", resize="stretch"))
    runners = load_runners(bundle, bundle.resolve_precisions("fp32"), "litert", threads=1)
    plan = [program.steps[i] for i in program.apriori_plan(len(program.exits) - 1)]
    cv2 = None
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass

    def final_plan(tensor):
        env = {program.input_tensor: tensor}
        for step in plan:
            out = runners[step.graph].run({port: env[name] for port, name in step.inputs.items()})
            env.update({name: out[port] for port, name in step.outputs.items()})
        return env

    def cv2_area(frame):
        small = cv2.resize(frame, (32, 32), interpolation=cv2.INTER_AREA)[..., ::-1]
        return prepare(np.ascontiguousarray(small))

    times: dict[str, list[float]] = {"preprocess": [], "final_plan": []}
    if cv2 is not None:
        times["cv2_area"] = []
    for i in range(args.frames + 50):
        frame = frames[i % len(frames)]
        t0 = time.perf_counter()
        tensor = prepare(frame)
        t1 = time.perf_counter()
        final_plan(tensor)
        t2 = time.perf_counter()
        if cv2 is not None:
            cv2_area(frame)
        t3 = time.perf_counter()
        if i >= 50:                                   # warm-up
            times["preprocess"].append(t1 - t0)
            times["final_plan"].append(t2 - t1)
            if cv2 is not None:
                times["cv2_area"].append(t3 - t2)
    close_runners(runners)
    medians = {name: statistics.median(values) * 1e6 for name, values in times.items()}
    ratio = medians["preprocess"] / medians["final_plan"]
    print(f"bundle {bundle.model.name}: final exit {len(program.exits) - 1}, plan of {len(plan)} steps, fp32, "
          f"1 thread; {args.frames} frames 1280x720 BGR")
    print(f"{'what':<12} {'median us':>10}")
    for name, value in medians.items():
        print(f"{name:<12} {value:>10.1f}")
    print(f"preprocess / final_plan = {ratio:.3f}  (target < 1: {'met' if ratio < 1 else 'MISSED'})")
    if "cv2_area" in medians:
        print(f"cv2_area / preprocess = {medians['cv2_area'] / medians['preprocess']:.2f}")
    report = {"frames": args.frames, "medians_us": medians, "ratio_preprocess_to_final_plan": ratio}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
