"""From a video file to results: real GTSRB test frames upscaled to 1280x720 in an MPEG-4 clip, served by
`edge-anytime serve --source clip.mp4`, deliver one result per frame with the accuracy of the same frames at
32x32 (within 1 point: the codec is lossy)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import DEMO_BUNDLE, REPO, data_dir

FRAMES = 1000


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_anytime.cli", "serve", "--bundle", str(DEMO_BUNDLE),
                           "--precision", "fp32", "--stats-every", "0", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def accuracy(log, labels) -> tuple[float, list[dict]]:
    records = [json.loads(line) for line in log.read_text().splitlines()]
    predicted = np.array([r["label"] for r in records])
    return float((predicted == labels[:len(predicted)]).mean()), records


def test_serve_a_720p_gtsrb_clip_like_the_32x32_frames(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (requirements/dev.txt) writes and reads the clip")
    from training.data import load_split

    x, y = load_split("gtsrb32", "test", data_dir=data_dir())
    x, y = x[:FRAMES], y[:FRAMES]
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30, (1280, 720))
    assert writer.isOpened()
    for image in x:     # a camera's view: a smooth 1280x720 BGR picture of the sign
        writer.write(cv2.resize(np.ascontiguousarray(image[..., ::-1]), (1280, 720), interpolation=cv2.INTER_LINEAR))
    writer.release()
    np.savez(tmp_path / "small.npz", frames=x, labels=y)

    video_log, small_log = tmp_path / "video.jsonl", tmp_path / "small.jsonl"
    out = serve("--source", str(clip), "--resize", "stretch", "--budget-ms", "2000", "--sink", f"jsonl:{video_log}")
    assert out.returncode == 0, out.stderr
    assert f"served {FRAMES} frames" in out.stderr
    out = serve("--source", f"npz:{tmp_path / 'small.npz'}", "--budget-ms", "2000", "--sink", f"jsonl:{small_log}")
    assert out.returncode == 0, out.stderr

    video_acc, records = accuracy(video_log, y)
    small_acc, _ = accuracy(small_log, y)
    assert len(records) == FRAMES and [r["frame"] for r in records] == list(range(FRAMES))
    assert all(r["status"] == "final" and r["met_deadline"] and r["age_ms"] > 0 for r in records)
    print(f"accuracy 1280x720 clip {video_acc:.4f} vs 32x32 frames {small_acc:.4f}")
    assert small_acc > 0.85
    assert abs(video_acc - small_acc) <= 0.01, (video_acc, small_acc)


def test_serve_refuses_720p_frames_of_a_v1_bundle_without_resize(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (requirements/dev.txt) writes the clip")
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30, (1280, 720))
    for i in range(3):
        writer.write(np.full((720, 1280, 3), 60 * i, np.uint8))
    writer.release()
    log = tmp_path / "out.jsonl"
    out = serve("--source", f"file://{clip}", "--budget-ms", "100", "--sink", f"jsonl:{log}")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["status"] for r in records] == ["no_result"] * 3
    assert "--resize stretch" in records[0]["error"] and "rejected" in out.stderr


def test_a_live_stream_that_ends_is_an_error_so_systemd_restarts_the_service(tmp_path):
    """A network camera (here a clip on a loopback HTTP server) that stops: every frame served, then exit 1."""
    import functools
    import http.server
    import threading

    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (requirements/dev.txt) writes the clip")
    writer = cv2.VideoWriter(str(tmp_path / "cam.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30, (320, 240))
    for i in range(5):
        writer.write(np.full((240, 320, 3), 40 * i, np.uint8))
    writer.release()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log = tmp_path / "out.jsonl"
    try:
        out = serve("--source", f"http://127.0.0.1:{server.server_address[1]}/cam.avi", "--resize", "stretch",
                    "--budget-ms", "1000", "--sink", f"jsonl:{log}")
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == 1 and "stopped delivering frames after 5" in out.stderr, out.stderr
    assert len(log.read_text().splitlines()) == 5
