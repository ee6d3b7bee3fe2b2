"""Every architecture of the zoo through the real exporter (torch -> ONNX -> onnx2tf -> TFLite bundle).

One module-scoped export per case of `training.export.zoo.CASES` (tiny configs, 16x16 GTSRB crops, BN
statistics from real images; random pixels when the data are absent), then: fp32 parity per exit (and
coarse head), every port of every graph against torch on every step that runs it (the port mapping must
be exact: IS-ResNeXt's many same-shape cached slices, cubic (1, 8, 8, 8) tensors), the bundle loaded by
`Bundle.load` and run by the Controller to its final exit, and per-architecture structure (AnytimeNet's
reused graphs converted once, EANN's kept exits, hierarchical model info). int8 for the cases that ask for
it. Cases marked slow in CASES run with `pytest -m slow`.

Conversions go through a shared cache in the temp folder ($EDGE_ANYTIME_TEST_CACHE to move it): content
addressed and integrity checked, so a rerun converts nothing and a clean machine (CI) converts everything.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx2tf")
pytest.importorskip("ai_edge_litert")

from edge_anytime import Controller  # noqa: E402
from edge_anytime.backends import GraphLoadSpec, create_backend  # noqa: E402
from edge_anytime.bundle import Bundle, sha256_file  # noqa: E402
from edge_anytime.results import StopReason  # noqa: E402
from training.export import ExportError, export_bundle  # noqa: E402
from training.export import zoo  # noqa: E402
from training.export.calibrate import reference_env  # noqa: E402
from training.export.parity import chain_logits, exit_tensors  # noqa: E402
from training.export.ports import resolve_ports  # noqa: E402
from training.stages import run_staged  # noqa: E402

from .conftest import data_dir  # noqa: E402

CACHE = Path(os.environ.get("EDGE_ANYTIME_TEST_CACHE", Path(tempfile.gettempdir()) / "edge_anytime-test-cache"))
PARAMS = [pytest.param(case_id, id=case_id, marks=[pytest.mark.slow] if case.slow else [])
          for case_id, case in zoo.CASES.items()]


@pytest.fixture(scope="module")
def frames():
    return zoo.zoo_frames(zoo.SIZE, data_dir())


@pytest.fixture(scope="module", params=PARAMS)
def exported(request, frames, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster on 2 shared cores
    try:
        case = zoo.CASES[request.param]
        model, staged, inputs = zoo.build(case, frames)
        root = tmp_path_factory.mktemp(case.id)
        summary = export_bundle(inputs, root / "bundle", zoo.options(case, CACHE, root / "work", frames=frames))
        bundle = Bundle.load(root / "bundle")
        yield {"case": case, "model": model, "staged": staged, "summary": summary, "bundle": bundle, "root": root,
               "report": json.loads((bundle.root / "parity.json").read_text())}
    finally:
        torch.set_num_threads(threads)


def litert_runners(bundle: Bundle, precision: str) -> dict:
    backend = create_backend("litert", num_threads=1)
    return {g: backend.load_graph(GraphLoadSpec(bundle.program.graphs[g], precision, bundle.graph_file(g, precision),
                                                bundle.path_of(bundle.graph_file(g, precision).path)))
            for g in bundle.program.graphs}


def test_fp32_parity_every_exit_and_coarse_head(exported):
    report = exported["report"]
    assert report["gate"]["passed"], report["gate"]
    for backend in ("onnxruntime", "litert:fp32"):
        for row in report["backends"][backend]["exits"]:
            assert row["max_abs_delta"] <= 1e-4 and row["argmax_agreement"] == 1.0, (backend, row)
            if "coarse" in row:
                assert row["coarse"]["max_abs_delta"] <= 1e-4 and row["coarse"]["argmax_agreement"] == 1.0
    # independently of the exporter's own report: the stored reference frames through LiteRT vs run_staged
    bundle, staged = exported["bundle"], exported["staged"]
    reference = bundle.reference_data()
    x = reference["input"][:, 0]
    litert = chain_logits(bundle.program, litert_runners(bundle, "fp32"), x, keep=exit_tensors(bundle.program))
    with torch.no_grad():
        fine = run_staged(staged, torch.from_numpy(x))
    env = reference_env(staged, x)
    for exit_, want in zip(bundle.program.exits, fine):
        np.testing.assert_allclose(reference[exit_.tensor][:, 0], want.numpy(), atol=1e-5)
        assert np.max(np.abs(litert[exit_.tensor] - want.numpy())) <= 1e-4
        assert (litert[exit_.tensor].argmax(-1) == want.numpy().argmax(-1)).all()
        if exit_.coarse_tensor:
            assert reference[exit_.coarse_tensor].shape == (len(x), 1, len(bundle.model.coarse_labels))
            assert np.max(np.abs(litert[exit_.coarse_tensor] - env[exit_.coarse_tensor])) <= 1e-4


def test_every_port_of_every_graph_matches_torch_on_every_step(exported):
    """The manifest's port mapping, port by port: each output of each file against the torch module's
    output for the same inputs, on every step that runs the graph. A swapped port or a wrong layout
    (NCHW vs NHWC of a cubic tensor) is off by O(1); the float32 tolerance is 1e-4 of the port's scale."""
    bundle, staged = exported["bundle"], exported["staged"]
    program = bundle.program
    x = bundle.reference_data()["input"][:, 0]
    env = reference_env(staged, x)
    runners = litert_runners(bundle, "fp32")
    for step in program.steps:
        graph = program.graphs[step.graph]
        for i in range(len(x)):
            got = runners[step.graph].run({p: env[t][i:i + 1] for p, t in step.inputs.items()})
            for port in graph.outputs:
                want = env[step.outputs[port.name]][i:i + 1]
                scale = max(1.0, float(np.abs(want).max()))
                assert got[port.name].shape == want.shape
                assert np.max(np.abs(got[port.name] - want)) <= 1e-4 * scale, (step.name, port.name)


