"""Shared fixtures: tiny programs for controller tests, the data folder, the shipped demo bundle."""

from __future__ import annotations

import os
from pathlib import Path

# Tiny models run fastest single-threaded, and the machine's 2 cores are shared by the whole suite.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from edge_anytime.manifest import InputSpec, ModelInfo
from edge_anytime.program import Exit, GraphSignature, Port, Program, Step

REPO = Path(__file__).resolve().parents[1]
DEMO_BUNDLE = REPO / "deploy" / "bundles" / "gtsrb-resann"


def data_dir() -> Path:
    return Path(os.environ.get("EDGE_ANYTIME_DATA", REPO.parent / "shared" / "data"))


def tiny_program(num_exits: int = 3, classes: int = 4, val_accuracy: tuple | None = None) -> Program:
    """image -> body0 -> f0 -> body(i) ... with one head per exit: steps body0, head0, body1, head1, ..."""
    image = Port("x", (1, 3, 8, 8))
    feat = Port("x", (1, 4, 8, 8))
    out = Port("y", (1, 4, 8, 8))
    graphs = {"stem": GraphSignature("stem", (image,), (out,), flops=100),
              "body": GraphSignature("body", (feat,), (out,), flops=100),
              "head": GraphSignature("head", (feat,), (Port("logits", (1, classes)),), flops=10)}
    steps, exits = [], []
    previous = "image"
    for i in range(num_exits):
        graph = "stem" if i == 0 else "body"
        steps.append(Step(f"body{i}", graph, {"x": previous}, {"y": f"f{i}"}))
        steps.append(Step(f"head{i}", "head", {"x": f"f{i}"}, {"logits": f"logits{i}"}))
        previous = f"f{i}"
        acc = None if val_accuracy is None else val_accuracy[i]
        exits.append(Exit(i, f"logits{i}", val_accuracy=acc))
    program = Program("image", graphs, tuple(steps), tuple(exits))
    program.validate()
    return program


def tiny_model(classes: int = 4) -> ModelInfo:
    return ModelInfo(name="tiny", arch="tiny", labels=tuple(f"class{i}" for i in range(classes)),
                     input=InputSpec("image", (1, 3, 8, 8)))


@pytest.fixture
def raw_frame() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
