"""Source URIs, with the conventions of jetson-utils' videoSource.

>>> parse_source("csi://0")
SourceURI(kind='csi', location='0', params={})
>>> parse_source("v4l2:///dev/video0?width=640&height=480")
SourceURI(kind='v4l2', location='/dev/video0', params={'width': '640', 'height': '480'})
>>> parse_source("/dev/video1").kind, parse_source("file://clip.mp4").location, parse_source("npz:rec.npz").kind
('v4l2', 'clip.mp4', 'npz')
>>> parse_source("rtsp://127.0.0.1:8554/cam").kind
'stream'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import parse_qsl

from .frames import SourceError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mjpeg", ".mjpg", ".h264", ".h265", ".ts",
                  ".flv", ".ogv")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "rtp")
KINDS = ("npz", "folder", "video", "stream", "v4l2", "csi", "serial")
USAGE = ("v4l2:///dev/video0 | /dev/video0 | csi://0 | file://clip.mp4 | clip.mp4 | rtsp://host:8554/path | "
         "http://host/stream | FOLDER (images) | rec.npz | npz:FILE | dir:FOLDER | serial:///dev/ttyTHS0?baud=921600")


@dataclass(frozen=True)
class SourceURI:
    """`kind` (one of KINDS), `location` (path, device, sensor id or URL) and `?key=value` options."""

    kind: str
    location: str
    params: Mapping[str, str] = field(default_factory=dict)


def _split_query(text: str) -> tuple[str, dict[str, str]]:
    base, sep, query = text.partition("?")
    return (base, dict(parse_qsl(query, keep_blank_values=True))) if sep else (text, {})


def _by_path(path: str, params: dict[str, str]) -> SourceURI:
    lower = path.lower()
    if path.startswith("/dev/video"):
        return SourceURI("v4l2", path, params)
    if lower.endswith(".npz"):
        return SourceURI("npz", path, params)
    if lower.endswith(VIDEO_SUFFIXES):
        return SourceURI("video", path, params)
    if os.path.isdir(path) or lower.endswith((".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".npy")):
        return SourceURI("folder", path, params)
    if os.path.isfile(path):          # a video without a known suffix: let OpenCV try
        return SourceURI("video", path, params)
    raise SourceError(f"unknown source {path!r}: no such file or folder, and not a known URI; use one of: {USAGE}")


def parse_source(text: str) -> SourceURI:
    """Parse a `--source` value (see USAGE); raises SourceError naming the accepted forms."""
    if not text:
        raise SourceError(f"empty source; use one of: {USAGE}")
    if text.startswith("serial:"):
        return SourceURI("serial", text)
    scheme, sep, rest = text.partition("://")
    if sep:
        scheme = scheme.lower()
        if scheme in STREAM_SCHEMES:
            return SourceURI("stream", text)
        location, params = _split_query(rest)
        if scheme == "csi":
            return SourceURI("csi", location or "0", params)
        if scheme == "v4l2":
            return SourceURI("v4l2", location, params)
        if scheme == "file":
            return _by_path(location, params)
        raise SourceError(f"unknown source scheme {scheme + '://'!r} in {text!r}; use one of: {USAGE}")
    prefix, colon, rest = text.partition(":")
    if colon and prefix in ("npz", "dir"):       # the v1 forms
        location, params = _split_query(rest)
        return SourceURI("npz" if prefix == "npz" else "folder", location, params)
    location, params = _split_query(text)
    return _by_path(location, params)
