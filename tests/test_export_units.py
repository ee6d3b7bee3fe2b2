"""Fast unit tests of the exporter's pieces (no onnx2tf run): options, atomic output, cache,
deterministic files, the unsupported-layer error, the CLI's --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.export.bundle_writer import write_atomically
from training.export.cache import ConversionCache
from training.export.common import ExportError, check_port_name, save_npz_deterministic
from training.export.options import ExportOptions

REPO = Path(__file__).resolve().parents[1]


def test_options_always_include_fp32_and_order_precisions():
    assert ExportOptions(precisions=("int8", "fp16")).precisions == ("fp32", "fp16", "int8")


def test_mixed_budget_needs_int8():
    with pytest.raises(ExportError, match="add int8"):
        ExportOptions(precisions=("fp32",), mixed_drift_budget=0.01)


def test_port_names_must_be_identifiers():
    check_port_name("logits_0", "g")
    with pytest.raises(ExportError, match="port name 'a/b'"):
        check_port_name("a/b", "graph 'g'")


def test_npz_is_byte_identical(tmp_path):
    arrays = {"input": np.ones((2, 1, 3, 4, 4), np.float32), "logits0": np.arange(6, dtype=np.float32).reshape(2, 1, 3)}
    save_npz_deterministic(tmp_path / "a.npz", arrays)
    save_npz_deterministic(tmp_path / "b.npz", dict(reversed(list(arrays.items()))))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["input", "logits0"]


def test_atomic_writer_keeps_previous_bundle_on_failure(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text("{}")

    def fail(tmp: Path):
        (tmp / "graphs").mkdir()
        (tmp / "graphs" / "half.tflite").write_bytes(b"x")
        raise ExportError("conversion failed")

    with pytest.raises(ExportError):
        write_atomically(out, fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


def test_atomic_writer_replaces_a_bundle_and_refuses_other_folders(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    write_atomically(out, lambda tmp: (tmp / "manifest.json").write_text('{"new": 1}'))
    assert (out / "manifest.json").read_text() == '{"new": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    other = tmp_path / "docs"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="refusing to replace"):
        write_atomically(other, lambda tmp: None)


def test_cache_rejects_a_corrupted_entry(tmp_path):
    cache = ConversionCache(tmp_path / "cache")
    source = tmp_path / "g.tflite"
    source.write_bytes(b"tflite bytes")
    key = "ab" * 32
    stored = cache.put(key, {"fp32": source})
    assert cache.get(key)["fp32"].read_bytes() == b"tflite bytes"
    stored["fp32"].write_bytes(b"tampered")
    assert cache.get(key) is None


def test_unsupported_op_names_graph_node_layer_and_op(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from training.export.onnx_export import OnnxGraph, check_convertible

    node = helper.make_node("FancyOp", ["x"], ["y"], name="node_fancy", domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "g.onnx"
    onnx.save(proto, path)
    with pytest.raises(ExportError) as info:
        check_convertible(OnnxGraph("segment1", path, "0" * 64, {"node_fancy": "model.Fancy"}))
    message = str(info.value)
    assert "graph 'segment1'" in message and "node_fancy" in message and "model.Fancy" in message
    assert "com.example::FancyOp" in message


def test_cli_help_is_fast_and_lists_the_flags():
    result = subprocess.run([sys.executable, "-m", "training.export", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--checkpoint", "--out", "--precision", "--calib-samples", "--parity-samples", "--data-dir",
                 "--work-dir", "--mixed-drift-budget"):
        assert flag in result.stdout


def _slice_model(shape):
    """x -> x[:, :, ::2, ::2] + relu(x)[:, :, ::2, ::2], y -> y * 2: one cubic input (x) if shape is cubic."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
              (("starts", [0, 0]), ("ends", [2 ** 62, 2 ** 62]), ("axes", [2, 3]), ("steps", [2, 2]))]
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["a"]),
             helper.make_node("Slice", ["r", "starts", "ends", "axes", "steps"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["out"]),
             helper.make_node("Add", ["y", "y"], ["out2"])]
    half = [shape[0], shape[1], shape[2] // 2, shape[3] // 2]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
                                           helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, half),
                               helper.make_tensor_value_info("out2", TensorProto.FLOAT, [1, 2, 4, 4])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10  # what onnxruntime 1.31 reads (onnx 1.23 writes 14 by default)
    onnx.checker.check_model(model)
    return model


