"""Shared pieces of the exporter: its error type, tool versions, hashing, deterministic files.

>>> sha256_bytes(b"")[:12]
'e3b0c44298fc'
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import numpy as np

#: Bumped whenever a change in this package changes the bytes it writes for the same inputs.
EXPORTER_VERSION = "1"

#: Packages whose versions decide the converted bytes (part of every cache key).
TOOLS = ("torch", "onnx", "onnxscript", "onnx-ir", "onnxruntime", "onnx2tf", "tensorflow-cpu", "tf-keras",
         "onnxsim", "onnx-graphsurgeon", "numpy", "ai-edge-litert")

_PORT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ExportError(RuntimeError):
    """The export cannot go on; the message names the graph, the layer/op or the file, and the fix."""


def tool_versions() -> dict[str, str]:
    """Installed versions of the conversion tool chain (without importing any of it)."""
    versions = {}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_array(array: np.ndarray) -> str:
    """Hash of an array's dtype, shape and bytes (C order)."""
    digest = hashlib.sha256(f"{array.dtype.str}{tuple(array.shape)}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    return sha256_bytes(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def check_port_name(name: str, where: str) -> None:
    """Port names become ONNX and TFLite signature names: keep them identifier-like."""
    if not _PORT_NAME.match(name):
        raise ExportError(f"{where}: port name {name!r} cannot be exported; use letters, digits and '_' "
                          f"(onnx2tf rewrites other characters, which would break the port mapping)")


def save_npz_deterministic(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Like numpy.savez, but byte-identical for identical arrays (fixed zip timestamps, sorted names).

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); a = os.path.join(d, "a.npz"); b = os.path.join(d, "b.npz")
    >>> save_npz_deterministic(a, {"x": np.arange(3)}); save_npz_deterministic(b, {"x": np.arange(3)})
    >>> open(a, "rb").read() == open(b, "rb").read(), np.load(a)["x"].tolist()
    (True, [0, 1, 2])
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())


def write_json(path: str | Path, value: Any) -> None:
    Path(path).write_text(json.dumps(value, indent=2, sort_keys=False) + "\n")
