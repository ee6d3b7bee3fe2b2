"""A content-addressed cache of converted graph files.

Key: sha256 of the canonical ONNX bytes, the conversion options, the calibration data hashes and
the tool versions (see `convert.conversion_key`). An entry is a folder `<key[:2]>/<key>/` with one
file per precision and `entry.json` listing their sha256; entries are written to a temporary
folder and renamed into place, so a crashed conversion never leaves a half entry, and an entry
whose files do not match their hashes is treated as a miss and replaced.

>>> import tempfile
>>> cache = ConversionCache(tempfile.mkdtemp())
>>> cache.get("ab" * 32) is None
True
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

from edge_anytime.bundle import sha256_file


class ConversionCache:
    def __init__(self, root: str | os.PathLike | None) -> None:
        self.root = Path(root) if root is not None else None

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _entry(self, key: str) -> Path:
        return self.root / "convert" / key[:2] / key

    def get(self, key: str) -> dict[str, Path] | None:
        """{precision: file} of a complete, intact entry, else None."""
        if self.root is None:
            return None
        entry = self._entry(key)
        try:
            record = json.loads((entry / "entry.json").read_text())
            files = {precision: entry / name for precision, (name, _) in record["files"].items()}
            for precision, (name, digest) in record["files"].items():
                if sha256_file(entry / name) != digest:
                    raise ValueError(f"{entry / name} changed")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return files

    def put(self, key: str, files: Mapping[str, Path], info: Mapping | None = None) -> dict[str, Path]:
        """Store copies of `files` ({precision: path}) under `key`; returns the cached paths."""
        if self.root is None:
            return dict(files)
        entry = self._entry(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=entry.parent))
        try:
            record = {"key": key, "files": {}, "info": dict(info or {})}
            for precision, path in sorted(files.items()):
                name = f"{precision}.tflite"
                shutil.copyfile(path, staging / name)
                record["files"][precision] = [name, sha256_file(staging / name)]
            (staging / "entry.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
            os.chmod(staging, 0o755)  # mkdtemp makes it private; a cache may be shared
            if entry.exists():
                shutil.rmtree(entry, ignore_errors=True)
            os.replace(staging, entry)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if self.get(key) is None:  # a concurrent writer may have won the race; otherwise fail loudly
                raise
        result = self.get(key)
        if result is None:
            raise OSError(f"conversion cache entry {entry} could not be written")
        return result
