"""Export a trained anytime model to a bundle: per-graph ONNX -> onnx2tf -> TFLite, checked and atomic.

    python -m training.export --checkpoint runs/gtsrb-resann/checkpoint.pt \\
        --out deploy/bundles/gtsrb-resann --precision fp32,fp16,int8 --mixed-drift-budget 0.01

Modules: options (typed options), onnx_export (torch -> ONNX), convert (onnx2tf, cached),
ports (checked port mapping), calibrate (per-stage int8 calibration on real images), parity
(torch vs ONNX Runtime vs LiteRT, int8 drift, mixed precision), cache, bundle_writer (atomic
output), pipeline (the whole job), __main__ (the CLI). See docs/export.md.
"""

from .common import ExportError
from .options import ConversionOptions, ExportOptions
from .pipeline import ExportInputs, ExportSummary, export_bundle

__all__ = ["ConversionOptions", "ExportError", "ExportInputs", "ExportOptions", "ExportSummary", "export_bundle"]
