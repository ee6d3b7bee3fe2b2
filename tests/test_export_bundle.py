"""End-to-end export of a tiny stage program (torch -> ONNX -> onnx2tf -> TFLite bundle), shared by
the tests of this module: fp32 parity per exit, int8 port mapping under output renaming, tampered
files, the cache / no-op second export, and atomic output on failure.

The program: stem (image -> f0), block (run twice: f0 -> f1 -> f2, a graph reused by two steps),
head (run twice: f0 and f2 -> logits (1, 5) and pooled (1, 8): two outputs of different shapes).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx2tf")
pytest.importorskip("ai_edge_litert")

from torch import nn  # noqa: E402

from edge_anytime.backends import GraphLoadSpec, create_backend  # noqa: E402
from edge_anytime.bundle import Bundle  # noqa: E402
from edge_anytime.errors import BundleError  # noqa: E402
from edge_anytime.manifest import InputSpec, ModelInfo  # noqa: E402
from training.export import ExportError, ExportInputs, ExportOptions, export_bundle  # noqa: E402
from training.export.parity import chain_logits  # noqa: E402
from training.export.ports import resolve_ports  # noqa: E402
from training.stages import ProgramBuilder, run_staged  # noqa: E402

from .conftest import data_dir  # noqa: E402

SIZE = 16
CLASSES = 5


class Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return x + torch.relu(self.conv(x))


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x):
        pooled = x.mean((2, 3))
        return self.fc(pooled), pooled


def tiny_staged():
    torch.manual_seed(0)
    stem, block, head = Stem(), Block(), Head()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        stem.bn.running_mean.uniform_(-0.5, 0.5)
        stem.bn.running_var.uniform_(0.5, 2.0)
    for m in (stem, block, head):
        m.eval()
    b = ProgramBuilder("image", torch.zeros(1, 3, SIZE, SIZE))
    b.step("stem", "stem", stem, {"x": "image"}, {"y": "f0"}, flops=100)
    b.step("head0", "head", head, {"h": "f0"}, {"logits": "logits0", "pooled": "pooled0"}, flops=10)
    b.step("block1", "block", block, {"x": "f0"}, {"y": "f1"}, flops=100)
    b.step("block2", "block", block, {"x": "f1"}, {"y": "f2"}, flops=100)
    b.step("head1", "head", head, {"h": "f2"}, {"logits": "logits1", "pooled": "pooled1"}, flops=10)
    return b.build(["logits0", "logits1"])


def real_frames(count: int, seed: int):
    """Real GTSRB images cropped to SIZE x SIZE when the data are present, else random pixels."""
    rng = np.random.default_rng(seed)
    try:
        from training.data import load_split

        x, y = load_split("gtsrb32", "test", data_dir())
        index = rng.choice(len(x), count, replace=False)
        return np.ascontiguousarray(x[index, 8:8 + SIZE, 8:8 + SIZE]), (y[index] % CLASSES)
    except Exception:
        return rng.integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8), rng.integers(0, CLASSES, count)


MODEL = ModelInfo("tiny", "tiny", tuple("abcde"), InputSpec("image", (1, 3, SIZE, SIZE), mean=(0.3, 0.3, 0.3),
                                                             std=(0.27, 0.27, 0.27)), dataset="gtsrb32-crop")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    staged = tiny_staged()
    frames, labels = real_frames(96, 0)
    inputs = ExportInputs(staged, MODEL, calib_frames=frames[:64], test_frames=frames[64:], test_labels=labels[64:],
                          temperatures=[1.5, 1.25], val_accuracy=[0.5, 0.6], source={"test": "tiny"})
    options = ExportOptions(precisions=("fp32", "int8"), calib_samples=64, parity_samples=32, self_test_samples=3,
                            mixed_drift_budget=0.05, cache_dir=root / "cache", work_dir=root / "work")
    summary = export_bundle(inputs, root / "bundle", options)
    return {"root": root, "staged": staged, "inputs": inputs, "options": options, "summary": summary,
            "bundle": Bundle.load(root / "bundle")}


def test_bundle_loads_with_every_file_and_exit_metadata(exported):
    bundle = exported["bundle"]
    assert bundle.precisions() == ("fp32", "int8")
    assert sorted(bundle.program.graphs) == ["block", "head", "stem"]
    assert [s.graph for s in bundle.program.steps] == ["stem", "head", "block", "block", "head"]
    assert [e.temperature for e in bundle.program.exits] == [1.5, 1.25]
    assert [e.val_accuracy for e in bundle.program.exits] == [0.5, 0.6]
    assert set(bundle.manifest.extra_files) >= {"reference/self_test.npz", "parity.json", "parity.md"}
    for graph, per_precision in bundle.manifest.files.items():
        for precision, graph_file in per_precision.items():
            assert graph_file.path == f"graphs/{graph}.{precision}.tflite"
    assert set(bundle.manifest.metadata["recommended_precision"]) == {"stem", "block", "head"}


def test_fp32_parity_per_exit_chained_through_litert(exported):
    bundle, staged = exported["bundle"], exported["staged"]
    report = json.loads((bundle.root / "parity.json").read_text())
    assert report["gate"]["passed"]
    for row in report["backends"]["litert:fp32"]["exits"] + report["backends"]["onnxruntime"]["exits"]:
        assert row["max_abs_delta"] <= 1e-4 and row["argmax_agreement"] == 1.0
    # and independently: the reference frames through LiteRT runners vs torch run_staged
    reference = bundle.reference_data()
    assert reference["input"].shape == (3, 1, 3, SIZE, SIZE)
    backend = create_backend("litert", num_threads=1)
    runners = {g: backend.load_graph(GraphLoadSpec(bundle.program.graphs[g], "fp32", bundle.graph_file(g, "fp32"),
                                                   bundle.path_of(bundle.graph_file(g, "fp32").path)))
               for g in bundle.program.graphs}
    litert = chain_logits(bundle.program, runners, reference["input"][:, 0])
    with torch.no_grad():
        torch_logits = run_staged(staged, torch.from_numpy(reference["input"][:, 0]))
    for exit_, want in zip(bundle.program.exits, torch_logits):
        assert reference[exit_.tensor].shape == (3, 1, CLASSES)
        np.testing.assert_allclose(reference[exit_.tensor][:, 0], want.numpy(), atol=1e-5)
        assert np.max(np.abs(litert[exit_.tensor] - want.numpy())) <= 1e-4


def test_int8_outputs_are_renamed_and_mapped_by_name_and_shape(exported):
    bundle = exported["bundle"]
    head_int8 = bundle.graph_file("head", "int8")
    assert dict(head_int8.outputs) == {"logits": "output_0", "pooled": "output_1"}
    assert dict(bundle.graph_file("head", "fp32").outputs) == {"logits": "logits", "pooled": "pooled"}
    backend = create_backend("litert", num_threads=1)
    signature = bundle.program.graphs["head"]
    runners = {p: backend.load_graph(GraphLoadSpec(signature, p, bundle.graph_file("head", p),
                                                   bundle.path_of(bundle.graph_file("head", p).path)))
               for p in ("fp32", "int8")}
    with torch.no_grad():  # an in-distribution input: the stem's features of a real test image
        x = exported["staged"].graph_modules["stem"](torch.from_numpy(bundle.reference_data()["input"][0])).numpy()
    fp32, int8 = runners["fp32"].run({"h": x}), runners["int8"].run({"h": x})
    assert int8["logits"].shape == (1, CLASSES) and int8["pooled"].shape == (1, 8)
    for port in ("logits", "pooled"):  # quantised, but the same tensor (a swap would be far off)
        assert np.max(np.abs(int8[port] - fp32[port])) < 0.1 * max(1.0, np.max(np.abs(fp32[port])))


def test_port_mapping_falls_back_to_the_numeric_check(exported):
    """If the expected names do not hold (here: int8 names asked of the fp32 file), the checked fallback
    still finds each port by shape and values, and says so."""
    bundle = exported["bundle"]
    signature = bundle.program.graphs["head"]
    x = np.random.default_rng(2).standard_normal((1, 8, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        logits, pooled = exported["staged"].graph_modules["head"](torch.from_numpy(x))
    mapping = resolve_ports(bundle.path_of(bundle.graph_file("head", "fp32").path), signature, "int8", ("h",),
                            {"h": x}, {"logits": logits.numpy(), "pooled": pooled.numpy()})
    assert dict(mapping.outputs) == {"logits": "logits", "pooled": "pooled"}
    assert set(mapping.fallbacks) == {"logits", "pooled"}


def test_int8_report_has_per_graph_drift_and_calibration(exported):
    report = json.loads((exported["bundle"].root / "parity.json").read_text())
    drift = report["int8_drift"]["graphs"]
    assert set(drift) == {"stem", "block", "head"}
    # the block graph runs only before exit 1: it cannot move exit 0
    assert drift["block"]["exits"][0]["max_abs_delta"] == 0.0
    assert report["calibration"]["inputs"]["block"]["x"]["samples"] == 2 * 64  # both steps' inputs
    assert report["mixed"]["budget"] == 0.05
    assert "## int8 drift per graph" in (exported["bundle"].root / "parity.md").read_text()


def test_tampered_file_is_rejected(exported, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(exported["bundle"].root, copy)
    target = copy / "graphs" / "block.fp32.tflite"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="hash mismatch"):
        Bundle.load(copy)


def test_second_export_is_a_cached_noop_with_identical_files(exported):
    root, options = exported["root"], exported["options"]
    first = exported["summary"]
    manifest_before = (root / "bundle" / "manifest.json").stat().st_mtime_ns
    again = export_bundle(exported["inputs"], root / "bundle", options)
    assert again.noop and again.graphs == {g: {p: {k: v for k, v in f.items() if k != "cached"}
                                               for p, f in per.items()} for g, per in first.graphs.items()}
    assert (root / "bundle" / "manifest.json").stat().st_mtime_ns == manifest_before
    # a fresh output folder: every graph comes from the conversion cache, byte-identical
    other = export_bundle(exported["inputs"], root / "bundle2", options)
    assert not other.noop
    assert all(f["cached"] for per in other.graphs.values() for f in per.values())
    for name in ("manifest.json", "parity.json", "parity.md", "reference/self_test.npz", "graphs/head.int8.tflite"):
        assert (root / "bundle" / name).read_bytes() == (root / "bundle2" / name).read_bytes(), name


def test_failed_export_leaves_the_previous_bundle_untouched(exported):
    root = exported["root"]
    out = root / "bundle"
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    strict = replace(exported["options"], fp32_atol=-1.0)  # a gate nobody passes; conversions come from the cache
    with pytest.raises(ExportError, match="parity gate failed"):
        export_bundle(exported["inputs"], out, strict)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not [p.name for p in root.iterdir() if p.name.startswith(".bundle.")]


def test_failed_first_export_writes_nothing(exported):
    root = exported["root"]
    strict = replace(exported["options"], fp32_atol=-1.0)
    with pytest.raises(ExportError):
        export_bundle(exported["inputs"], root / "never", strict)
    assert not (root / "never").exists()
    assert not [p.name for p in root.iterdir() if p.name.startswith(".never.")]


@pytest.mark.slow
def test_conversion_is_deterministic_without_cache(exported, tmp_path):
    options = ExportOptions(precisions=("fp32", "int8"), calib_samples=64, parity_samples=32, self_test_samples=3,
                            mixed_drift_budget=0.05, cache_dir=tmp_path / "fresh-cache", work_dir=tmp_path / "work")
    summary = export_bundle(exported["inputs"], tmp_path / "bundle", options)
    assert not any(f["cached"] for per in summary.graphs.values() for f in per.values())
    first = exported["bundle"].root
    for graph_file in (tmp_path / "bundle" / "graphs").iterdir():
        assert graph_file.read_bytes() == (first / "graphs" / graph_file.name).read_bytes(), graph_file.name
