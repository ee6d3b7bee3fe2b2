"""The on-device runtime imports with numpy + LiteRT only (the full check runs in a separate
venv with only those two packages: `make test-runtime`, scripts/runtime_smoke.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

CHECK = """
import importlib, pkgutil, sys
import edge_anytime
for m in pkgutil.walk_packages(edge_anytime.__path__, "edge_anytime."):
    if m.name.endswith("__main__"):
        continue
    importlib.import_module(m.name)
heavy = [n for n in ("torch", "tensorflow", "onnx", "onnxruntime", "onnx2tf", "keras") if n in sys.modules]
print(",".join(heavy))
"""


def test_every_runtime_module_imports_without_heavy_packages():
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"edge_anytime imported {out.stdout.strip()} at import time"


def test_missing_optional_dependency_names_the_install_command():
    from edge_anytime.errors import MissingDependencyError, require

    try:
        require("definitely_not_installed_pkg", "serial")
    except MissingDependencyError as exc:
        assert "pip install pyserial " in str(exc) and "edge-anytime[" not in str(exc)
    else:
        raise AssertionError("expected MissingDependencyError")


def test_install_hints_name_only_extras_that_exist():
    import tomllib

    from edge_anytime.errors import EXTRAS, MissingDependencyError, require
    from tests.conftest import REPO

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) == set(declared)
    for extra, wanted in (("base", "pip install ai-edge-litert"), ("tflite", "pip install tflite-runtime")):
        try:
            require("definitely_not_installed_pkg", extra)
        except MissingDependencyError as exc:
            assert wanted in str(exc) and ("'.[base]'" not in str(exc))
