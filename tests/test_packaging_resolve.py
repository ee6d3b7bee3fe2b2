"""`pip install` of the built wheel resolves for every target profile's platform and Python.

pip evaluates environment markers against the interpreter that runs it, not against `--python-version` /
`--platform`, so the marker step is done here for each target's environment (packaging.markers), and the
requirements it selects (with the extras the target's default source needs, plus the target's pins) are
resolved by `pip install --dry-run --only-binary=:all: --platform ... --python-version ...` against the
package index (slow: it needs the registry).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

from edge_anytime.deploy.targets import Target, load_target
from tests.test_deploy_support import runtime_wheel  # noqa: F401 (fixture)

TARGETS = ["jetson-orin-nano", "jetson-agx-orin", "jetson-nano", "raspberry-pi-5", "x86-64"]


def marker_environment(target: Target) -> dict[str, str]:
    return {"python_version": target.python.version, "python_full_version": f"{target.python.version}.0",
            "platform_machine": target.arch, "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "platform_release": "",
            "platform_version": "", "implementation_version": f"{target.python.version}.0", "extra": ""}


def wheel_requirements(wheel, target: Target) -> list[str]:
    """The wheel's Requires-Dist selected for the target's environment and extras, markers stripped."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    env = marker_environment(target)
    selected = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist: "):
            continue
        requirement = Requirement(line.split(": ", 1)[1])
        marker = requirement.marker
        if marker is None or any(Marker(str(marker)).evaluate({**env, "extra": extra})
                                 for extra in ("", *target.service.extras)):
            selected.append(f"{requirement.name}{requirement.specifier}")
    return selected


@pytest.mark.parametrize("name", TARGETS)
def test_markers_pick_the_interpreter_each_target_has(runtime_wheel, name):
    target = load_target(name)
    names = [r.split("~")[0].split(">")[0].split("=")[0] for r in wheel_requirements(runtime_wheel, target)]
    if target.runtime.backend == "tflite_runtime":
        assert "tflite-runtime" in names and "ai-edge-litert" not in names
    else:
        assert "ai-edge-litert" in names and "tflite-runtime" not in names
    assert ("pyserial" in names) == target.service.source.startswith("serial:")


@pytest.mark.slow
@pytest.mark.parametrize("name", TARGETS)
def test_wheel_resolves_for_every_target_platform_and_python(runtime_wheel, name, tmp_path):
    target = load_target(name)
    requirements = wheel_requirements(runtime_wheel, target) + list(target.python.packages)
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
           "--target", str(tmp_path / "site"), "--report", str(report), "--only-binary=:all:",
           "--implementation", "cp", "--python-version", target.python.version, *requirements]
    for tag in target.platform_tags():
        cmd += ["--platform", tag]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{name}: {' '.join(requirements)}\n{out.stderr[-2000:]}"
    installed = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                 for item in json.loads(report.read_text())["install"]}
    print(name, sorted(installed.items()))
    for pin in target.python.packages:
        package, version = pin.split("==")
        assert installed[package.lower()] == version
