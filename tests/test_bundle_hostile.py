"""Bundles that must be refused at load, each with an error that names the fix (symlinks, numbers, sizes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_anytime import Bundle, BundleError, Controller, ControllerOptions

SHIPPED = Path("deploy/bundles/gtsrb-resann")


@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(SHIPPED, target)
    return target


def edit_manifest(root: Path, change) -> None:
    data = json.loads((root / "manifest.json").read_text())
    change(data)
    (root / "manifest.json").write_text(json.dumps(data))


def first_graph_file(root: Path) -> Path:
    data = json.loads((root / "manifest.json").read_text())
    graph = next(iter(data["graphs"].values()))
    return root / next(iter(graph["files"].values()))["path"]


@pytest.mark.parametrize("what", ["graph", "graphs-folder", "manifest"])
def test_files_linked_out_of_the_bundle_are_refused(bundle_copy, tmp_path, what):
    outside = tmp_path / "outside"
    outside.mkdir()
    if what == "graph":
        graph = first_graph_file(bundle_copy)
        shutil.copy(graph, outside / graph.name)
        graph.unlink()
        graph.symlink_to(outside / graph.name)
    elif what == "graphs-folder":
        shutil.move(str(bundle_copy / "graphs"), str(outside / "graphs"))
        (bundle_copy / "graphs").symlink_to(outside / "graphs")
    else:
        shutil.move(str(bundle_copy / "manifest.json"), str(outside / "manifest.json"))
        (bundle_copy / "manifest.json").symlink_to(outside / "manifest.json")
    with pytest.raises(BundleError, match="outside the bundle"):
        Bundle.load(bundle_copy)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["exits"][0].update(temperature=float("inf")), "temperature"),
    (lambda d: d["exits"][0].update(temperature=1e-9), "temperature"),
    (lambda d: d["exits"][1].update(val_accuracy=float("nan")), "val_accuracy"),
    (lambda d: d["model"]["input"].update(std=[0.0, 1.0, 1.0]), "std"),
    (lambda d: d["model"]["input"].update(mean=[0.5], std=[0.2, 0.2]), "mean and std"),
    (lambda d: d["model"].update(coarse_labels=["a", "b"], fine_to_coarse=[-1] * 43), "fine_to_coarse"),
    (lambda d: d["model"].update(coarse_labels=["a"], fine_to_coarse=[0] * 3), "fine_to_coarse"),
])
def test_numbers_that_would_break_every_frame_are_refused(bundle_copy, change, message):
    edit_manifest(bundle_copy, change)
    with pytest.raises(BundleError, match=message):
        Bundle.load(bundle_copy)


def test_non_finite_profile_samples_are_refused(bundle_copy):
    path = next((bundle_copy / "profiles").glob("*.json"))
    data = json.loads(path.read_text())
    graph = next(iter(data["graphs"]))
    precision = next(iter(data["graphs"][graph]))
    data["graphs"][graph][precision][0] = float("inf")
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="finite"):
        Bundle.load(bundle_copy)


def test_huge_and_deeply_nested_manifests_are_refused(bundle_copy):
    manifest = bundle_copy / "manifest.json"
    manifest.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="nests JSON deeper than"):
        Bundle.load(bundle_copy)
    with open(manifest, "w") as handle:
        handle.write('{"pad": "' + "x" * (9 << 20) + '"}')
    with pytest.raises(BundleError, match="over the .* limit"):
        Bundle.load(bundle_copy)


def test_from_bundle_verifies_files_swapped_after_load(bundle_copy):
    bundle = Bundle.load(bundle_copy)
    graph = first_graph_file(bundle_copy)
    data = graph.read_bytes()
    graph.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))     # one bit flipped after Bundle.load
    with pytest.raises(BundleError, match="hash mismatch"):
        Controller.from_bundle(bundle, options=ControllerOptions(warmup_runs=3))
