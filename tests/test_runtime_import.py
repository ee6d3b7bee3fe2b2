"""The on-device runtime imports with numpy + LiteRT only (the full check runs in a separate
venv with only those two packages: `make test-runtime`, scripts/runtime_smoke.py)."""

from __future__ import annotations

import os
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


def test_a_program_outside_the_checkout_imports_the_package_with_the_venvs_python(tmp_path):
    """`make setup` puts the checkout on the venv's import path (scripts/setup_env.sh, link_checkout): a user's
    own program in any directory runs with `.venv/bin/python my_loop.py`."""
    program = tmp_path / "my_loop.py"
    program.write_text("import edge_anytime, simulator\nprint(edge_anytime.__file__)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(program)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, f"{out.stderr}\n(set the venv up with `make setup`: it links this checkout)"
    assert out.stdout.strip() == str(REPO / "edge_anytime" / "__init__.py")
