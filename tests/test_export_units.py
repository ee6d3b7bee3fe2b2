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