def test_cubic_inputs_get_an_exact_layout_guard(tmp_path):
    """onnx2tf cannot tell NCHW from NHWC on a cubic graph input: the worker puts a 1x1 MaxPool after it."""
    import onnx
    import onnxruntime as ort

    from training.export.onnx2tf_worker import cubic, guard_cubic_inputs

    assert cubic((1, 8, 8, 8)) and cubic((1, 4, 4)) and not cubic((1, 8, 8, 4)) and not cubic((1, 43))
    path = tmp_path / "g.onnx"
    onnx.save(_slice_model([1, 8, 8, 8]), path)
    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((1, 8, 8, 8)).astype(np.float32),
            "y": rng.standard_normal((1, 2, 4, 4)).astype(np.float32)}
    before = ort.InferenceSession(str(path)).run(None, feed)
    assert guard_cubic_inputs(str(path)) == ["x"]
    model = onnx.load(path)
    guard = model.graph.node[0]
    assert guard.op_type == "MaxPool" and list(guard.input) == ["x"]
    assert [n for n in model.graph.node[1:] if "x" in n.input] == []  # every consumer reads the guard
    after = ort.InferenceSession(str(path)).run(None, feed)
    for a, b in zip(before, after):
        assert np.array_equal(a, b)
    onnx.save(_slice_model([1, 8, 16, 16]), path)
    assert guard_cubic_inputs(str(path)) == []


def test_eval_mode_restores_each_module_own_flag():
    """I-ResNeXt's sub-network graph modules are containers outside the model's module tree (training=True)
    around the model's own layers (eval). Exporting one must not switch those layers to training mode."""
    torch = pytest.importorskip("torch")
    from training.export.onnx_export import eval_mode

    layer = torch.nn.BatchNorm2d(4).eval()
    container = torch.nn.Sequential(layer)  # training=True, its child in eval mode
    with eval_mode(container):
        assert not container.training and not layer.training
    assert container.training and not layer.training


def test_hierarchical_export_needs_matching_coarse_labels(tmp_path):
    torch = pytest.importorskip("torch")
    from dataclasses import replace

    from training.export import ExportInputs, export_bundle
    from training.export.modelinfo import dataset_model_info
    from training.models import create_model

    model = create_model("is-resnext", num_classes=43, blocks=3, width=6, num_subnets=3, bottleneck=2,
                         cardinality=3, hierarchical=True).eval()
    staged = model.stage_program(torch.zeros(1, 3, 16, 16))
    info = dataset_model_info("gtsrb32", "is-resnext", "h", (1, 3, 16, 16))
    assert len(info.coarse_labels) == 6 and len(info.fine_to_coarse) == 43
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    bare = replace(info, coarse_labels=(), fine_to_coarse=())
    with pytest.raises(ExportError, match="coarse head with 6 logits"):
        export_bundle(ExportInputs(staged, bare, None, frames), tmp_path / "b", ExportOptions(cache_dir=None))
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_forked_and_fresh_process_conversions_are_byte_identical(tmp_path, monkeypatch):
    """The fork-server conversion (default) and a fresh process per graph give the same bytes."""
    pytest.importorskip("onnx2tf")
    import onnx

    from training.export import onnx2tf_worker
    from training.export.convert import SAMPLE_FILE, sample_data

    files = {}
    for mode in ("fork", "fresh"):
        monkeypatch.setenv("EDGE_ANYTIME_CONVERT_FORK", "1" if mode == "fork" else "0")
        run = tmp_path / mode
        run.mkdir()
        np.save(run / SAMPLE_FILE, sample_data())
        onnx.save(_slice_model([1, 8, 8, 8]), run / "g.onnx")
        result = onnx2tf_worker.run_job({"onnx": str(run / "g.onnx"), "run_dir": str(run), "log": str(run / "log"),
                                         "argv": ["-o", str(run / "out"), "-n", "-k", "x", "y"], "timeout_s": 600})
        assert result == {"returncode": 0, "timed_out": False}, (run / "log").read_text()[-2000:]
        files[mode] = {p.name: p.read_bytes() for p in (run / "out").glob("*.tflite")}
    assert files["fork"] and files["fork"] == files["fresh"]