def test_bundle_runs_on_the_controller_to_the_final_exit(exported, frames):
    bundle = exported["bundle"]
    last = len(bundle.program.exits) - 1
    with Controller.from_bundle(bundle.root) as controller:
        for frame in frames["test"][:3]:
            result = controller.run(frame, budget_s=1.0)
            assert result.status is StopReason.FINAL, result.error
            assert result.exit_index == last and len(result.exits) == last + 1
            if bundle.model.coarse_labels:
                assert result.best.prediction.coarse_name in bundle.model.coarse_labels


def test_program_structure_survives_the_export(exported):
    case, bundle, staged = exported["case"], exported["bundle"], exported["staged"]
    program = bundle.program
    assert [s.graph for s in program.steps] == [s.graph for s in staged.program.steps]
    assert [e.tensor for e in program.exits] == [e.tensor for e in staged.program.exits]
    # each graph converted once, whatever the number of steps that run it: one file per precision
    assert set(exported["summary"].graphs) == set(program.graphs)
    assert set(bundle.manifest.files) == set(program.graphs)
    for per in bundle.manifest.files.values():
        assert tuple(per) == tuple(p for p in ("fp32", "fp16", "int8") if p in case.precisions)
    # onnx2tf rewrites its input file: it got a copy, the canonical ONNX (parity reference) is as hashed
    for graph, digest in bundle.manifest.metadata["onnx_sha256"].items():
        assert sha256_file(exported["root"] / "work" / "onnx" / f"{graph}.onnx") == digest
    if case.arch == "anytimenet" and case.kwargs.get("iteration_bn") == "shared":
        assert len(program.graphs) < len(program.steps)
        reused = {g for g in program.graphs if len(program.steps_for_graph(g)) > 1}
        assert "out" in reused or not case.kwargs.get("shared_out", True)
        assert any(g.startswith("sec") for g in reused)
    if case.arch == "anytimenet" and case.kwargs.get("iteration_bn", "affine") != "shared":
        assert len(program.graphs) == len(program.steps)  # every run of a group has its own normalisation
    if case.arch == "eann" and case.kwargs.get("keep_exits"):
        assert len(program.exits) == len(case.kwargs["keep_exits"])
        kept = [exported["model"].exit_owners()[k] for k in case.kwargs["keep_exits"]]
        assert [e.name for e in program.exits] == [f"ann{a}_exit{e}" for a, e in kept]


