"""Loading, validating and writing bundles (a folder with manifest.json and graph files).

Loading validates everything before the first frame: schema and version, the
dataflow (unknown tensors, shape mismatches), that every file exists and its
sha256 matches, and the latency profiles' schema. Nothing is ever unpickled.

>>> bundle = Bundle.load("deploy/bundles/gtsrb-resann")          # doctest: +SKIP
>>> bundle.program.exits[0].tensor, bundle.precisions()            # doctest: +SKIP
('logits0', ('fp32', 'fp16', 'int8'))
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import BundleError
from .manifest import PRECISIONS, GraphFile, Manifest, ModelInfo, manifest_to_json, parse_manifest
from .profile import LatencyProfile, load_profile
from .program import Program

MANIFEST_NAME = "manifest.json"
PARITY_NAME = "parity.json"      # the exporter's parity report (optional)
PROFILE_DIR = "profiles"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


MAX_MANIFEST_BYTES = 8 << 20   # a manifest is a few kB; a huge one is damage or an attack
MAX_JSON_DEPTH = 32            # a manifest nests about 6 levels
_JSON_STRING = re.compile(r'"(?:\\.|[^"\\])*"')


def json_depth(text: str) -> int:
    """The deepest nesting of [ and { in JSON `text`, ignoring string contents (no recursion involved).

    >>> json_depth('{"a": [1, {"b": "[[["}]}')
    3
    """
    body = np.frombuffer(_JSON_STRING.sub('""', text).encode("utf-8", "replace"), np.uint8)
    steps = np.zeros(body.size, np.int32)
    steps[(body == ord("[")) | (body == ord("{"))] = 1
    steps[(body == ord("]")) | (body == ord("}"))] = -1
    return int(np.cumsum(steps).max(initial=0))


def _safe_join(root: Path, relative: str, what: str) -> Path:
    if not isinstance(relative, str) or os.path.isabs(relative) or ".." in Path(relative).parts:
        raise BundleError(f"{what}: path {relative!r} must be relative to the bundle and stay inside it")
    path = root / relative
    _confined(root, path, relative)
    return path


def _confined(root: Path, path: Path, name: str) -> None:
    """Refuse a file that resolves outside the bundle (a symlink, or a symlinked folder on its way)."""
    try:
        resolved, base = path.resolve(), root.resolve()
        inside = os.path.commonpath([str(resolved), str(base)]) == str(base)   # Python 3.8: no is_relative_to
    except (OSError, RuntimeError, ValueError) as exc:   # a symlink loop
        raise BundleError(f"{name}: cannot resolve {path} ({exc}); replace links with the files themselves") from exc
    if not inside:
        raise BundleError(f"{name}: {path} resolves to {path.resolve()}, outside the bundle {root}; bundles must "
                          f"hold their files, not links out of the folder (copy the files in)")


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk. Create with `Bundle.load(path)`."""

    root: Path
    manifest: Manifest
    profiles: Mapping[str, LatencyProfile]

    @property
    def program(self) -> Program:
        return self.manifest.program

    @property
    def model(self) -> ModelInfo:
        return self.manifest.model

    def precisions(self) -> tuple[str, ...]:
        return self.manifest.precisions()

    def graph_file(self, graph: str, precision: str) -> GraphFile:
        """The file of `graph` at `precision`, or a BundleError naming what exists."""
        per_precision = self.manifest.files.get(graph)
        if per_precision is None:
            raise BundleError(f"bundle has no graph {graph!r}; graphs: {sorted(self.manifest.files)}")
        if precision not in per_precision:
            raise BundleError(f"graph {graph!r} has no {precision} file; it has {sorted(per_precision)}. "
                              f"Export it with: python -m training.export --precision {precision} ...")
        return per_precision[precision]

    def path_of(self, relative: str) -> Path:
        return _safe_join(self.root, relative, "bundle")

    def argmax_agreement(self, precision: str) -> list[float] | None:
        """Per exit, how often the `precision` graphs' argmax agreed with fp32's in the bundle's parity report
        (`parity.json`, written by the exporter: docs/export.md); None without one."""
        try:
            report = json.loads(self.path_of(PARITY_NAME).read_text())
            return [float(e["argmax_agreement"]) for e in report["backends"][f"litert:{precision}"]["exits"]]
        except (OSError, ValueError, KeyError, TypeError, BundleError):
            return None

    def resolve_precisions(self, precision: str | Mapping[str, str]) -> dict[str, str]:
        """Per-graph precision from one name ('fp32') or a mapping {graph: precision}
        (graphs missing from the mapping use its '*' entry, else fp32)."""
        if isinstance(precision, str):
            chosen = {g: precision for g in self.program.graphs}
        else:
            default = precision.get("*", "fp32")
            unknown = set(precision) - set(self.program.graphs) - {"*"}
            if unknown:
                raise BundleError(f"precision mapping names unknown graphs {sorted(unknown)}; graphs: {sorted(self.program.graphs)}")
            chosen = {g: precision.get(g, default) for g in self.program.graphs}
        for graph, prec in chosen.items():
            self.graph_file(graph, prec)
        return chosen

    def reference_data(self) -> dict[str, Any]:
        """The stored self-test arrays: {'input': array, '<exit tensor>': logits, ...}."""
        import numpy as np

        if not self.manifest.reference:
            raise BundleError("this bundle stores no reference data for a self-test; re-export it")
        with np.load(self.path_of(self.manifest.reference), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    @classmethod
    def load(cls, path: str | os.PathLike, verify_hashes: bool = True) -> "Bundle":
        """Load and validate a bundle folder; raises BundleError naming the problem."""
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"bundle folder {str(root)!r} does not exist; pass the folder that holds {MANIFEST_NAME}")
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise BundleError(f"missing file: {manifest_path} (a bundle folder must hold {MANIFEST_NAME})")
        _confined(root, manifest_path, MANIFEST_NAME)
        size = manifest_path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{manifest_path} is {size} bytes, over the {MAX_MANIFEST_BYTES} limit for a manifest; "
                              f"the file is damaged or not a manifest: re-export the bundle")
        try:
            text = manifest_path.read_text()
            if json_depth(text) > MAX_JSON_DEPTH:   # before json.loads: deep nesting can overflow the C stack
                raise BundleError(f"{manifest_path} nests JSON deeper than {MAX_JSON_DEPTH} levels; a manifest "
                                  f"never does: the file is damaged, re-export the bundle")
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
        manifest = parse_manifest(data)
        if manifest.reference and manifest.reference not in manifest.extra_files:
            raise BundleError(f"manifest: reference file {manifest.reference!r} must be listed with its sha256 in 'files'")
        _check_files(root, manifest, verify_hashes)
        profiles = {}
        profile_dir = root / PROFILE_DIR
        if profile_dir.is_dir():
            for profile_path in sorted(profile_dir.glob("*.json")):
                _confined(root, profile_path, f"{PROFILE_DIR}/{profile_path.name}")
                profile = load_profile(profile_path, manifest.program)
                profiles[profile.target] = profile
        return cls(root=root, manifest=manifest, profiles=profiles)

    def verify(self) -> None:
        """Check again that every listed file is inside the bundle and has its recorded sha256 (files can change
        on disk after `load`; `Controller.from_bundle` calls this before loading graphs)."""
        _check_files(self.root, self.manifest, hashes=True)


def _check_files(root: Path, manifest: Manifest, hashes: bool) -> None:
    """Every file the manifest lists exists inside the bundle and, with `hashes`, has its recorded sha256."""
    listed = [(f.path, f.sha256) for per in manifest.files.values() for f in per.values()]
    for relative, expected in listed + list(manifest.extra_files.items()):
        file_path = _safe_join(root, relative, "manifest")
        if not file_path.is_file():
            raise BundleError(f"missing file: {relative} (listed in {MANIFEST_NAME} of {root})")
        if hashes:
            actual = sha256_file(file_path)
            if actual != expected:
                raise BundleError(f"hash mismatch: {relative} has sha256 {actual[:16]}..., the manifest says "
                                  f"{expected[:16]}...; the file was modified or corrupted. Re-export or re-copy "
                                  f"the bundle.")


def write_manifest(root: str | os.PathLike, manifest: Manifest) -> Path:
    """Write manifest.json after checking that every listed file exists with its hash.

    Used by the exporter once it has written graphs/ and reference/ files.
    """
    root = Path(root)
    for graph, per_precision in manifest.files.items():
        for graph_file in per_precision.values():
            path = _safe_join(root, graph_file.path, "manifest")
            if sha256_file(path) != graph_file.sha256:
                raise BundleError(f"write_manifest: sha256 of {graph_file.path} does not match the record")
    for relative, digest in manifest.extra_files.items():
        if sha256_file(_safe_join(root, relative, "manifest")) != digest:
            raise BundleError(f"write_manifest: sha256 of {relative} does not match the record")
    target = root / MANIFEST_NAME
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest_to_json(manifest), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, target)
    return target


__all__ = ["Bundle", "PRECISIONS", "MANIFEST_NAME", "sha256_file", "write_manifest"]
