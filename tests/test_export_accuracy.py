"""training.export.accuracy: per-exit LiteRT accuracy of the shipped bundle equals torch's on the same frames."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import DEMO_BUNDLE, REPO, data_dir

pytestmark = pytest.mark.skipif(not (DEMO_BUNDLE / "manifest.json").is_file() or not (data_dir() / "gtsrb32").is_dir(),
                                reason="needs deploy/bundles/gtsrb-resann and the GTSRB data")


def test_litert_accuracy_matches_the_checkpoint_in_torch(tmp_path):
    pytest.importorskip("ai_edge_litert")
    torch = pytest.importorskip("torch")
    from training.data import load_split
    from training.export.accuracy import main
    from training.export.pipeline import preprocess
    from edge_anytime.bundle import Bundle
    from training.train import load_checkpoint

    n = 200
    out = tmp_path / "acc.json"
    rows = main(["--bundle", str(DEMO_BUNDLE), "--precision", "int8", "--limit", str(n), "--json", str(out)])
    assert json.loads(out.read_text())[0]["frames"] == n
    fp32 = [r for r in rows if r.precision == "fp32"]
    int8 = [r for r in rows if r.precision == "int8"]
    assert len(fp32) == len(int8) == len(Bundle.load(DEMO_BUNDLE).program.exits)
    assert all(r.agreement_with_fp32 == 1.0 for r in fp32)
    assert all(0.5 < r.agreement_with_fp32 <= 1.0 for r in int8)

    model, _ = load_checkpoint(REPO / "deploy" / "checkpoints" / "gtsrb-resann" / "checkpoint.pt")
    frames, labels = load_split("gtsrb32", "test", data_dir())
    images = preprocess(Bundle.load(DEMO_BUNDLE).model, frames[:n])
    with torch.no_grad():
        torch_acc = [float(np.mean(z.argmax(1).numpy() == labels[:n])) for z in model(torch.from_numpy(images))]
    for row, expected in zip(fp32, torch_acc):  # fp32 parity: at most one frame may flip on a near tie
        assert abs(row.accuracy - expected) <= 1 / n, (row, expected)


def test_a_missing_precision_names_the_export_flag():
    pytest.importorskip("ai_edge_litert")
    from training.export.accuracy import bundle_accuracy

    with pytest.raises(ValueError, match="--precision fp32,bf16"):
        bundle_accuracy(DEMO_BUNDLE, ["bf16"], limit=4)


def test_exit_ensembles_average_calibrated_probabilities():
    pytest.importorskip("ai_edge_litert")
    from edge_anytime.bundle import Bundle
    from training.data import load_split
    from training.export.accuracy import ensemble_accuracy
    from training.export.parity import chain_logits
    from training.export.pipeline import preprocess
    from edge_anytime.backends import GraphLoadSpec, create_backend

    n = 300
    got = ensemble_accuracy(DEMO_BUNDLE, limit=n)
    bundle = Bundle.load(DEMO_BUNDLE)
    exits = bundle.program.exits
    assert set(got) == {"exits 0+1", "exits 1+2", "exits 0..2"}
    # the same ensemble by hand: softmax(logits / temperature), summed, argmax
    frames, labels = load_split("gtsrb32", "test", data_dir())
    backend = create_backend("litert", num_threads=1)
    runners = {g: backend.load_graph(GraphLoadSpec(bundle.program.graphs[g], "fp32", bundle.graph_file(g, "fp32"),
                                                   bundle.path_of(bundle.graph_file(g, "fp32").path)))
               for g in bundle.program.graphs}
    logits = chain_logits(bundle.program, runners, preprocess(bundle.model, frames[:n]))

    def probs(k):
        z = logits[exits[k].tensor] / exits[k].temperature
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    assert got["exits 1+2"] == float(np.mean((probs(1) + probs(2)).argmax(-1) == labels[:n]))
    assert got["exits 0..2"] == float(np.mean((probs(0) + probs(1) + probs(2)).argmax(-1) == labels[:n]))
