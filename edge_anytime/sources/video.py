"""Video sources through OpenCV (imported lazily): files, network streams, V4L2 and CSI cameras.

`plan_capture` turns a parsed URI into what `cv2.VideoCapture` is opened with (a
path, URL, device or GStreamer pipeline, the capture API and properties), so the
pipelines can be checked without a camera; `VideoSource` opens it and yields BGR
frames stamped when they were grabbed.

>>> plan = plan_capture(SourceURI("csi", "0", {"width": "1920", "height": "1080"}))
>>> plan.api, plan.target.split(" ! ")[0]
('CAP_GSTREAMER', 'nvarguscamerasrc sensor-id=0')
>>> plan_capture(SourceURI("v4l2", "/dev/video1", {})).properties["CAP_PROP_BUFFERSIZE"]
1
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

from ..errors import MissingDependencyError
from .frames import SourceError, SourceFrame
from .uri import SourceURI

OPENCV_HINT = ("install OpenCV with: pip install opencv-python-headless (from a source checkout: "
               "pip install '.[video]'); on Jetson, for csi:// and GStreamer pipelines use JetPack's OpenCV instead: "
               "sudo apt install python3-opencv, and create the venv with --system-site-packages")
GSTREAMER_HINT = ("this OpenCV was built without GStreamer (the opencv-python-headless wheels on PyPI never have "
                  "it); on Jetson use JetPack's OpenCV: sudo apt install python3-opencv, make the venv with "
                  "python3 -m venv --system-site-packages venv, and pip uninstall opencv-python-headless in it")


def opencv():
    """The cv2 module, or MissingDependencyError naming the install command."""
    try:
        import cv2
    except ImportError as exc:
        raise MissingDependencyError(f"reading video needs OpenCV; {OPENCV_HINT}") from exc
    return cv2


def has_gstreamer(cv2) -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1]
    return False


@dataclass(frozen=True)
class CapturePlan:
    """What `cv2.VideoCapture(target, api)` opens, then `properties` set on it (names of cv2 constants)."""

    kind: str
    target: str
    api: str
    properties: Mapping[str, float] = field(default_factory=dict)
    live: bool = False


def _int(params: Mapping[str, str], key: str, default: int) -> int:
    try:
        return int(params.get(key, default))
    except ValueError:
        raise SourceError(f"source option {key}={params[key]!r} must be an integer") from None


def csi_pipeline(sensor_id: int, width: int = 1280, height: int = 720, framerate: int = 30, flip: int = 0) -> str:
    """The GStreamer pipeline of a Jetson CSI camera (Argus), ending in BGR frames for OpenCV's appsink.

    >>> print(csi_pipeline(0).replace(" ! ", "\\n! "))
    nvarguscamerasrc sensor-id=0
    ! video/x-raw(memory:NVMM), width=(int)1280, height=(int)720, framerate=(fraction)30/1, format=(string)NV12
    ! nvvidconv flip-method=0
    ! video/x-raw, format=(string)BGRx
    ! videoconvert
    ! video/x-raw, format=(string)BGR
    ! appsink drop=true max-buffers=1 sync=false
    """
    return " ! ".join([
        f"nvarguscamerasrc sensor-id={sensor_id}",
        f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, "
        f"framerate=(fraction){framerate}/1, format=(string)NV12",
        f"nvvidconv flip-method={flip}",
        "video/x-raw, format=(string)BGRx",
        "videoconvert",
        "video/x-raw, format=(string)BGR",
        "appsink drop=true max-buffers=1 sync=false",
    ])


def plan_capture(uri: SourceURI) -> CapturePlan:
    """The capture plan of a `video`, `stream`, `v4l2` or `csi` URI (see edge_anytime.sources)."""
    params = uri.params
    if uri.kind == "csi":
        try:
            sensor = int(uri.location or "0")
        except ValueError:
            raise SourceError(f"csi://{uri.location}: the sensor id must be a number, e.g. csi://0") from None
        pipeline = csi_pipeline(sensor, _int(params, "width", 1280), _int(params, "height", 720),
                                _int(params, "framerate", 30), _int(params, "flip", 0))
        return CapturePlan("csi", pipeline, "CAP_GSTREAMER", {}, live=True)
    if uri.kind == "v4l2":
        props: dict[str, float] = {"CAP_PROP_BUFFERSIZE": 1}       # the newest frame, not a queue of old ones
        for key, prop in (("width", "CAP_PROP_FRAME_WIDTH"), ("height", "CAP_PROP_FRAME_HEIGHT"),
                          ("framerate", "CAP_PROP_FPS")):
            if key in params:
                props[prop] = _int(params, key, 0)
        return CapturePlan("v4l2", uri.location, "CAP_V4L2", props, live=True)
    if uri.kind == "stream":
        return CapturePlan("stream", uri.location, "CAP_FFMPEG", {"CAP_PROP_BUFFERSIZE": 1}, live=True)
    if uri.kind == "video":
        return CapturePlan("video", uri.location, "CAP_FFMPEG", {})
    raise SourceError(f"{uri.kind!r} is not a video source")


def _check_before_open(plan: CapturePlan, cv2) -> None:
    if plan.kind == "v4l2" and not os.path.exists(plan.target):
        others = sorted(str(p) for p in Path("/dev").glob("video*")) if Path("/dev").is_dir() else []
        raise SourceError(f"v4l2://{plan.target}: no such camera device ({'cameras here: ' + ', '.join(others) if others else 'no /dev/video* here'}); "
                          f"plug the camera in, list cameras with v4l2-ctl --list-devices "
                          f"(sudo apt install v4l-utils), and add the service user to group 'video'")
    if plan.kind == "csi" and not has_gstreamer(cv2):
        raise SourceError(f"csi:// needs OpenCV with GStreamer: {GSTREAMER_HINT}")
    if plan.kind == "video" and not Path(plan.target).is_file():
        raise SourceError(f"video file {plan.target!r} does not exist")


def _open_failed(plan: CapturePlan) -> str:
    if plan.kind == "csi":
        return ("could not start the CSI camera pipeline; check the ribbon cable and that the camera works with "
                "nvgstcapture-1.0, then sudo systemctl restart nvargus-daemon")
    if plan.kind == "v4l2":
        return (f"could not open {plan.target}: another process may hold it (fuser {plan.target}), or the service "
                f"user lacks group 'video' (sudo usermod -aG video $USER)")
    if plan.kind == "stream":
        return "could not open the stream: check the URL, that the server is up, and the credentials in the URL"
    return "OpenCV could not decode it: re-encode it (ffmpeg -i in -c:v libx264 out.mp4) or check the file"


class VideoSource:
    """Frames of a video capture, BGR, each stamped with `clock()` right after it was grabbed.

    A file ends at its last frame (`loop` N plays it N times, 0 forever); a live
    source ends on a read error or when closed. Use as an iterator, then `close()`
    (or a `with` block).
    """

    def __init__(self, plan: CapturePlan, loop: int = 1, clock: Callable[[], float] = time.perf_counter) -> None:
        cv2 = opencv()
        _check_before_open(plan, cv2)
        self.plan = plan
        self._cv2 = cv2
        self._loop = loop
        self._clock = clock
        self._capture = cv2.VideoCapture(plan.target, getattr(cv2, plan.api))
        if not self._capture.isOpened():
            self._capture.release()
            raise SourceError(f"{plan.kind} source {plan.target!r}: {_open_failed(plan)}")
        for name, value in plan.properties.items():
            self._capture.set(getattr(cv2, name), value)

    def __iter__(self) -> Iterator[SourceFrame]:
        played, index = 0, 0
        name = Path(self.plan.target).name if self.plan.kind == "video" else self.plan.kind
        while True:
            if not self._capture.grab():
                played += 1
                if self.plan.live or (self._loop and played >= self._loop) or index == 0:
                    return
                self._capture.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            stamp = self._clock()
            ok, frame = self._capture.retrieve()
            if not ok:
                return
            yield SourceFrame(frame, name=f"{name}[{index}]", capture_s=stamp, color_order="BGR")
            index += 1

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