def test_model_info_carries_the_gtsrb_superclasses(exported):
    from training.data import GTSRB_FINE_TO_COARSE, GTSRB_SUPERCLASSES

    bundle = exported["bundle"]
    assert bundle.model.coarse_labels == GTSRB_SUPERCLASSES
    assert bundle.model.fine_to_coarse == GTSRB_FINE_TO_COARSE
    hierarchical = bool(exported["case"].kwargs.get("hierarchical"))
    assert all(bool(e.coarse_tensor) == hierarchical for e in bundle.program.exits)
    if hierarchical:
        for exit_ in bundle.program.exits:
            step = bundle.program.steps[bundle.program.producer_of(exit_.tensor)]
            assert step.outputs == {"logits": exit_.tensor, "coarse": exit_.coarse_tensor}
            assert bundle.program.graphs[step.graph].output("coarse").shape == (1, len(GTSRB_SUPERCLASSES))
        assert "coarse_max_abs_delta" in bundle.manifest.metadata["parity"]


def test_int8_files_map_every_port_and_agree(exported):
    case, bundle, staged = exported["case"], exported["bundle"], exported["staged"]
    if "int8" not in case.precisions:
        pytest.skip("fp32-only case")
    program = bundle.program
    report = exported["report"]
    for graph, signature in program.graphs.items():
        int8 = bundle.graph_file(graph, "int8")
        # int8 files rename outputs output_0.. in ONNX order; every port maps to its own tensor
        assert sorted(int8.outputs.values()) == sorted(f"output_{i}" for i in range(len(signature.outputs)))
    x = bundle.reference_data()["input"][:, 0]
    env = reference_env(staged, x)
    runners = litert_runners(bundle, "int8")
    for step in program.steps:
        outputs = program.graphs[step.graph].outputs
        got = runners[step.graph].run({p: env[t][:1] for p, t in step.inputs.items()})
        for port in outputs:  # quantised, but nearer its own torch tensor than any other of the same shape
            errors = {other.name: float(np.max(np.abs(got[port.name] - env[step.outputs[other.name]][:1])))
                      for other in outputs if other.shape == port.shape}
            assert min(errors, key=errors.get) == port.name, (step.name, port.name, errors)
    for row in report["backends"]["litert:int8"]["exits"]:
        assert row["argmax_agreement"] >= 0.75, row
    assert "int8_drift" in report and set(report["calibration"]["inputs"]) == set(program.graphs)


def test_port_check_refuses_a_mapping_it_cannot_tell_apart(exported):
    """Two same-shape outputs: a reference half-way between them fits both equally; the check must refuse to
    guess (in any precision) instead of writing either name into the manifest."""
    bundle, staged = exported["bundle"], exported["staged"]
    program = bundle.program
    candidates = [(g, [p for p in s.outputs if sum(q.shape == p.shape for q in s.outputs) > 1])
                  for g, s in program.graphs.items()]
    candidates = [(g, ports) for g, ports in candidates if ports]
    if not candidates:
        pytest.skip("no graph with two outputs of one shape")
    graph, (a, b) = candidates[-1][0], candidates[-1][1][:2]
    step = program.steps[program.steps_for_graph(graph)[-1]]
    x = bundle.reference_data()["input"][:2, 0]
    env = reference_env(staged, x)
    probe = {p: env[t][:, None] for p, t in step.inputs.items()}
    reference = {p: env[t][:, None] for p, t in step.outputs.items()}
    path = bundle.path_of(bundle.graph_file(graph, "fp32").path)
    kept = tuple(p.name for p in program.graphs[graph].inputs)
    mapping = resolve_ports(path, program.graphs[graph], "fp16", kept, probe, reference)
    assert dict(mapping.outputs) == {p.name: p.name for p in program.graphs[graph].outputs}
    reference[a.name] = (reference[a.name] + reference[b.name]) / 2
    with pytest.raises(ExportError, match="cannot be mapped exactly"):
        resolve_ports(path, program.graphs[graph], "fp16", kept, probe, reference)
