"""A synthetic model, stream and profile for tests, benchmarks and docs: no bundle, no LiteRT.

>>> cache = synthetic_cache(frames=90, accuracies=(0.5, 0.7, 0.9))
>>> cache.logits.shape, round(float((cache.logits[:, 2].argmax(1) == cache.labels).mean()), 1)
((90, 3, 10), 0.9)
>>> synthetic_profile().samples_s("head", "fp32")[:2]
(0.0002, 0.0002)

The model is a chain stem -> body -> body ... with one head per exit (the
shape of tests/conftest.py's tiny_program). The prediction cache is built by
the real `build_cache` with a FakeBackend whose heads emit logits that are
right with probability `accuracies[k]` at exit k.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from edge_anytime.backends.base import GraphLoadSpec
from edge_anytime.backends.fake import FakeBackend
from edge_anytime.manifest import GraphFile, InputSpec, Manifest, ModelInfo, manifest_to_json
from edge_anytime.profile import LatencyProfile
from edge_anytime.program import Exit, GraphSignature, Port, Program, Step

from .cache import PredictionCache, build_cache
from .sources import SensorFrame


def synthetic_manifest(num_exits: int = 3, classes: int = 10, val_accuracy: Sequence[float] | None = None,
                       coarse: int = 0) -> Manifest:
    """stem -> f0, head0; body -> f1, head1; ... (one head per exit). `coarse` > 0 adds superclasses."""
    image, feat = Port("x", (1, 3, 8, 8)), Port("x", (1, 4, 8, 8))
    out = Port("y", (1, 4, 8, 8))
    graphs = {"stem": GraphSignature("stem", (image,), (out,), flops=100),
              "body": GraphSignature("body", (feat,), (out,), flops=100),
              "head": GraphSignature("head", (feat,), (Port("logits", (1, classes)),), flops=10)}
    steps, exits, previous = [], [], "image"
    for i in range(num_exits):
        steps.append(Step(f"body{i}", "stem" if i == 0 else "body", {"x": previous}, {"y": f"f{i}"}))
        steps.append(Step(f"head{i}", "head", {"x": f"f{i}"}, {"logits": f"logits{i}"}))
        previous = f"f{i}"
        exits.append(Exit(i, f"logits{i}", flops=110 * (i + 1),
                          val_accuracy=None if val_accuracy is None else float(val_accuracy[i])))
    program = Program("image", graphs, tuple(steps), tuple(exits))
    program.validate()
    model = ModelInfo("synthetic", "chain", tuple(f"class{c}" for c in range(classes)),
                      InputSpec("image", (1, 3, 8, 8)), dataset="synthetic",
                      coarse_labels=tuple(f"group{g}" for g in range(coarse)),
                      fine_to_coarse=tuple(c % coarse for c in range(classes)) if coarse else ())
    files = {name: {"fp32": GraphFile("fp32", f"graphs/{name}.fp32.tflite", "0" * 64,
                                      {p.name: p.name for p in sig.inputs}, {p.name: p.name for p in sig.outputs})}
             for name, sig in graphs.items()}
    return Manifest(model, program, files)


def synthetic_profile(latency_ms: dict | None = None, spread: float = 0.0, samples: int = 200,
                      seed: int = 0, target: str = "synthetic",
                      precisions: Mapping[str, float] | None = None) -> LatencyProfile:
    """Step latencies: each graph's ms value times (1 + spread * U[0, 1)), `samples` samples, at each precision
    of `precisions` (precision -> its latencies' factor; default fp32 alone, at 1)."""
    latency_ms = latency_ms or {"stem": 1.0, "body": 1.0, "head": 0.2}
    rng = np.random.default_rng(seed)
    graphs = {g: {precision: tuple(float(v) for v in 1e3 * ms * factor * (1.0 + spread * rng.random(samples)))
                  for precision, factor in (precisions or {"fp32": 1.0}).items()}
              for g, ms in latency_ms.items()}
    return LatencyProfile(target, "fake", graphs, host="synthetic")


def synthetic_stream(frames: int, classes: int = 10, fps: float = 30.0, seed: int = 0,
                     reject: Sequence[int] = ()) -> list[SensorFrame]:
    """Random 8x8 frames in tracks of 30 frames of one class; frames in `reject` have a wrong shape."""
    rng = np.random.default_rng(seed)
    track_labels = rng.integers(0, classes, frames // 30 + 1)
    items = []
    for i in range(frames):
        shape = (5, 8, 3) if i in reject else (8, 8, 3)
        items.append(SensorFrame(i, rng.integers(0, 255, shape, dtype=np.uint8), i / fps,
                                 int(track_labels[i // 30]), i // 30))
    return items


def synthetic_cache(frames: int = 1000, num_exits: int = 3, classes: int = 10,
                    accuracies: Sequence[float] = (0.5, 0.7, 0.9), val_accuracy: Sequence[float] | None = None,
                    seed: int = 0, fail: Sequence[int] = (), reject: Sequence[int] = (), coarse: int = 0,
                    profiles: Sequence[LatencyProfile] = ()) -> PredictionCache:
    """A prediction cache built by `build_cache` over a FakeBackend (see the module docstring).

    Frames in `fail` raise in the body step before exit 1 (a backend fault mid-frame);
    frames in `reject` have a wrong shape (the preprocessor rejects them).
    """
    manifest = synthetic_manifest(num_exits, classes, val_accuracy, coarse)
    stream = synthetic_stream(frames, classes, seed=seed, reject=reject)
    rng = np.random.default_rng([seed, 1])
    right = rng.random((frames, num_exits)) < np.asarray(accuracies)[None, :num_exits]
    wrong = rng.integers(1, classes, (frames, num_exits))
    noise = rng.normal(0.0, 1.0, (frames, num_exits, classes))
    current = {"frame": 0}
    fail = set(fail)

    def outputs(graph, inputs):
        i = current["frame"]
        if graph == "stem":
            return {"y": np.zeros((1, 4, 8, 8), np.float32)}
        if graph == "body":
            if i in fail:
                raise RuntimeError("synthetic backend fault")
            return {"y": inputs["x"] + 1.0}
        k = int(round(float(inputs["x"].mean())))
        label = stream[i].label if right[i, k] else (stream[i].label + wrong[i, k]) % classes
        logits = noise[i, k].copy()
        logits[label] += 2.0 + k
        return {"logits": logits[None].astype(np.float32)}

    backend = FakeBackend(outputs=outputs)
    runners = {g: backend.load_graph(GraphLoadSpec(sig)) for g, sig in manifest.program.graphs.items()}

    def frames_in_order():
        for item in stream:
            current["frame"] = item.index
            yield item

    profiles = list(profiles) or [synthetic_profile()]
    meta = {"bundle": None, "bundle_sha": "synthetic", "stream": f"synthetic?frames={frames}&seed={seed}",
            "precisions": {g: "fp32" for g in manifest.program.graphs}, "backend": "fake", "host": "synthetic",
            "manifest": manifest_to_json(manifest), "profiles": {p.target: p.to_json() for p in profiles},
            "class_names": list(manifest.model.labels)}
    return build_cache(manifest.program, manifest.model, runners, frames_in_order(), meta=meta, key="synthetic",
                       show_progress=False)
