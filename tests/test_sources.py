"""Sources by URI: parsing, recordings, folders, video files and a local HTTP stream through OpenCV, and the
camera URIs (v4l2, csi) building the right capture and failing with the fix when there is no device."""

from __future__ import annotations

import doctest
import functools
import http.server
import subprocess
import sys
import threading

import numpy as np
import pytest

import edge_anytime.sources
import edge_anytime.sources.uri
import edge_anytime.sources.video
from edge_anytime.errors import MissingDependencyError
from edge_anytime.sources import SourceError, SourceURI, open_source, parse_source
from edge_anytime.sources.video import csi_pipeline, plan_capture
from tests.conftest import DEMO_BUNDLE, REPO


@pytest.mark.parametrize("module", [edge_anytime.sources, edge_anytime.sources.uri, edge_anytime.sources.video])
def test_docstrings_run(module):
    assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize("text, kind, location, params", [
    ("v4l2:///dev/video0", "v4l2", "/dev/video0", {}),
    ("/dev/video2", "v4l2", "/dev/video2", {}),
    ("v4l2:///dev/video0?width=640&height=480&framerate=15", "v4l2", "/dev/video0",
     {"width": "640", "height": "480", "framerate": "15"}),
    ("csi://1", "csi", "1", {}),
    ("csi://0?flip=2", "csi", "0", {"flip": "2"}),
    ("file://clip.mp4", "video", "clip.mp4", {}),
    ("file:///data/clip.MKV", "video", "/data/clip.MKV", {}),
    ("clip.mp4", "video", "clip.mp4", {}),
    ("rtsp://127.0.0.1:8554/cam?x=1", "stream", "rtsp://127.0.0.1:8554/cam?x=1", {}),
    ("http://127.0.0.1:8080/clip.avi", "stream", "http://127.0.0.1:8080/clip.avi", {}),
    ("rec.npz", "npz", "rec.npz", {}),
    ("npz:rec.npz?order=BGR", "npz", "rec.npz", {"order": "BGR"}),
    ("dir:frames", "folder", "frames", {}),
    ("serial:///dev/ttyTHS0?baud=921600", "serial", "serial:///dev/ttyTHS0?baud=921600", {}),
    ("serial:loop://", "serial", "serial:loop://", {}),
])
def test_uris_parse_like_jetson_videosource(text, kind, location, params):
    uri = parse_source(text)
    assert (uri.kind, uri.location, dict(uri.params)) == (kind, location, params)


@pytest.mark.parametrize("text, message", [
    ("camera:0", "unknown source 'camera:0'"),
    ("gopher://x", "unknown source scheme 'gopher://'"),
    ("", "empty source"),
])
def test_bad_uris_name_the_accepted_forms(text, message):
    with pytest.raises(SourceError, match=message) as info:
        parse_source(text)
    assert "v4l2:///dev/video0" in str(info.value) and "csi://0" in str(info.value)


def test_npz_recording_frames_are_stamped_in_order(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (4, 20, 30, 3), dtype=np.uint8)
    np.savez(tmp_path / "rec.npz", frames=frames, labels=np.arange(4), budget_ms=np.full(4, 5.0))
    for text in (str(tmp_path / "rec.npz"), f"file://{tmp_path / 'rec.npz'}", f"npz:{tmp_path / 'rec.npz'}?loop=2"):
        with open_source(text) as source:
            items = list(source)
        assert len(items) == (8 if "loop" in text else 4)
        assert np.array_equal(items[1].frame, frames[1]) and items[1].label == 1 and items[1].budget_s == 0.005
        stamps = [i.capture_s for i in items]
        assert stamps == sorted(stamps) and items[0].color_order == "RGB"


