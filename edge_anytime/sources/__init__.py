"""Sensor sources by URI: cameras, video files and streams, image folders, recordings.

The URI forms follow jetson-utils' `videoSource`, so Jetson users can reuse theirs:

| source | URI | decoded by |
|---|---|---|
| V4L2 camera (USB, MIPI through V4L2) | `v4l2:///dev/video0`, `/dev/video0`; `?width=1280&height=720&framerate=30` | OpenCV (CAP_V4L2) |
| Jetson CSI camera | `csi://0` (sensor id); `?width=&height=&framerate=&flip=` | OpenCV + GStreamer (`nvarguscamerasrc` pipeline) |
| video file | `file://clip.mp4`, `clip.mp4` (.mp4 .mkv .avi .mov .webm ...) | OpenCV (FFmpeg) |
| network stream | `rtsp://host:8554/path`, `http://...`, `rtmp://...`, `udp://...` | OpenCV (FFmpeg) |
| image folder | `FOLDER`, `file://FOLDER`, `dir:FOLDER`, one image file | numpy (.ppm .pgm .npy), Pillow (.png .jpg) |
| recording | `rec.npz`, `npz:rec.npz` (arrays `frames`, optional `budget_ms`, `labels`) | numpy |
| serial link | `serial:///dev/ttyTHS0?baud=921600` | edge_anytime.serial (served, not iterated: see serve) |

Every frame is a `SourceFrame` stamped at capture (`capture_s`, on `time.perf_counter`,
the controller's clock), so a live deadline is capture time + control period, and
carries its channel order (OpenCV frames are BGR). OpenCV is imported only when a
video source is opened; without it the error names the install command.

>>> source = open_source("deploy/bundles/gtsrb-resann/reference/self_test.npz")
>>> first = next(iter(source)); first.frame.shape, first.capture_s > 0
((1, 3, 32, 32), True)
>>> source.close()
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

from .files import FRAME_KEYS, IMAGE_SUFFIXES, fit, folder_source, load_image, npz_source, read_pnm
from .frames import SourceError, SourceFrame
from .uri import USAGE, SourceURI, parse_source


class Source:
    """An opened source: iterate it for SourceFrames, then `close()`; `uri` says what it is."""

    def __init__(self, uri: SourceURI, frames: Iterator[SourceFrame], closer: Callable[[], None] | None = None):
        self.uri = uri
        self._frames = frames
        self._closer = closer

    @property
    def live(self) -> bool:
        return self.uri.kind in ("v4l2", "csi", "stream")

    def __iter__(self) -> Iterator[SourceFrame]:
        return iter(self._frames)

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_source(text: str | SourceURI, loop: int = 1, clock: Callable[[], float] = time.perf_counter) -> Source:
    """Open a source by URI (see the table above); `loop` replays files N times (0: forever)."""
    uri = parse_source(text) if isinstance(text, str) else text
    loop = int(uri.params.get("loop", loop))
    if uri.kind == "npz":
        return Source(uri, npz_source(uri.location, loop, uri.params.get("order", "RGB").upper(), clock))
    if uri.kind == "folder":
        return Source(uri, folder_source(uri.location, loop, clock))
    if uri.kind in ("video", "stream", "v4l2", "csi"):
        from .video import VideoSource, plan_capture

        video = VideoSource(plan_capture(uri), loop, clock)
        return Source(uri, iter(video), video.close)
    raise SourceError(f"{uri.kind} sources are served, not iterated: use edge_anytime.serve --source "
                      f"{uri.location}")


__all__ = ["FRAME_KEYS", "IMAGE_SUFFIXES", "USAGE", "Source", "SourceError", "SourceFrame", "SourceURI", "fit",
           "folder_source", "load_image", "npz_source", "open_source", "parse_source", "read_pnm"]
