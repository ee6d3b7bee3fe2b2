"""The shipped GTSRB bundle on real LiteRT: parity, accuracy, real-clock behaviour, files vanishing after load."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edge_anytime import Bundle, Callbacks, Controller, ControllerOptions, StopReason
from edge_anytime.backends import GraphLoadSpec, create_backend
from tests.conftest import DEMO_BUNDLE, data_dir

pytestmark = pytest.mark.skipif(not (DEMO_BUNDLE / "manifest.json").is_file(), reason="demo bundle not built")


@pytest.fixture(scope="module")
def gtsrb_test():
    from training.data import load_split

    x, y = load_split("gtsrb32", "test", data_dir=data_dir())
    return x[:300], y[:300]


def run_chain(bundle: Bundle, precision: str, tensor: np.ndarray) -> dict:
    backend = create_backend("litert", num_threads=1)
    env = {bundle.program.input_tensor: tensor}
    runners = {}
    for name, signature in bundle.program.graphs.items():
        graph_file = bundle.graph_file(name, precision)
        runners[name] = backend.load_graph(GraphLoadSpec(signature, precision, graph_file, bundle.path_of(graph_file.path)))
    for step in bundle.program.steps:
        out = runners[step.graph].run({p: env[t] for p, t in step.inputs.items()})
        env.update({t: out[p] for p, t in step.outputs.items()})
    return env


def test_fp32_litert_matches_the_stored_torch_logits_for_every_exit():
    bundle = Bundle.load(DEMO_BUNDLE)
    reference = bundle.reference_data()
    worst = 0.0
    for i in range(reference["input"].shape[0]):
        env = run_chain(bundle, "fp32", reference["input"][i])
        for exit_ in bundle.program.exits:
            expected = reference[exit_.tensor][i]
            worst = max(worst, float(np.abs(env[exit_.tensor] - expected).max()))
            assert env[exit_.tensor].argmax() == expected.argmax()
    assert worst <= 1e-4, f"max |delta logits| {worst}"


def test_every_precision_loads_and_agrees_on_the_final_exit():
    bundle = Bundle.load(DEMO_BUNDLE)
    reference = bundle.reference_data()
    last = bundle.program.exits[-1].tensor
    for precision in bundle.precisions():
        agree = np.mean([run_chain(bundle, precision, reference["input"][i])[last].argmax() == reference[last][i].argmax()
                         for i in range(reference["input"].shape[0])])
        assert agree >= 0.9, (precision, agree)


def test_real_images_accuracy_grows_with_budget_on_the_real_clock(gtsrb_test):
    x, y = gtsrb_test
    with Controller.from_bundle(DEMO_BUNDLE) as ctrl:
        generous = [ctrl.run(frame, 0.5) for frame in x]
    assert all(r.status is StopReason.FINAL for r in generous)
    accuracy = np.mean([r.label == label for r, label in zip(generous, y)])
    assert accuracy >= 0.9
    assert all(r.met_deadline for r in generous)
    assert all(r.exits[0].confidence <= 1.0 and r.best.prediction.coarse_name for r in generous)


def test_apriori_mode_on_litert_runs_one_slice(gtsrb_test):
    x, _ = gtsrb_test
    with Controller.from_bundle(DEMO_BUNDLE, options=ControllerOptions(mode="apriori")) as ctrl:
        result = ctrl.run(x[0], 0.5)
    assert result.status is StopReason.FINAL and len(result.exits) == 1
    assert result.exit_index == len(Bundle.load(DEMO_BUNDLE).program.exits) - 1


def test_stage_files_deleted_after_load_do_not_stop_the_controller(tmp_path, gtsrb_test):
    x, _ = gtsrb_test
    copy = tmp_path / "bundle"
    shutil.copytree(DEMO_BUNDLE, copy)

    class Errors(Callbacks):
        def __init__(self):
            self.errors = []

        def on_error(self, error, context):
            self.errors.append(context)

    errors = Errors()
    with Controller.from_bundle(copy, callbacks=errors) as ctrl:
        shutil.rmtree(copy / "graphs")
        results = [ctrl.run(frame, 0.5) for frame in x[:20]]
        ctrl.flush()
    assert all(r.status is StopReason.FINAL for r in results)
    assert errors.errors == []


def test_bad_frames_between_good_ones_on_litert(gtsrb_test):
    x, _ = gtsrb_test
    with Controller.from_bundle(DEMO_BUNDLE) as ctrl:
        statuses = [ctrl.run(frame, 0.5).status for frame in
                    (x[0], np.full((32, 32, 3), np.inf, np.float32), x[1][:16], x[2])]
        assert ctrl.stats().rejected_frames == 2
    assert statuses == [StopReason.FINAL, StopReason.NO_RESULT, StopReason.NO_RESULT, StopReason.FINAL]
