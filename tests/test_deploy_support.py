"""Fixtures for the deploy tests: a tiny real bundle (TFLite files at fp32/fp16/int8) and the runtime wheel.

The bundle mirrors tests.conftest.tiny_program (stem -> head0, body -> head1, body -> head2; 4 classes;
8x8 RGB input). Its graphs are converted by TensorFlow in a subprocess (about 10 s, once: the result is
kept in pytest's cache, keyed by this builder's source), and its reference logits come from a numpy
forward pass, so the self-test compares LiteRT against an independent implementation.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BUILDER = r'''
import hashlib, json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf

out = sys.argv[1]
rng = np.random.default_rng(7)
W = {"stem": (rng.normal(0, 0.6, (4, 3)), rng.normal(0, 0.1, (4, 1))),
     "body": (rng.normal(0, 0.6, (4, 4)), rng.normal(0, 0.1, (4, 1))),
     "head": (rng.normal(0, 1.5, (4, 4)), rng.normal(0, 0.2, (1, 4)))}
W = {k: (a.astype(np.float32), b.astype(np.float32)) for k, (a, b) in W.items()}
MEAN, STD = 0.5, 0.25

def np_conv(name, x):                     # a 1x1 convolution + relu, NCHW
    w, b = W[name]
    c = x.shape[1]
    return np.maximum(w @ x.reshape(c, 64) + b, 0).reshape(1, 4, 8, 8)

def np_head(x):
    w, b = W["head"]
    return x.reshape(4, 64).mean(1)[None] @ w.T + b

def tf_graph(name, channels):
    w, b = (tf.constant(v) for v in W[name])
    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((1, channels, 8, 8), tf.float32, name="x")])
        def f(self, x):
            if name == "head":
                return {"logits": tf.matmul(tf.reduce_mean(tf.reshape(x, (4, 64)), 1)[None], tf.transpose(w)) + b}
            return {"y": tf.reshape(tf.nn.relu(tf.matmul(w, tf.reshape(x, (channels, 64))) + b), (1, 4, 8, 8))}
    return M()

frames = rng.integers(0, 256, (6, 8, 8, 3)).astype(np.float32)
inputs = (((frames / 255.0) - MEAN) / STD).transpose(0, 3, 1, 2)[:, None].astype(np.float32)  # (N,1,3,8,8)
feats = {"stem": [], "body": [], "head": []}
refs = {f"logits{i}": [] for i in range(3)}
for x in inputs:
    feats["stem"].append(x)
    f = np_conv("stem", x)
    for i in range(3):
        if i:
            feats["body"].append(f)
            f = np_conv("body", f)
        feats["head"].append(f)
        refs[f"logits{i}"].append(np_head(f).astype(np.float32))

os.makedirs(f"{out}/graphs"); os.makedirs(f"{out}/reference")
def sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()
graphs = {}
for name, channels, port in (("stem", 3, "y"), ("body", 4, "y"), ("head", 4, "logits")):
    module = tf_graph(name, channels)
    files = {}
    for precision in ("fp32", "fp16", "int8"):
        conv = tf.lite.TFLiteConverter.from_concrete_functions([module.f.get_concrete_function()], module)
        if precision == "fp16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        if precision == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([v.astype(np.float32)] for v in feats[name] * 4)
        path = f"graphs/{name}.{precision}.tflite"
        with open(f"{out}/{path}", "wb") as fh:
            fh.write(conv.convert())
        files[precision] = {"path": path, "sha256": sha(f"{out}/{path}"), "inputs": {"x": "x"},
                            "outputs": {port: port}}
    shape_out = [1, 4] if name == "head" else [1, 4, 8, 8]
    graphs[name] = {"inputs": [{"name": "x", "shape": [1, channels, 8, 8]}],
                    "outputs": [{"name": port, "shape": shape_out}], "flops": 1000, "params": 20, "files": files}
np.savez(f"{out}/reference/self_test.npz", input=inputs, **{k: np.stack(v) for k, v in refs.items()})
steps, previous = [], "image"
for i in range(3):
    steps.append({"name": f"body{i}", "graph": "stem" if i == 0 else "body", "inputs": {"x": previous},
                  "outputs": {"y": f"f{i}"}})
    steps.append({"name": f"head{i}", "graph": "head", "inputs": {"x": f"f{i}"}, "outputs": {"logits": f"logits{i}"}})
    previous = f"f{i}"
manifest = {"format": "edge-anytime-bundle", "version": 1,
            "model": {"name": "tiny", "arch": "tiny", "labels": ["a", "b", "c", "d"],
                      "input": {"tensor": "image", "shape": [1, 3, 8, 8], "mean": [MEAN] * 3, "std": [STD] * 3}},
            "graphs": graphs, "steps": steps,
            "exits": [{"index": i, "tensor": f"logits{i}", "val_accuracy": 0.5 + 0.1 * i} for i in range(3)],
            "files": {"reference/self_test.npz": sha(f"{out}/reference/self_test.npz")},
            "reference": "reference/self_test.npz", "metadata": {"exporter": "tests/test_deploy_support.py"}}
with open(f"{out}/manifest.json", "w") as fh:
    json.dump(manifest, fh, indent=1)
'''


def build_tiny_bundle(out: Path) -> Path:
    """Build the tiny bundle into `out` (must not exist); needs TensorFlow (the full .venv)."""
    pytest.importorskip("tensorflow", reason="building the tiny TFLite bundle needs the full environment")
    result = subprocess.run([sys.executable, "-c", BUILDER, str(out)], capture_output=True, text=True, timeout=300)
    if result.returncode:
        raise RuntimeError(f"tiny bundle builder failed:\n{result.stderr[-3000:]}")
    return out


_SESSION: dict[str, Path] = {}   # the fixtures below are imported by several modules: build once per session


@pytest.fixture(scope="session")
def tiny_bundle(request, tmp_path_factory) -> Path:
    """A cached, read-only-by-convention tiny bundle; copy it before changing anything."""
    if "bundle" not in _SESSION:
        _SESSION["bundle"] = _tiny_bundle(request, tmp_path_factory)
    return _SESSION["bundle"]


def _tiny_bundle(request, tmp_path_factory) -> Path:
    key = hashlib.sha256(BUILDER.encode()).hexdigest()[:12]
    store = getattr(request.config, "cache", None)       # None with -p no:cacheprovider
    cache = Path(store.mkdir("edge-anytime-deploy")) if store is not None else tmp_path_factory.mktemp("bundle")
    bundle = cache / f"tiny-{key}"
    if not (bundle / "manifest.json").is_file():
        tmp = cache / f"tiny-{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        build_tiny_bundle(tmp)
        shutil.rmtree(bundle, ignore_errors=True)
        tmp.rename(bundle)
    return bundle


@pytest.fixture(scope="session")
def runtime_wheel(tmp_path_factory) -> Path:
    """The edge_anytime wheel, built once per session."""
    from edge_anytime.deploy.package import build_wheel

    if "wheel" not in _SESSION:
        _SESSION["wheel"] = build_wheel(REPO, tmp_path_factory.mktemp("wheel"))
    return _SESSION["wheel"]


def copy_bundle(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest)
    return dest


def test_tiny_bundle_is_a_valid_bundle_with_three_precisions(tiny_bundle):
    from edge_anytime import Bundle

    bundle = Bundle.load(tiny_bundle)
    assert bundle.precisions() == ("fp32", "fp16", "int8")
    assert [e.tensor for e in bundle.program.exits] == ["logits0", "logits1", "logits2"]
