"""Staged anytime plan vs the monolithic network: what does splitting into stage graphs cost?

For a bundle (default: the shipped deploy/bundles/gtsrb-resann), convert the same network up to
its final exit as ONE graph (from the checkpoint the bundle was exported from; cached), then time
in one interleaved run, frame by frame on real test images:

- staged a-priori plan of the final exit (only the steps it needs: the splitting cost alone),
- staged anytime plan (every step, every exit computed on the way),
- the monolithic interpreter,

each with 1 interpreter thread. The staged plans run through `edge_anytime` LiteRT runners exactly
as on the device: they start from the preprocessed NCHW tensor and pay every layout transpose the
manifest asks for. The monolithic interpreter gets its input already in its own layout (NHWC)
through bare set_tensor/invoke/get_tensor: the best case for the baseline.

    .venv/bin/python bench/bench_staged_vs_monolithic.py [--bundle B] [--checkpoint C] [--frames 500] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_BUNDLE = REPO / "deploy" / "bundles" / "gtsrb-resann"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="bundle folder (default: %(default)s)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint the bundle was exported from (default: the bundle's metadata.source.checkpoint)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8", "recommended"),
                   help="precision of the staged graphs and of the monolithic file (int8: calibrated on real "
                        "training images like the export); 'recommended': the bundle's per-graph choice, against "
                        "an fp32 monolithic file (default: %(default)s)")
    p.add_argument("--calib-samples", type=int, default=1000, help="int8 calibration images (default: %(default)s)")
    p.add_argument("--frames", type=int, default=500, help="timed frames (real test images) (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=50, help="untimed frames first (default: %(default)s)")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--cache-dir", type=Path, default=None, help="conversion cache (default: the exporter's)")
    p.add_argument("--work-dir", type=Path, default=None, help="keep the monolithic ONNX/TFLite here")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    return p.parse_args(argv)


def _percentiles(samples_ns: list[int]) -> dict:
    a = np.asarray(samples_ns, np.float64) / 1e3
    return {"median_us": float(np.median(a)), "p99_us": float(np.percentile(a, 99)), "mean_us": float(a.mean()),
            "min_us": float(a.min())}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from edge_anytime.backends import GraphLoadSpec, create_backend
    from edge_anytime.bundle import Bundle
    from edge_anytime.preprocess import Preprocessor
    from training.data import load_split
    from training.export.cache import ConversionCache
    from training.export.monolithic import convert_monolithic
    from training.export.options import ConversionOptions, default_cache_dir
    from training.train import load_checkpoint

    bundle = Bundle.load(args.bundle)
    program, model = bundle.program, bundle.model
    source = bundle.manifest.metadata.get("source", {})
    checkpoint = args.checkpoint or (Path(source["checkpoint"]) if "checkpoint" in source else None)
    if checkpoint is None:
        print("error: the bundle does not name its checkpoint; pass --checkpoint", file=sys.stderr)
        return 2
    if not checkpoint.is_absolute() and not checkpoint.is_file():
        checkpoint = REPO / checkpoint
    torch_model, config = load_checkpoint(checkpoint)
    staged = torch_model.stage_program(torch.zeros(model.input.shape))
    conversion = ConversionOptions(**{k: v for k, v in bundle.manifest.metadata.get("conversion", {}).items()
                                      if k in ("quant_type", "onnx_exporter")}, image_layout="nhwc")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-monolithic-"))
    last = len(program.exits) - 1
    dataset = model.dataset or config["dataset"]
    prepare = Preprocessor(model.input)
    mono_precision = "fp32" if args.precision == "recommended" else args.precision
    calib = None
    if mono_precision == "int8":
        from training.export.calibrate import select_indices

        train, _ = load_split(dataset, "train", args.data_dir, val_fraction=float(config.get("val_fraction", 0.1)),
                              seed=int(config.get("seed", 0)))
        calib = np.concatenate([prepare(np.asarray(train[i])) for i in select_indices(len(train), args.calib_samples, 0)])
    mono = convert_monolithic(staged, last, model.input.shape, work, ConversionCache(args.cache_dir or default_cache_dir()),
                              conversion, precision=mono_precision, calib_images=calib)

    frames, _ = load_split(dataset, "test", args.data_dir)
    count = args.warmup + args.frames
    index = np.random.default_rng(0).choice(len(frames), size=min(count, len(frames)), replace=False)
    inputs = [prepare(np.asarray(frames[i])) for i in index]
    while len(inputs) < count:
        inputs += inputs[: count - len(inputs)]

    backend = create_backend("litert", num_threads=1)
    if args.precision == "recommended":
        recommended = bundle.manifest.metadata.get("recommended_precision")
        if not recommended:
            print("error: the bundle has no metadata.recommended_precision (export with --mixed-drift-budget)",
                  file=sys.stderr)
            return 2
        precisions = bundle.resolve_precisions(recommended)
    else:
        precisions = bundle.resolve_precisions(args.precision)
    runners = {g: backend.load_graph(GraphLoadSpec(program.graphs[g], p, bundle.graph_file(g, p),
                                                   bundle.path_of(bundle.graph_file(g, p).path)))
               for g, p in precisions.items()}
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(mono.path), num_threads=1)
    interpreter.allocate_tensors()
    mono_runner = interpreter.get_signature_runner("serving_default")
    in_index = mono_runner.get_input_details()[mono.file.inputs["image"]]["index"]
    out_index = mono_runner.get_output_details()[mono.file.outputs["logits"]]["index"]
    del mono_runner  # a live SignatureRunner keeps references that make invoke() refuse to run
    mono_perm = mono.file.transpose.get("image")
    mono_inputs = [np.ascontiguousarray(x.transpose(mono_perm) if mono_perm else x) for x in inputs]
    set_tensor, invoke, get_tensor = interpreter.set_tensor, interpreter.invoke, interpreter.get_tensor

    steps = [(s.graph, runners[s.graph].run, tuple(s.inputs.items()), tuple(s.outputs.items())) for s in program.steps]
    plans = {"apriori_final": [steps[i] for i in program.apriori_plan(last)], "anytime": steps}
    final_tensor = program.exits[last].tensor

    def run_plan(plan, x, per_step=None):
        env = {program.input_tensor: x}
        for graph, run, ins, outs in plan:
            t0 = time.perf_counter_ns()
            result = run({port: env[tensor] for port, tensor in ins})
            if per_step is not None:
                per_step.setdefault(graph, []).append(time.perf_counter_ns() - t0)
            for port, tensor in outs:
                env[tensor] = result[port]
        return env[final_tensor]

    def run_mono(x):
        set_tensor(in_index, x)
        invoke()
        return get_tensor(out_index)

    # correctness first: same logits from the staged plan and the monolithic file
    max_delta = max(float(np.max(np.abs(run_plan(plans["apriori_final"], x) - run_mono(mx))))
                    for x, mx in zip(inputs[:20], mono_inputs[:20]))
    times = {"apriori_final": [], "anytime": [], "monolithic": []}
    per_step: dict[str, list[int]] = {}
    order = list(times)
    for i in range(count):
        x, mx = inputs[i], mono_inputs[i]
        rotation = order[i % 3:] + order[:i % 3]  # interleave and rotate the order: no position bias
        for name in rotation:
            t0 = time.perf_counter_ns()
            if name == "monolithic":
                run_mono(mx)
            else:
                run_plan(plans[name], x, per_step if name == "apriori_final" and i >= args.warmup else None)
            elapsed = time.perf_counter_ns() - t0
            if i >= args.warmup:
                times[name].append(elapsed)
    for runner in runners.values():
        runner.close()

    stats = {name: _percentiles(samples) for name, samples in times.items()}
    mono_median = stats["monolithic"]["median_us"]
    result = {
        "bundle": str(args.bundle), "precision": precisions, "monolithic_precision": mono_precision,
        "frames": args.frames, "threads": 1,
        "transposes": {g: {port: list(perm) for port, perm in bundle.graph_file(g, p).transpose.items()}
                       for g, p in precisions.items() if bundle.graph_file(g, p).transpose},
        "monolithic_file": str(mono.path), "monolithic_vs_staged_max_abs_delta": max_delta,
        "stats": stats,
        "ratio_apriori_final": stats["apriori_final"]["median_us"] / mono_median,
        "ratio_anytime": stats["anytime"]["median_us"] / mono_median,
        "ratio_p99_apriori_final": stats["apriori_final"]["p99_us"] / stats["monolithic"]["p99_us"],
        "per_step_median_us": {g: float(np.median(v) / 1e3) for g, v in per_step.items()},
        "target_ratio": 1.10,
    }
    result["passed"] = result["ratio_apriori_final"] <= result["target_ratio"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"bundle {args.bundle} ({args.frames} real test frames, 1 thread, interleaved; staged "
              f"{args.precision}, monolithic {mono_precision})")
        print(f"monolithic vs staged final-exit logits: max |delta| {max_delta:.2e}")
        print(f"{'plan':<16}{'median us':>12}{'p99 us':>12}{'ratio':>8}")
        for name in ("monolithic", "apriori_final", "anytime"):
            s = stats[name]
            print(f"{name:<16}{s['median_us']:>12.1f}{s['p99_us']:>12.1f}{s['median_us'] / mono_median:>8.3f}")
        print("per step (a-priori plan, median us): " +
              ", ".join(f"{g} {v:.0f}" for g, v in result["per_step_median_us"].items()))
        verdict = "within" if result["passed"] else "ABOVE"
        print(f"splitting cost (a-priori final / monolithic): {result['ratio_apriori_final']:.3f} "
              f"({verdict} the {result['target_ratio']:.2f} target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
