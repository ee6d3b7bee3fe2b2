"""Build a self-contained deploy package for one target, atomically.

Layout of the package folder:

    bundle/            the bundle with only the target's precisions (manifest rewritten and re-validated)
    wheels/            edge_anytime-<version>-py3-none-any.whl (+ deps/ with --offline)
    requirements.txt   the target's pins
    install.sh run.sh profile.sh selftest.sh serve.env systemd/edge-anytime.service README.md package.json

Everything is written into a temporary folder beside `out` and renamed onto
`out` at the very end (`Staging`), so a failure leaves no half-written package.

>>> from edge_anytime.deploy.targets import load_target
>>> with Staging("out/pkg", force=True) as stage:                                    # doctest: +SKIP
...     write_package(stage.path, load_target("x86-64"), Bundle.load("b"), wheel)
...     stage.commit()
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Union

from .. import __version__
from ..bundle import PROFILE_DIR, Bundle, write_manifest
from ..errors import EdgeAnytimeError
from . import files
from .targets import Target

PrecisionChoice = Union[str, Mapping[str, str], None]
REQUIRED_IN_WHEEL = ("edge_anytime/__init__.py", "edge_anytime/serve.py", "edge_anytime/selftest.py",
                     "edge_anytime/profiling.py", "edge_anytime/deploy/__init__.py", "edge_anytime/backends/litert.py")
HEAVY = ("torch", "tensorflow", "onnx", "keras", "training")


class DeployError(EdgeAnytimeError, RuntimeError):
    """The package cannot be built or installed; the message names the fix."""


def recommended(bundle: Bundle) -> dict[str, str] | None:
    """The exporter's per-graph choice (`python -m training.export --mixed-drift-budget`), if it made one."""
    chosen = bundle.manifest.metadata.get("recommended_precision")
    return dict(chosen) if isinstance(chosen, dict) and chosen else None


def choose_precisions(bundle: Bundle, target: Target, override: PrecisionChoice = None) -> dict[str, str]:
    """Per-graph precision; all must exist in the bundle. In order: `override` ('recommended', a name, or
    {graph|'*': precision}); the bundle's recommended mapping if the target uses it; the target's table."""
    graphs = list(bundle.program.graphs)
    if override == "recommended":
        override = recommended(bundle)
        if override is None:
            raise DeployError(f"bundle {bundle.root} has no metadata.recommended_precision; export it with "
                              f"--precision fp32,int8 --mixed-drift-budget 0.01, or pass --precision fp32|fp16|int8")
    if override is None and target.use_recommended and recommended(bundle):
        override = recommended(bundle)
    if override is None:
        chosen = {g: target.precision_for(g) for g in graphs}
    elif isinstance(override, str):
        chosen = {g: override for g in graphs}
    else:
        unknown = sorted(set(override) - set(graphs) - {"*"})
        if unknown:
            raise DeployError(f"--precision names unknown graphs {unknown}; the bundle's graphs are {graphs}")
        chosen = {g: override.get(g, override.get("*", target.precision_for(g))) for g in graphs}
    missing = {g: p for g, p in chosen.items() if p not in bundle.manifest.files[g]}
    if missing:
        have = {g: sorted(bundle.manifest.files[g]) for g in missing}
        kinds = sorted(set(missing.values()))
        raise DeployError(
            f"bundle {bundle.root} lacks {'/'.join(kinds)} files for graphs {sorted(missing)} that target "
            f"{target.name!r} uses (they have {have}). Export them (python -m training.export --precision "
            f"{kinds[0]} ...) or choose one the bundle has: --precision {bundle.precisions()[0] if bundle.precisions() else 'fp32'}")
    return chosen


def write_bundle(src: Bundle, dest: Path, precisions: Mapping[str, str], target: Target) -> Bundle:
    """Copy `src` into `dest` with only the chosen file per graph, rewrite and re-validate its manifest."""
    manifest = src.manifest
    kept = {g: {precisions[g]: manifest.files[g][precisions[g]]} for g in manifest.files}
    to_copy = [f.path for per in kept.values() for f in per.values()] + list(manifest.extra_files)
    for relative in to_copy:
        target_path = dest / relative
        target_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src.path_of(relative), target_path)
    profile = src.root / PROFILE_DIR / f"{target.name}.json"
    if profile.is_file():
        (dest / PROFILE_DIR).mkdir(exist_ok=True)
        shutil.copy2(profile, dest / PROFILE_DIR / profile.name)
    metadata = dict(manifest.metadata)
    metadata["deploy"] = {"target": target.name, "precisions": dict(precisions), "source_bundle": str(src.root)}
    write_manifest(dest, replace(manifest, files=kept, metadata=metadata))
    return Bundle.load(dest)


