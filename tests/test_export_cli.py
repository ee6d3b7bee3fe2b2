"""`python -m training.export` end to end on a tiny trained-format ResANN checkpoint (slow: six graphs
through onnx2tf), and its error path (fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import data_dir

REPO = Path(__file__).resolve().parents[1]


def _tiny_checkpoint(run_dir: Path) -> Path:
    torch = pytest.importorskip("torch")
    from training.data import dataset_info
    from training.models import create_model
    from training.train import CHECKPOINT_FORMAT

    info = dataset_info("gtsrb32")
    torch.manual_seed(0)
    model = create_model("resann", num_classes=info.num_classes, widths=(4, 8, 8))
    config = {"format": CHECKPOINT_FORMAT, "arch": "resann",
              "arch_kwargs": {k: v for k, v in model.config.items() if k != "num_classes"},
              "dataset": "gtsrb32", "num_classes": info.num_classes, "class_names": list(info.class_names),
              "normalisation": {"mean": list(info.mean), "std": list(info.std), "scale": 1 / 255, "layout": "NCHW"},
              "epoch": 0, "seed": 0, "val_fraction": 0.1}
    run_dir.mkdir(parents=True)
    path = run_dir / "checkpoint.pt"
    torch.save({"config": config, "model": model.state_dict()}, path)
    (run_dir / "metrics.json").write_text(json.dumps({"temperatures": [1.3, 1.2, 1.1],
                                                      "val_accuracy": [0.2, 0.3, 0.4]}))
    return path


def test_cli_reports_a_missing_checkpoint_as_json(tmp_path):
    result = subprocess.run([sys.executable, "-m", "training.export", "--checkpoint", str(tmp_path / "none.pt"),
                             "--out", str(tmp_path / "b"), "--quiet"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "no checkpoint at" in json.loads(result.stdout)["error"]
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_cli_exports_a_checkpoint_to_a_loadable_bundle(tmp_path):
    if not (data_dir() / "gtsrb32").is_dir():
        pytest.skip("GTSRB data not present")
    checkpoint = _tiny_checkpoint(tmp_path / "run")
    out = tmp_path / "bundle"
    notes = tmp_path / "notes.md"
    notes.write_text("## How it was made\n\n```bash\npython -m training.train ...\n```\n")
    result = subprocess.run([sys.executable, "-m", "training.export", "--checkpoint", str(checkpoint), "--out", str(out),
                             "--precision", "fp32", "--parity-samples", "32", "--cache-dir", str(tmp_path / "cache"),
                             "--data-dir", str(data_dir()), "--readme-notes", str(notes)],
                            cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["gate"]["passed"] and not summary["noop"]
    from edge_anytime.bundle import Bundle

    bundle = Bundle.load(out)
    assert [e.temperature for e in bundle.program.exits] == [1.3, 1.2, 1.1]
    assert bundle.model.input.scale == pytest.approx(255.0)
    assert len(bundle.model.labels) == 43 and bundle.model.coarse_labels
    assert bundle.manifest.metadata["source"]["checkpoint_sha256"]
    assert (out / "README.md").read_text().rstrip().endswith("python -m training.train ...\n```")  # --readme-notes
    # every input port is NCHW in the files (the image kept with -k, features too) ...
    for graph, per in bundle.manifest.files.items():
        for f in per.values():
            assert not set(f.transpose) & {p.name for p in bundle.program.graphs[graph].inputs}
    # ... but segment2's output (1, 8, 8, 8) has C == H == W, so shapes cannot tell NCHW from NHWC; onnx2tf
    # 1.29.24 leaves it NHWC there, and only the numeric probe check finds that: it must say so.
    report = json.loads((out / "parity.json").read_text())
    assert dict(bundle.graph_file("segment2", "fp32").transpose) in ({}, {"y": (0, 2, 3, 1)})
    if bundle.graph_file("segment2", "fp32").transpose:
        assert report["port_mapping"]["segment2"]["fp32"]["fallbacks"] == ["y"]
