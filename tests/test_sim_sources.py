"""Stream sources: specs, recorded .npz streams and their validation, GTSRB tracks, the serial link."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from simulator.sources import SensorFrame, StreamError, open_stream, parse_spec, save_npz
from tests.conftest import data_dir


def test_sensor_frame_is_frozen():
    frame = SensorFrame(0, np.zeros((2, 2, 3), np.uint8), 0.0, 3, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.label = 4


def test_npz_roundtrip_with_ground_truth(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8)
    path = save_npz(tmp_path / "rec.npz", frames, timestamps=[10.0, 10.1, 10.2, 10.3, 10.5], labels=[1, 1, 2, 2, -1],
                    track_ids=[0, 0, 1, 1, 2])
    stream = open_stream(f"npz:{path}")
    items = list(stream)
    assert len(stream) == 5 and [f.label for f in items] == [1, 1, 2, 2, -1]
    assert items[0].timestamp_s == 0.0 and items[4].timestamp_s == pytest.approx(0.5)  # relative to the first
    assert np.array_equal(items[2].frame, frames[2]) and items[3].track_id == 1
    no_times = save_npz(tmp_path / "plain.npz", frames)
    assert [f.timestamp_s for f in open_stream(f"npz:{no_times}?fps=10", frames=3)] == pytest.approx([0, 0.1, 0.2])


def test_npz_validation_names_the_problem(tmp_path):
    empty = tmp_path / "empty.npz"
    np.savez(empty, frames=np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(StreamError, match="empty"):
        open_stream(f"npz:{empty}")
    good = tmp_path / "good.npz"
    save_npz(good, np.zeros((4, 8, 8, 3), np.uint8))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(StreamError, match="truncated"):
        open_stream(f"npz:{truncated}")
    mismatched = tmp_path / "mismatched.npz"
    np.savez(mismatched, frames=np.zeros((4, 8, 8, 3), np.uint8), labels=np.zeros(3, np.int64))
    with pytest.raises(StreamError, match="mismatched lengths"):
        open_stream(f"npz:{mismatched}")
    no_frames = tmp_path / "noframes.npz"
    np.savez(no_frames, images=np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(StreamError, match="no 'frames'"):
        open_stream(f"npz:{no_frames}")
    backwards = tmp_path / "backwards.npz"
    np.savez(backwards, frames=np.zeros((2, 8, 8, 3), np.uint8), timestamps=np.array([1.0, 0.5]))
    with pytest.raises(StreamError, match="non-decreasing"):
        open_stream(f"npz:{backwards}")
    with pytest.raises(StreamError, match="does not exist"):
        open_stream(f"npz:{tmp_path / 'missing.npz'}")


@pytest.mark.parametrize("spec, message", [
    ("kitti", "unknown stream"),
    ("gtsrb-tracks?fsp=30", "unknown option"),
    ("gtsrb-tracks?fps=-1", "fps must be > 0"),
    ("gtsrb-test?order=random", "order must be"),
    ("npz:", "needs a path"),
])
def test_bad_stream_specs(spec, message):
    with pytest.raises(StreamError, match=message):
        open_stream(spec)


def test_spec_parsing_keeps_serial_urls_whole():
    assert parse_spec("serial:serial:///dev/ttyTHS1?baud=921600") == ("serial", "serial:///dev/ttyTHS1?baud=921600", {})
    assert parse_spec("gtsrb-tracks?seed=2&fps=15") == ("gtsrb-tracks", "", {"seed": "2", "fps": "15"})


@pytest.mark.skipif(not (data_dir() / "gtsrb32").is_dir(), reason="GTSRB data not present")
def test_gtsrb_tracks_replay_whole_held_out_tracks_as_a_camera():
    from training.data import gtsrb_val_tracks

    stream = open_stream("gtsrb-tracks?fps=30&gap=0.5", frames=90, data_dir=data_dir())
    items = list(stream)
    assert len(items) == 90 and items[0].frame.shape == (32, 32, 3) and items[0].frame.dtype == np.uint8
    held_out = {(a, b, c) for a, b, c in gtsrb_val_tracks(data_dir())}
    assert len({f.track_id for f in items}) == 3
    for track in range(3):
        members = [f for f in items if f.track_id == track]
        assert len(members) == 30 and len({f.label for f in members}) == 1
        assert np.diff([f.timestamp_s for f in members]) == pytest.approx(np.full(29, 1 / 30))
        assert any(c == members[0].label and b - a == 30 for a, b, c in held_out)
    gap = items[30].timestamp_s - items[29].timestamp_s
    assert gap == pytest.approx(1 / 30 + 0.5)


def test_serial_stream_over_loopback():
    pytest.importorskip("serial")
    messages = pytest.importorskip("edge_anytime.serial.messages")
    link_module = pytest.importorskip("edge_anytime.serial.link")
    from simulator.sources import SerialStream

    link = link_module.open_link("loop://")
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(3)]
    link.send(messages.Ping(token=1))
    for i, frame in enumerate(frames):
        link.send(messages.Frame.from_array(i, frame, budget_s=0.002))
    stream = SerialStream("loop://", frames=3, idle_timeout_s=1.0, link=link)
    with stream:
        items = list(stream)
    assert [int(f.frame[0, 0, 0]) for f in items] == [0, 1, 2] and stream.skipped == 1
    assert all(f.label == -1 for f in items)
