"""Target profiles: every shipped profile validates; bad files fail with errors that name the fix;
the device-side modules stay free of tomllib and within Python 3.8 syntax."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib

import pytest

from edge_anytime.deploy.targets import TargetError, known_targets, load_all, load_target, parse_target
from tests.conftest import REPO

EXPECTED = {"jetson", "jetson-orin-nano", "jetson-agx-orin", "jetson-nano", "raspberry-pi-5", "x86-64"}


def test_every_shipped_profile_loads_into_frozen_records():
    targets = load_all()
    assert set(targets) == EXPECTED
    for name, target in targets.items():
        assert target.arch in ("aarch64", "x86_64")
        assert target.runtime.threads >= 1 and target.precision["*"] in ("fp32", "fp16", "int8")
        assert all("==" in p for p in target.python.packages)
        backend_pkg = "ai-edge-litert" if target.runtime.backend == "litert" else "tflite-runtime"
        assert any(p.startswith(backend_pkg + "==") for p in target.python.packages), name
        assert target.notes, f"{name} must explain its choices in notes"
        with pytest.raises(AttributeError):
            target.arch = "x"  # frozen


def test_alias_resolves_to_the_default_jetson():
    jetson = load_target("jetson")
    assert (jetson.name, jetson.alias) == ("jetson-orin-nano", "jetson")
    assert jetson.python == load_target("jetson-orin-nano").python


def test_numpy_pins_fit_each_interpreter():
    nano = load_target("jetson-nano")
    assert nano.runtime.backend == "tflite_runtime" and "numpy==1.24.4" in nano.python.packages
    assert nano.python.version == "3.8" and nano.python.wheel_flags == ()
    for name in ("jetson-orin-nano", "jetson-agx-orin"):
        assert "numpy==2.2.6" in load_target(name).python.packages   # last numpy for Python 3.10
    assert load_target("x86-64").python.packages == ("numpy==2.4.6", "ai-edge-litert==2.3.0", "pyserial==3.5")


@pytest.mark.parametrize("name", ["jetson-orin-nano", "jetson-agx-orin", "jetson-nano", "raspberry-pi-5", "x86-64"])
def test_a_serial_default_source_comes_with_pyserial(name):
    target = load_target(name)
    if target.service.source.startswith("serial:"):
        assert any(p.startswith("pyserial==") for p in target.python.packages)
        assert target.service.extras == ("serial",)


def test_service_settings_are_validated():
    nano = load_target("jetson-nano").service
    assert (nano.fifo_priority, nano.lock_memory, nano.watchdog_s) == (50, True, 30)
    with pytest.raises(TargetError, match="fifo_priority must be 1..99"):
        parse_target(tomllib.loads(GOOD + "fifo_priority = 120\n"))
    with pytest.raises(TargetError, match="lock_memory must be bool"):
        parse_target(tomllib.loads(GOOD + "lock_memory = 1\n"))


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(TargetError, match=r"unknown target 'rpi5'.*known targets: jetson, jetson-agx-orin"):
        load_target("rpi5")


GOOD = (REPO / "deploy" / "targets" / "x86-64.toml").read_text()


@pytest.mark.parametrize("edit, message", [
    (lambda t: t + "\ncolour = 'red'\n", r"unknown key\(s\) \['colour'\]"),
    (lambda t: t.replace("threads = 1", 'threads = "1"'), r"threads must be int, got str"),
    (lambda t: t.replace("threads = 1", "threads = true"), r"threads must be int, got bool"),
    (lambda t: t.replace('backend = "litert"', 'backend = "tpu"'), r"backend 'tpu' is not one of"),
    (lambda t: t.replace('default = "fp32"', 'default = "bf16"'), r"'bf16' is not one of"),
    (lambda t: t.replace('"numpy==2.4.6"', '"numpy>=2"'), r"must be pinned exactly"),
    (lambda t: t.replace('arch = "x86_64"', 'arch = "riscv"'), r"arch 'riscv' is not one of"),
    (lambda t: t.replace('name = "x86-64"', 'name = "other"'), r"must match the file name"),
    (lambda t: t.replace("cpus = []", "cpus = ['a']"), r"cpus must be a list of CPU numbers"),
    (lambda t: t.replace("[runtime]", "[runtime]\nfast = 1"), r"\[runtime\]: unknown key"),
    (lambda t: t.replace('name = "x86-64"\n', ""), r"missing required key 'name'"),
    (lambda t: t + "\n[[", r"not valid TOML"),
])
def test_malformed_profiles_are_rejected_with_a_clear_error(tmp_path, edit, message):
    (tmp_path / "x86-64.toml").write_text(edit(GOOD))
    with pytest.raises(TargetError, match=message):
        load_target("x86-64", tmp_path)


def test_alias_errors(tmp_path):
    (tmp_path / "x86-64.toml").write_text(GOOD)
    (tmp_path / "a.toml").write_text('alias = "nowhere"\n')
    with pytest.raises(TargetError, match="alias 'nowhere' is not another known target"):
        load_target("a", tmp_path)
    (tmp_path / "b.toml").write_text('alias = "x86-64"\nthreads = 2\n')
    with pytest.raises(TargetError, match=r"unknown key\(s\) \['threads'\]"):
        load_target("b", tmp_path)
    assert known_targets(tmp_path) == ("a", "b", "x86-64")


def test_platform_tags_follow_glibc():
    tags = load_target("jetson-nano").platform_tags()
    assert tags[0] == "manylinux_2_27_aarch64" and "manylinux2014_aarch64" in tags
    assert "manylinux_2_28_aarch64" not in tags


DEVICE_MODULES = ["edge_anytime/serve.py", "edge_anytime/selftest.py", "edge_anytime/profiling.py",
                  "edge_anytime/preprocess.py", "edge_anytime/resize.py", "edge_anytime/sinks.py",
                  "edge_anytime/metrics.py", "edge_anytime/systemd.py", "edge_anytime/service_log.py",
                  "edge_anytime/cli.py", "edge_anytime/inspect_bundle.py", "edge_anytime/sources/__init__.py",
                  "edge_anytime/sources/files.py", "edge_anytime/sources/frames.py", "edge_anytime/sources/uri.py",
                  "edge_anytime/sources/video.py"]


def test_device_side_modules_import_without_tomllib_or_heavy_packages():
    code = ("import sys\nimport edge_anytime.serve, edge_anytime.selftest, edge_anytime.profiling\n"
            "print(','.join(n for n in ('tomllib', 'torch', 'tensorflow', 'onnx', 'serial') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("path", DEVICE_MODULES)
def test_device_side_modules_parse_as_python_38(path):
    source = (REPO / path).read_text()
    ast.parse(source, feature_version=(3, 8))
    assert "from __future__ import annotations" in source
