"""Run inside a venv with only numpy + ai-edge-litert: the on-device runtime must import and serve.

    .venv-runtime/bin/python scripts/runtime_smoke.py deploy/bundles/gtsrb-resann
"""

import importlib
import pkgutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import edge_anytime  # noqa: E402

HEAVY = ("torch", "tensorflow", "onnx", "onnx2tf", "onnxruntime", "keras")
OPTIONAL = {"edge_anytime.serial.link", "edge_anytime.serial.server", "edge_anytime.serial.peer",
            "edge_anytime.backends.torch_ref", "edge_anytime.backends.onnx_runtime"}

for module in pkgutil.walk_packages(edge_anytime.__path__, "edge_anytime."):
    if module.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(module.name)
    except ImportError as exc:
        if module.name not in OPTIONAL and "pip install" not in str(exc):
            raise
loaded = [name for name in HEAVY if name in sys.modules]
assert not loaded, f"the runtime imported heavy packages: {loaded}"
for name in HEAVY:
    try:
        importlib.import_module(name)
    except ImportError:
        continue
    raise SystemExit(f"this smoke test must run in a venv without {name}")

bundle = sys.argv[1] if len(sys.argv) > 1 else "deploy/bundles/gtsrb-resann"
if Path(bundle).is_dir():
    frame = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    from edge_anytime.preprocess import PreprocessOptions, Preprocessor

    with edge_anytime.Controller.from_bundle(bundle) as controller:
        result = controller.run(frame, budget_s=1.0)
        camera = Preprocessor(controller.model.input, PreprocessOptions(frame_order="BGR", resize="stretch"))
        rows, cols = np.arange(720) * 32 // 720, np.arange(1280) * 32 // 1280
        bgr = np.ascontiguousarray(frame[rows][:, cols][..., ::-1])
        big = controller.run(camera(bgr), budget_s=1.0)
    assert result.best is not None, result
    assert big.label == result.label, (big, result)     # a 1280x720 BGR frame of the same image, numpy only
    print(f"runtime-only venv: import ok, {bundle}: status={result.status.value} exit={result.exit_index} "
          f"label={result.label_name!r}")
else:
    raise SystemExit(f"runtime-only venv: import ok, but the bundle {bundle} is missing")