def test_image_folder_keeps_each_image_as_stored(tmp_path):
    big = np.random.default_rng(1).integers(0, 256, (72, 128, 3), dtype=np.uint8)
    (tmp_path / "a.ppm").write_bytes(b"P6\n128 72\n255\n" + big.tobytes())
    np.save(tmp_path / "b.npy", big[:10, :12, 0])
    with open_source(str(tmp_path)) as source:
        items = list(source)
    assert [i.name for i in items] == ["a.ppm", "b.npy"]
    assert np.array_equal(items[0].frame, big) and items[1].frame.shape == (10, 12)
    with pytest.raises(SourceError, match="does not exist"):
        open_source(f"dir:{tmp_path / 'a.ppm'}x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        open_source(f"dir:{tmp_path / 'empty'}")


def test_v4l2_and_csi_build_the_capture_the_board_needs():
    v4l2 = plan_capture(SourceURI("v4l2", "/dev/video0", {"width": "1280", "height": "720", "framerate": "30"}))
    assert (v4l2.target, v4l2.api, v4l2.live) == ("/dev/video0", "CAP_V4L2", True)
    assert v4l2.properties == {"CAP_PROP_BUFFERSIZE": 1, "CAP_PROP_FRAME_WIDTH": 1280, "CAP_PROP_FRAME_HEIGHT": 720,
                               "CAP_PROP_FPS": 30}
    csi = plan_capture(parse_source("csi://1?width=1920&height=1080&framerate=60&flip=2"))
    assert csi.api == "CAP_GSTREAMER" and csi.target == csi_pipeline(1, 1920, 1080, 60, 2)
    stages = csi.target.split(" ! ")
    assert stages[0] == "nvarguscamerasrc sensor-id=1" and "width=(int)1920, height=(int)1080" in stages[1]
    assert "framerate=(fraction)60/1" in stages[1] and stages[2] == "nvvidconv flip-method=2"
    assert stages[-2] == "video/x-raw, format=(string)BGR" and stages[-1].startswith("appsink drop=true max-buffers=1")
    with pytest.raises(SourceError, match="must be an integer"):
        plan_capture(parse_source("v4l2:///dev/video0?width=wide"))


def test_absent_camera_fails_with_the_fix():
    pytest.importorskip("cv2", reason="opencv-python-headless (requirements/dev.txt) opens cameras")
    with pytest.raises(SourceError, match="no such camera device.*v4l2-ctl --list-devices.*group 'video'"):
        open_source("v4l2:///dev/video97")
    import cv2

    from edge_anytime.sources.video import has_gstreamer

    if has_gstreamer(cv2):      # a GStreamer build without Argus: the pipeline does not start
        with pytest.raises(SourceError, match="nvargus-daemon"):
            open_source("csi://0")
    else:                       # the PyPI wheel: no GStreamer at all
        with pytest.raises(SourceError, match="GStreamer.*--system-site-packages"):
            open_source("csi://0")


def test_missing_opencv_names_the_install_command():
    code = ("import sys; sys.modules['cv2'] = None\n"
            "from edge_anytime.sources import open_source\n"
            "try:\n    open_source('clip.mp4')\nexcept Exception as e:\n    print(type(e).__name__, e)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith(MissingDependencyError.__name__), out.stderr
    assert "pip install opencv-python-headless" in out.stdout


def write_clip(path, frames_bgr, fourcc="mp4v", fps=30):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (requirements/dev.txt) writes the clip")
    height, width = frames_bgr[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc}"
    for frame in frames_bgr:
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    return path


def gradient_frames(count, height=120, width=160):
    y, x = np.mgrid[0:height, 0:width]
    return [np.stack([(x + 8 * i) % 256, (y * 2) % 256, np.full_like(x, 40 * i % 256)], -1).astype(np.uint8)
            for i in range(count)]


def test_video_file_frames_are_bgr_stamped_and_loop(tmp_path):
    frames = gradient_frames(12)
    clip = write_clip(tmp_path / "clip.mp4", frames)
    with open_source(f"file://{clip}") as source:
        items = list(source)
    assert len(items) == 12 and items[0].color_order == "BGR" and items[0].frame.shape == (120, 160, 3)
    assert all(np.abs(a.frame.astype(int) - b).mean() < 6 for a, b in zip(items, frames))
    assert [i.capture_s for i in items] == sorted(i.capture_s for i in items)
    with open_source(str(clip), loop=2) as source:
        assert len(list(source)) == 24
    with pytest.raises(SourceError, match="does not exist"):
        open_source(str(tmp_path / "missing.mp4"))


def test_local_http_stream(tmp_path):
    """A clip served by a local HTTP server (loopback only) read as a network stream."""
    frames = gradient_frames(10)
    write_clip(tmp_path / "clip.avi", frames, fourcc="MJPG")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with open_source(f"http://127.0.0.1:{server.server_address[1]}/clip.avi") as source:
            items = list(source)
    finally:
        server.shutdown()
        server.server_close()
    assert len(items) == 10 and all(np.abs(a.frame.astype(int) - b).mean() < 6 for a, b in zip(items, frames))
    assert items[0].name.startswith("stream")


def test_reference_npz_of_the_shipped_bundle_is_a_source():
    with open_source(str(DEMO_BUNDLE / "reference" / "self_test.npz")) as source:
        first = next(iter(source))
    assert first.frame.dtype == np.float32 and first.frame.shape == (1, 3, 32, 32)
