"""Atomic bundle output: build everything in a temporary folder next to the target, validate it with
`Bundle.load`, then swap it into place. A failed export leaves the target as it was (absent, or the
previous bundle), and never a half-written folder.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> def build(tmp):
...     raise RuntimeError("conversion failed")
>>> try:
...     write_atomically(root / "bundle", build)
... except RuntimeError:
...     pass
>>> sorted(p.name for p in root.iterdir())
[]
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

from edge_anytime.bundle import MANIFEST_NAME

from .common import ExportError

T = TypeVar("T")


def check_target(out: Path) -> None:
    """Refuse to replace a folder that is neither empty nor a bundle (it might hold anything)."""
    if out.exists():
        if not out.is_dir():
            raise ExportError(f"--out {out} exists and is not a folder; choose another path")
        if any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
            raise ExportError(f"--out {out} is a non-empty folder without {MANIFEST_NAME}; refusing to replace it. "
                              f"Choose a new path or remove it")


def write_atomically(out: str | os.PathLike, build: Callable[[Path], T]) -> T:
    """Run build(tmp) in a fresh temporary folder next to `out`, then rename it to `out`.

    `build` writes every file (and the manifest) and validates; an exception removes the temporary
    folder and leaves `out` untouched. An existing bundle at `out` is replaced only after the new one
    is complete (rename of the old one aside, rename of the new one in, removal of the old one).
    """
    out = Path(out)
    check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        result = build(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rmdir(old)
            os.replace(out, old)
            try:
                os.replace(tmp, out)
            except OSError:
                os.replace(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
        return result
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
