"""The old-image path in the default run: numpy < 2 + tflite-runtime, as on JetPack 4.6 / 5 images.

The test set-up builds `.venv-oldimage` once (like `.venv-runtime`; reused while its pins are unchanged):
Python 3.8 with the jetson-nano pins, numpy 1.24.4 + tflite-runtime 2.13.0 (this machine's x86-64 wheels of
the same releases), or, where no Python 3.8 exists, this Python with numpy 1.26.4 + tflite-runtime 2.14.0.
The runtime wheel goes in with its own dependencies checked (`pip check`), and the installed
`edge-anytime` command runs the self-test, a latency profile, and `serve` (the controller on the
tflite_runtime backend) on 32x32 frames and on the same frames as 1280x720 BGR.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DEMO_BUNDLE, REPO, data_dir
from tests.test_deploy_support import runtime_wheel  # noqa: F401 (fixture)

VENV = REPO / ".venv-oldimage"
PY38_PINS = ("numpy==1.24.4", "tflite-runtime==2.13.0")
FALLBACK_PINS = ("numpy==1.26.4", "tflite-runtime==2.14.0")


def python38() -> str | None:
    found = shutil.which("python3.8")
    candidates = ([found] if found else []) + sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))
    for path in candidates:
        if subprocess.run([path, "-c", "import venv, ensurepip"], capture_output=True).returncode == 0:
            return path
    return None


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "PYENV_VERSION"))}


@pytest.fixture(scope="session")
def old_image(runtime_wheel) -> tuple[Path, tuple[str, ...]]:
    interpreter = python38()
    pins = PY38_PINS if interpreter else FALLBACK_PINS
    interpreter = interpreter or sys.executable
    stamp = VENV / f".pins-{hashlib.sha256(' '.join((interpreter, *pins)).encode()).hexdigest()[:12]}"
    env = clean_env()
    if not stamp.exists():
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([interpreter, "-m", "venv", str(VENV)], check=True, env=env, timeout=300)
        out = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              *pins], capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        stamp.touch()
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    for args in (["install", "-q", str(runtime_wheel), *pins], ["install", "-q", "--no-deps", "--force-reinstall",
                                                               str(runtime_wheel)], ["check"]):
        out = subprocess.run(pip + args, capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, f"pip {' '.join(args)}:\n{out.stdout[-1000:]}{out.stderr[-2000:]}"
    return VENV, pins


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed command, from a folder without the checkout, so the wheel's code runs."""
    return subprocess.run([str(venv / "bin" / "edge-anytime"), *args], cwd=cwd, capture_output=True, text=True,
                          env=clean_env(), timeout=600)


def test_old_image_venv_holds_numpy1_and_tflite_runtime_only(old_image):
    venv, pins = old_image
    code = ("import numpy, sys, importlib.util as u; import tflite_runtime, edge_anytime\n"
            "print(numpy.__version__, tflite_runtime.__version__, u.find_spec('ai_edge_litert') is None, "
            "'torch' in sys.modules, edge_anytime.__file__)")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd="/", capture_output=True, text=True,
                         env=clean_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    numpy_version, tflite_version, no_litert, torch, location = out.stdout.split()
    assert f"numpy=={numpy_version}" in pins and f"tflite-runtime=={tflite_version}" in pins
    assert numpy_version.startswith("1.") and no_litert == "True" and torch == "False"
    assert str(venv) in location


def test_old_image_selftest_profile_and_serve(old_image, tmp_path):
    venv, _ = old_image
    bundle = tmp_path / "bundle"
    shutil.copytree(DEMO_BUNDLE, bundle)
    out = run(venv, "selftest", "--bundle", str(bundle), "--backend", "tflite_runtime", "--precision", "fp32",
              cwd=tmp_path)
    assert out.returncode == 0 and "PASS" in out.stdout and "backend tflite_runtime" in out.stdout, out.stderr
    out = run(venv, "profile", "--bundle", str(bundle), "--target", "old-image", "--backend", "tflite_runtime",
              "--precision", "fp32", "--warmup", "3", "--samples", "30", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    profile = json.loads((bundle / "profiles" / "old-image.json").read_text())
    assert profile["backend"] == "tflite_runtime" and all(len(p["fp32"]) == 30 for p in profile["graphs"].values())

    from training.data import load_split

    x, y = load_split("gtsrb32", "test", data_dir=data_dir())
    x, y = x[:12], y[:12]
    rows, cols = np.arange(720) * 32 // 720, np.arange(1280) * 32 // 1280
    np.savez(tmp_path / "small.npz", frames=x, labels=y)
    np.savez(tmp_path / "big.npz", frames=np.stack([img[rows][:, cols][..., ::-1] for img in x]), labels=y)
    labels = {}
    for name, extra in (("small", []), ("big", ["--resize", "stretch"])):
        log = tmp_path / f"{name}.jsonl"
        source = f"npz:{tmp_path / name}.npz" + ("?order=BGR" if name == "big" else "")
        out = run(venv, "serve", "--bundle", str(bundle), "--backend", "tflite_runtime", "--precision", "fp32",
                  "--source", source, "--budget-ms", "1000", "--sink", f"jsonl:{log}", "--profile-target",
                  "old-image", "--stats-every", "0", *extra, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        records = [json.loads(line) for line in log.read_text().splitlines()]
        assert len(records) == 12 and all(r["status"] == "final" for r in records)
        labels[name] = [r["label"] for r in records]
    assert labels["big"] == labels["small"]
    assert np.mean(np.array(labels["small"]) == y) > 0.8
