"""`python -m training.export`: a trained run's checkpoint -> a validated bundle. See docs/export.md.

Progress goes to stderr; the JSON summary (or {"error": ...}) to stdout; exit status 0 on success,
1 on an export error (nothing written at --out), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .common import ExportError
from .options import ConversionOptions, ExportOptions, default_cache_dir

EPILOG = """examples:
  python -m training.export --checkpoint runs/gtsrb-resann/checkpoint.pt --out deploy/bundles/gtsrb-resann \\
      --precision fp32,fp16,int8 --mixed-drift-budget 0.01
  python -m training.export --checkpoint runs/c10/checkpoint.pt --out /tmp/b --precision fp32 --parity-samples 64
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, help="RUN_DIR/checkpoint.pt written by training.train "
                   "(metrics.json next to it gives exit temperatures and validation accuracies)")
    p.add_argument("--out", required=True, type=Path, help="bundle folder to write (replaced atomically if it holds a bundle)")
    p.add_argument("--precision", default="fp32", help="comma-separated: fp32, fp16, int8 (fp32 is always written); "
                   "default: %(default)s")
    p.add_argument("--calib-samples", type=int, default=1000, help="real training images for int8 calibration "
                   "(default: %(default)s)")
    p.add_argument("--parity-samples", type=int, default=256, help="real test images for parity.json (default: %(default)s)")
    p.add_argument("--self-test-samples", type=int, default=16, help="test images stored in reference/self_test.npz "
                   "(default: %(default)s)")
    p.add_argument("--mixed-drift-budget", type=float, default=None, metavar="FRACTION",
                   help="choose int8 per graph only while every exit's argmax agreement with the fp32 plan drops by "
                        "at most FRACTION (e.g. 0.01); writes metadata.recommended_precision. Needs int8")
    p.add_argument("--data-dir", type=Path, default=None, help="folder holding gtsrb32/ and cifar10/ "
                   "(default: $EDGE_ANYTIME_DATA or ../shared/data)")
    p.add_argument("--work-dir", type=Path, default=None, help="keep ONNX files and onnx2tf logs here "
                   "(default: a temporary folder, removed on success)")
    p.add_argument("--cache-dir", type=Path, default=None, help=f"conversion cache (default: {default_cache_dir()})")
    p.add_argument("--no-cache", action="store_true", help="convert every graph again")
    p.add_argument("--image-layout", choices=("nhwc", "nchw"), default=ConversionOptions.image_layout,
                   help="layout of the image port in the files (default: %(default)s; see docs/export.md)")
    p.add_argument("--quant-type", choices=("per-channel", "per-tensor"), default="per-channel")
    p.add_argument("--onnx-exporter", choices=("dynamo", "legacy"), default="dynamo",
                   help="torch.onnx exporter (default: %(default)s; legacy is deprecated in torch 2.13)")
    p.add_argument("--fp32-atol", type=float, default=1e-4, help="float32 parity gate on max |delta logits| "
                   "(default: %(default)s)")
    p.add_argument("--allow-parity-failure", action="store_true", help="write the bundle even if the fp32 gate fails")
    p.add_argument("--name", default=None, help="model name in the manifest (default: the run folder's name)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/parity image samples")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--readme-notes", type=Path, default=None, metavar="FILE",
                   help="markdown appended to the bundle's README.md (e.g. the commands that made it)")
    return p.parse_args(argv)


def build_options(args: argparse.Namespace) -> ExportOptions:
    return ExportOptions(
        precisions=tuple(p.strip() for p in args.precision.split(",") if p.strip()),
        calib_samples=args.calib_samples, parity_samples=args.parity_samples,
        self_test_samples=args.self_test_samples, mixed_drift_budget=args.mixed_drift_budget,
        fp32_atol=args.fp32_atol, allow_parity_failure=args.allow_parity_failure, seed=args.seed,
        work_dir=args.work_dir, cache_dir=None if args.no_cache else (args.cache_dir or default_cache_dir()),
        conversion=ConversionOptions(image_layout=args.image_layout, quant_type=args.quant_type,
                                     onnx_exporter=args.onnx_exporter))


def load_run(checkpoint: Path, data_dir: Path | None, name: str | None):
    """ExportInputs for a training run: model, stage program, real data, exit metadata."""
    import numpy as np
    import torch

    from edge_anytime.bundle import sha256_file

    from ..data import load_split, validation_seed
    from ..train import load_checkpoint
    from .modelinfo import dataset_model_info
    from .pipeline import ExportInputs

    try:
        model, config = load_checkpoint(checkpoint)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        raise ExportError(f"cannot load checkpoint {checkpoint}: {exc}") from exc
    dataset = config["dataset"]
    calib_frames, _ = load_split(dataset, "train", data_dir, val_fraction=float(config.get("val_fraction", 0.1)),
                                 seed=validation_seed(config.get("seed", 0), config.get("split_seed")))
    test_frames, test_labels = load_split(dataset, "test", data_dir)
    height, width, channels = test_frames.shape[1:]
    model_info = dataset_model_info(dataset, config["arch"], name or checkpoint.resolve().parent.name,
                                    (1, channels, height, width), config.get("normalisation"),
                                    config.get("class_names"))
    spec = model_info.input
    metrics_path = checkpoint.parent / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    temperatures = metrics.get("temperatures", config.get("temperatures"))
    val_accuracy = metrics.get("val_accuracy", config.get("val_accuracy"))
    staged = model.stage_program(torch.zeros(spec.shape))
    source = {"checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint), "arch": config["arch"],
              "arch_kwargs": config.get("arch_kwargs", {}), "dataset": dataset, "epoch": config.get("epoch"),
              "metrics": "metrics.json" if metrics else None,
              "test_accuracy": metrics.get("test_accuracy", config.get("test_accuracy"))}
    return ExportInputs(staged=staged, model=model_info, calib_frames=np.asarray(calib_frames),
                        test_frames=np.asarray(test_frames), test_labels=np.asarray(test_labels),
                        temperatures=temperatures, val_accuracy=val_accuracy, source=source)


def _progress_bar(total: int, quiet: bool):
    if quiet:
        return None, (lambda label: None)
    from tqdm import tqdm

    bar = tqdm(total=total, file=sys.stderr, unit="step", dynamic_ncols=True, desc="export")

    def tick(label: str) -> None:
        bar.set_postfix_str(label)
        bar.update(1)

    return bar, tick


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = build_options(args)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .pipeline import export_bundle

    bar = None
    try:
        inputs = load_run(args.checkpoint, args.data_dir, args.name)
        if args.readme_notes is not None:
            if not args.readme_notes.is_file():
                raise ExportError(f"--readme-notes {args.readme_notes}: no such file")
            inputs = dataclasses.replace(inputs, source={**inputs.source,
                                                         "readme_notes": args.readme_notes.read_text()})
        graphs = len(inputs.staged.program.graphs)
        total = 1 + graphs + 1 + graphs + 1 + 1 + len(options.precisions) + ("int8" in options.precisions) \
            + (options.mixed_drift_budget is not None) + 1
        bar, tick = _progress_bar(total, args.quiet)
        summary = export_bundle(inputs, args.out, options, progress=tick)
    except ExportError as exc:
        if bar is not None:
            bar.close()
        print(f"error: {exc}", file=sys.stderr)
        print(json.dumps({"error": str(exc)}))
        return 1
    if bar is not None:
        bar.n = bar.total
        bar.close()
    print(json.dumps(summary.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
