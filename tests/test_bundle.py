"""Bundle validation at load: every rejection names its problem (docs/bundle-format.md)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from edge_anytime import Bundle, BundleError
from edge_anytime.bundle import sha256_file
from edge_anytime.manifest import example_manifest, manifest_to_json, parse_manifest
from edge_anytime.profile import LatencyProfile


def write_bundle(root: Path, manifest: dict | None = None) -> Path:
    """A structurally valid bundle whose graph file is arbitrary bytes (enough for Bundle.load)."""
    manifest = copy.deepcopy(manifest or example_manifest())
    (root / "graphs").mkdir(parents=True, exist_ok=True)
    for graph in manifest["graphs"].values():
        for graph_file in graph["files"].values():
            path = root / graph_file["path"]
            path.write_bytes(b"not really a flatbuffer " + graph_file["path"].encode())
            graph_file["sha256"] = sha256_file(path)
    (root / "reference").mkdir(exist_ok=True)
    np.savez(root / "reference" / "self_test.npz", input=np.zeros((1, 1, 3, 32, 32), np.float32))
    manifest["files"] = {"reference/self_test.npz": sha256_file(root / "reference" / "self_test.npz")}
    manifest["reference"] = "reference/self_test.npz"
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def edit(root: Path, change) -> None:
    data = json.loads((root / "manifest.json").read_text())
    change(data)
    (root / "manifest.json").write_text(json.dumps(data))


def test_valid_bundle_loads_and_round_trips(tmp_path):
    bundle = Bundle.load(write_bundle(tmp_path))
    assert bundle.precisions() == ("fp32",)
    assert bundle.program.apriori_plan(0) == (0,)
    assert bundle.reference_data()["input"].shape == (1, 1, 3, 32, 32)
    assert parse_manifest(manifest_to_json(bundle.manifest)) == bundle.manifest


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(version=3), "unsupported bundle version 3"),
    (lambda d: d.update(format="something-else"), "not an edge_anytime bundle"),
    (lambda d: d.pop("steps"), "lacks required field 'steps'"),
    (lambda d: d["steps"][0]["inputs"].update(x="nowhere"), "unknown tensor"),
    (lambda d: d["exits"][0].update(tensor="ghost"), "unknown tensor"),
    (lambda d: d["graphs"]["net"]["inputs"][0].update(shape=[1, 3, 16, 16]), "shape mismatch"),
    (lambda d: d["graphs"]["net"]["outputs"][0].update(shape=[1, 5]), "shape mismatch"),
    (lambda d: d["graphs"]["net"]["files"]["fp32"].update(path="../outside.tflite"), "stay inside"),
    (lambda d: d["graphs"]["net"]["files"]["fp32"]["outputs"].pop("logits"), "outputs maps"),
    (lambda d: d["graphs"]["net"]["files"]["fp32"].update(transpose={"x": [0, 0, 1, 2]}), "not a permutation"),
    (lambda d: d["graphs"]["net"]["files"].update(fp64=d["graphs"]["net"]["files"]["fp32"]), "unknown precision"),
    (lambda d: d["steps"][0].update(graph="nope"), "unknown graph"),
    (lambda d: d["exits"][0].update(temperature=0), "temperature must be > 0"),
    (lambda d: d.update(reference="reference/other.npz"), "must be listed"),
])
def test_bad_manifest_is_rejected_with_a_clear_error(tmp_path, change, message):
    root = write_bundle(tmp_path)
    edit(root, change)
    with pytest.raises(BundleError, match=message):
        Bundle.load(root)


def test_missing_graph_file(tmp_path):
    root = write_bundle(tmp_path)
    (root / "graphs" / "net.fp32.tflite").unlink()
    with pytest.raises(BundleError, match="missing file: graphs/net.fp32.tflite"):
        Bundle.load(root)


def test_tampered_graph_file_fails_the_hash_check(tmp_path):
    root = write_bundle(tmp_path)
    with open(root / "graphs" / "net.fp32.tflite", "ab") as handle:
        handle.write(b"\x00")
    with pytest.raises(BundleError, match="hash mismatch: graphs/net.fp32.tflite"):
        Bundle.load(root)


def test_tampered_reference_file_fails_the_hash_check(tmp_path):
    root = write_bundle(tmp_path)
    np.savez(root / "reference" / "self_test.npz", input=np.ones((1, 1, 3, 32, 32), np.float32))
    with pytest.raises(BundleError, match="hash mismatch: reference/self_test.npz"):
        Bundle.load(root)


def test_missing_folder_and_manifest_and_bad_json(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        Bundle.load(tmp_path / "nope")
    with pytest.raises(BundleError, match="missing file"):
        Bundle.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.load(tmp_path)


def test_tensor_written_twice_is_rejected(tmp_path):
    def duplicate(d):
        d["steps"].append(dict(d["steps"][0], name="again"))
    root = write_bundle(tmp_path)
    edit(root, duplicate)
    with pytest.raises(BundleError, match="single-assignment"):
        Bundle.load(root)


def test_profiles_are_loaded_and_validated(tmp_path):
    root = write_bundle(tmp_path)
    LatencyProfile("x86-64", "litert", {"net": {"fp32": (100.0, 110.0)}}).save(root)
    bundle = Bundle.load(root)
    assert bundle.profiles["x86-64"].samples_s("net", "fp32")[0] == pytest.approx(1e-4)
    (root / "profiles" / "bad.json").write_text(json.dumps(
        {"format": "edge-anytime-profile", "version": 1, "target": "bad", "graphs": {"ghost": {"fp32": [1.0]}}}))
    with pytest.raises(BundleError, match="unknown graph 'ghost'"):
        Bundle.load(root)


def test_precision_selection_errors_name_the_export_command(tmp_path):
    bundle = Bundle.load(write_bundle(tmp_path))
    with pytest.raises(BundleError, match="--precision int8"):
        bundle.resolve_precisions("int8")
    with pytest.raises(BundleError, match="unknown graphs"):
        bundle.resolve_precisions({"ghost": "fp32"})
    assert bundle.resolve_precisions({"*": "fp32"}) == {"net": "fp32"}