def build_wheel(project: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """`pip wheel --no-deps` of the runtime from a clean copy of the sources (the checkout stays untouched)."""
    project, out_dir = Path(project), Path(out_dir)
    if not (project / "pyproject.toml").is_file() or not (project / "edge_anytime").is_dir():
        raise DeployError(f"{project} is not an edge_anytime source checkout (no pyproject.toml + edge_anytime/); "
                          f"run from the repository or pass --wheel PATH to a built wheel")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-anytime-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        shutil.copy2(project / "pyproject.toml", src / "pyproject.toml")
        readme = project / "README.md"
        if readme.is_file():
            shutil.copy2(readme, src / "README.md")
        else:  # pyproject names README.md as the long description
            (src / "README.md").write_text("# edge-anytime\n")
        shutil.copytree(project / "edge_anytime", src / "edge_anytime",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
               "--disable-pip-version-check", "-q", "-w", str(Path(tmp) / "dist"), str(src)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode:
            raise DeployError(f"building the runtime wheel failed ({' '.join(cmd)}):\n{result.stderr[-2000:]}\n"
                              f"it needs setuptools>=64 in this environment (pip install setuptools)")
        wheels = sorted((Path(tmp) / "dist").glob("edge_anytime-*.whl"))
        if len(wheels) != 1:
            raise DeployError(f"pip wheel produced {[w.name for w in wheels]}, expected one edge_anytime wheel")
        check_wheel(wheels[0])
        final = out_dir / wheels[0].name
        shutil.copy2(wheels[0], final)
    return final


def check_wheel(wheel: Path) -> None:
    """The wheel holds the edge_anytime package (with deploy/serve/selftest/profiling) and nothing else."""
    try:
        names = zipfile.ZipFile(wheel).namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise DeployError(f"{wheel} is not a wheel: {exc}") from exc
    missing = [n for n in REQUIRED_IN_WHEEL if n not in names]
    if missing:
        raise DeployError(f"{wheel.name} lacks {missing}: check [tool.setuptools.packages.find] in pyproject.toml")
    stray = sorted({n.split("/")[0] for n in names if not n.startswith(("edge_anytime/", "edge_anytime-"))})
    if stray or any(n.startswith(tuple(f"{h}/" for h in HEAVY)) for n in names):
        raise DeployError(f"{wheel.name} holds more than the runtime: {stray}; only edge_anytime* may ship")


def download_deps(target: Target, requirements: Path, dest: Path) -> list[str]:
    """`pip download` the target's pinned wheels (and their dependencies) for its platform (--offline)."""
    major_minor = target.python.version
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--only-binary=:all:",
           "--implementation", "cp", "--python-version", major_minor, "-d", str(dest), "-r", str(requirements)]
    for tag in target.platform_tags():
        cmd += ["--platform", tag]
    return cmd


def write_package(root: Path, target: Target, bundle: Bundle, wheel: Path, precisions: Mapping[str, str],
                  warmup: int = 20, samples: int = 500, offline: bool = False) -> Bundle:
    """Write every file of the package into `root` (a staging folder); returns the packaged bundle."""
    packaged = write_bundle(bundle, root / "bundle", precisions, target)
    (root / "wheels").mkdir()
    shutil.copy2(wheel, root / "wheels" / wheel.name)
    model = bundle.model.name
    texts = {
        "requirements.txt": files.requirements_txt(target),
        "install.sh": files.install_sh(target, wheel.name),
        "run.sh": files.run_sh(target, precisions),
        "profile.sh": files.profile_sh(target, precisions, warmup, samples),
        "selftest.sh": files.selftest_sh(target, precisions),
        "serve.env": files.serve_env(target),
        f"systemd/{files.UNIT_NAME}": files.systemd_unit(target, model),
        "README.md": files.readme_md(target, model, precisions, wheel.name),
    }
    for relative, text in texts.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if relative.endswith(".sh"):
            path.chmod(0o755)
    if offline:
        cmd = download_deps(target, root / "requirements.txt", root / "wheels" / "deps")
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode:
            raise DeployError(f"--offline: downloading the {target.name} wheels failed:\n{result.stderr[-1500:]}")
    meta = {"format": "edge-anytime-package", "version": 1, "edge_anytime": __version__, "model": model,
            "target": target.to_json(), "precisions": dict(precisions), "wheel": wheel.name,
            "built_on": {"host": platform.node(), "python": platform.python_version(), "machine": platform.machine()}}
    (root / "package.json").write_text(json.dumps(meta, indent=2) + "\n")
    return packaged


class Staging:
    """A temporary folder beside `out`: `commit()` renames it onto `out`; any exception removes it."""

    def __init__(self, out: str | os.PathLike, force: bool = False) -> None:
        self.out = Path(out).absolute()
        if self.out.exists() and not force:
            raise DeployError(f"{self.out} already exists; pass --force to replace it, or choose another --out")
        if self.out.exists() and not self.out.is_dir():
            raise DeployError(f"{self.out} exists and is not a folder; remove it or choose another --out")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".partial", dir=self.out.parent))
        self.committed = False

    def commit(self) -> Path:
        self.path.chmod(0o755)
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.rename(self.out, old)
            os.rename(self.path, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.path, self.out)
        self.committed = True
        return self.out

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc) -> None:
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)


def machine_arch() -> str:
    arch = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
