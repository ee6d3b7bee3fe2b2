"""Typed export options (the CLI turns flags into these; everything else takes them).

>>> ExportOptions(precisions=("fp32", "int8")).conversion.image_layout
'nchw'
>>> ExportOptions(precisions=("fp64",))
Traceback (most recent call last):
...
training.export.common.ExportError: unknown precision 'fp64'; use one or more of ('fp32', 'fp16', 'int8')
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from edge_anytime.manifest import PRECISIONS

from .common import ExportError

#: Which onnx2tf file holds each bundle precision. int8 = float inputs/outputs with int8 internals.
ONNX2TF_SUFFIX = {"fp32": "float32", "fp16": "float16", "int8": "integer_quant"}


def default_cache_dir() -> Path:
    """`EDGE_ANYTIME_CACHE` if set, else `$XDG_CACHE_HOME/edge_anytime` (~/.cache/edge_anytime)."""
    env = os.environ.get("EDGE_ANYTIME_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge_anytime"


@dataclass(frozen=True)
class ConversionOptions:
    """Everything that decides the converted bytes of one graph (part of its cache key).

    image_layout: layout of the model-input port in the file. "nchw" (default: kept with `-k`, so
        every port of every file has the program's layout and the device never transposes in
        numpy; onnx2tf puts one TRANSPOSE op inside the first graph instead, measured ~7 us/frame
        cheaper on the demo model than the alternative) or "nhwc" (onnx2tf's native layout; the
        manifest records transpose [0, 2, 3, 1] and the runner transposes each frame). Feature
        inputs are always kept NCHW (`-k`). See docs/export.md, "Layout policy".
    quant_type: onnx2tf `-qt` for int8 (per-channel or per-tensor weights).
    onnx_exporter: "dynamo" (torch.export based, opset 18; the maintained path in torch 2.13) or
        "legacy" (TorchScript based, opset 17; deprecated, kept as a fallback for modules that
        torch.export cannot capture).
    timeout_s: wall-clock limit of one onnx2tf run.
    """

    image_layout: str = "nchw"
    quant_type: str = "per-channel"
    onnx_exporter: str = "dynamo"
    timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.image_layout not in ("nhwc", "nchw"):
            raise ExportError(f"image_layout must be 'nhwc' or 'nchw', got {self.image_layout!r}")
        if self.quant_type not in ("per-channel", "per-tensor"):
            raise ExportError(f"quant_type must be 'per-channel' or 'per-tensor', got {self.quant_type!r}")
        if self.onnx_exporter not in ("dynamo", "legacy"):
            raise ExportError(f"onnx_exporter must be 'dynamo' or 'legacy', got {self.onnx_exporter!r}")

    @property
    def opset(self) -> int:
        return 18 if self.onnx_exporter == "dynamo" else 17

    def key(self) -> dict:
        """The part of the options that changes converted bytes (timeout does not)."""
        return {"image_layout": self.image_layout, "quant_type": self.quant_type,
                "onnx_exporter": self.onnx_exporter, "opset": self.opset}


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how to check it.

    precisions: bundle precisions to write (fp32 is always written: it is the parity reference).
    calib_samples: real training images for int8 calibration (every graph sees the features that the
        earlier stages compute on these images).
    parity_samples: real test images chained through every backend for parity.json.
    self_test_samples: test images stored in reference/self_test.npz for the device self-test.
    mixed_drift_budget: when set (needs int8), choose int8 per graph only while the argmax agreement
        of every exit with the fp32 plan drops by at most this fraction; written to the manifest
        metadata as `recommended_precision`.
    fp32_atol: the float32 parity gate (max |delta logits| torch vs LiteRT, every exit); with
        100% argmax agreement. A failed gate aborts the export unless allow_parity_failure.
    """

    precisions: tuple[str, ...] = ("fp32",)
    calib_samples: int = 1000
    parity_samples: int = 256
    self_test_samples: int = 16
    mixed_drift_budget: float | None = None
    fp32_atol: float = 1e-4
    allow_parity_failure: bool = False
    seed: int = 0
    work_dir: Path | None = None
    cache_dir: Path | None = field(default_factory=default_cache_dir)
    conversion: ConversionOptions = field(default_factory=ConversionOptions)

    def __post_init__(self) -> None:
        precisions = tuple(dict.fromkeys(self.precisions))
        for precision in precisions:
            if precision not in PRECISIONS:
                raise ExportError(f"unknown precision {precision!r}; use one or more of {PRECISIONS}")
        if "fp32" not in precisions:
            precisions = ("fp32",) + precisions
        object.__setattr__(self, "precisions", tuple(p for p in PRECISIONS if p in precisions))
        if self.mixed_drift_budget is not None:
            if "int8" not in self.precisions:
                raise ExportError("--mixed-drift-budget chooses int8 per graph: add int8 to --precision")
            if not 0 <= self.mixed_drift_budget < 1:
                raise ExportError(f"mixed_drift_budget must be in [0, 1), got {self.mixed_drift_budget}")
        for name in ("calib_samples", "parity_samples", "self_test_samples"):
            if getattr(self, name) < 1:
                raise ExportError(f"{name} must be >= 1, got {getattr(self, name)}")

    def key(self) -> dict:
        """The part of the options that changes the bundle's bytes."""
        return {"precisions": list(self.precisions), "calib_samples": self.calib_samples,
                "parity_samples": self.parity_samples, "self_test_samples": self.self_test_samples,
                "mixed_drift_budget": self.mixed_drift_budget, "fp32_atol": self.fp32_atol, "seed": self.seed,
                "conversion": self.conversion.key()}
