"""Property-based tests (hypothesis) of what the outside world sends: serial bytes, frames, budgets, manifests."""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_anytime import BundleError, StopReason
from edge_anytime.manifest import example_manifest, parse_manifest
from edge_anytime.serial.protocol import FrameDecoder, Ping, encode
from tests.test_controller_sim import make

MS = 1e-3
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(noise=st.lists(st.binary(max_size=64), max_size=8), cuts=st.lists(st.integers(1, 40), max_size=6),
       tokens=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=6))
def test_the_decoder_delivers_every_valid_message_exactly_once_between_any_noise(noise, cuts, tokens):
    wire = b""
    for i, token in enumerate(tokens):
        wire += (noise[i] if i < len(noise) else b"") + encode(Ping(token), seq=i)
    decoder = FrameDecoder()
    got, at = [], 0
    for cut in cuts + [len(wire)]:
        got += decoder.feed(wire[at:at + cut])
        at += cut
    got += decoder.feed(wire[at:]) + decoder.flush()
    # random noise forms a valid frame only with probability ~2^-32 per position: exactly our messages arrive
    assert [m.token for m in got if isinstance(m, Ping)] == tokens


@FAST
@given(data=st.binary(max_size=512))
def test_the_decoder_never_raises_on_arbitrary_bytes(data):
    decoder = FrameDecoder(max_payload=4096)
    decoder.feed(data)
    decoder.flush()
    s = decoder.stats
    assert s.bytes_received == len(data) and decoder.pending == 0


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**12),
                    st.sampled_from([np.float32(0.004), np.float64(-1.0), np.int64(3)]),
                    st.text(max_size=3), st.none())


@FAST
@given(budget=numbers, target=numbers)
def test_any_budget_or_target_gives_a_readable_result_and_the_controller_goes_on(raw_frame, budget, target):
    ctrl, _, _, _ = make()
    result = ctrl.run(raw_frame, budget, confidence_target=target)
    assert isinstance(result.status, StopReason)
    _ = (result.label, result.confidence, result.exit_index, result.met_deadline, result.lateness_s)
    if result.status is StopReason.NO_RESULT and result.error:
        assert isinstance(result.error, str)
    assert ctrl.run(raw_frame, 10 * MS).status is StopReason.FINAL


@FAST
@given(shape=st.lists(st.integers(0, 40), min_size=0, max_size=4),
       dtype=st.sampled_from(["uint8", "float32", "float64", "int16", "bool", "complex64"]),
       fill=st.sampled_from([0.0, 1.0, math.nan, math.inf, 3e38]))
def test_any_frame_gives_a_readable_result(raw_frame, shape, dtype, fill):
    ctrl, _, _, _ = make()
    with np.errstate(invalid="ignore"):     # NaN/inf cast to an integer dtype: whatever bytes come, come
        frame = np.full(shape, fill).astype(dtype) if dtype != "bool" else np.zeros(shape, bool)
    result = ctrl.run(frame, 10 * MS)
    assert result.status in (StopReason.FINAL, StopReason.NO_RESULT, StopReason.DEGRADED)
    _ = (result.label, result.confidence, result.label_name)
    assert ctrl.run(raw_frame, 10 * MS).status is StopReason.FINAL


def mutations():
    paths = [("exits", 0, "temperature"), ("exits", 1, "val_accuracy"), ("model", "input", "std"),
             ("model", "input", "mean"), ("model", "labels"), ("graphs",), ("steps",), ("exits",), ("version",)]
    values = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5),
                       st.text(max_size=4), st.lists(st.floats(allow_nan=True), max_size=4), st.just({}), st.just([]))
    return st.tuples(st.sampled_from(paths), values)


@FAST
@given(change=mutations())
def test_a_mutated_manifest_is_refused_with_a_bundle_error_or_parses(change):
    data = json.loads(json.dumps(example_manifest()))
    path, value = change
    node = data
    for key in path[:-1]:
        node = node[key] if not isinstance(node, list) or key < len(node) else node[-1]
    node[path[-1]] = value
    try:
        manifest = parse_manifest(data)
    except BundleError:
        return
    for exit_ in manifest.program.exits:      # whatever parsed is usable: finite, in range
        assert math.isfinite(exit_.temperature) and exit_.temperature > 0
        assert exit_.val_accuracy is None or 0 <= exit_.val_accuracy <= 1
    assert all(math.isfinite(v) and v > 0 for v in manifest.model.input.std)
