"""`python -m edge_anytime.deploy`: packages for every target, local profiling, dry runs, and bad input
(unknown target, missing precision, unreachable host, failing self-test) that fails cleanly."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge_anytime import Bundle
from edge_anytime.bundle import sha256_file, write_manifest
from edge_anytime.deploy.__main__ import main as deploy_main
from edge_anytime.deploy.targets import load_all
from edge_anytime.profile import load_profile
from tests.test_deploy_support import copy_bundle, runtime_wheel, tiny_bundle  # noqa: F401 (fixtures)

TARGETS = sorted(load_all())


def deploy(*args, wheel=None) -> int:
    argv = [str(a) for a in args] + (["--wheel", str(wheel)] if wheel else [])
    return deploy_main(argv)


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(name) or p.name.startswith(f".{name}"))


def test_wheel_holds_only_the_runtime_including_the_new_subpackages(runtime_wheel):
    names = zipfile.ZipFile(runtime_wheel).namelist()
    assert runtime_wheel.name.startswith("edge_anytime-") and runtime_wheel.name.endswith("-py3-none-any.whl")
    for required in ("edge_anytime/deploy/__main__.py", "edge_anytime/deploy/targets.py", "edge_anytime/serve.py",
                     "edge_anytime/selftest.py", "edge_anytime/profiling.py", "edge_anytime/serial/link.py",
                     "edge_anytime/sources/video.py", "edge_anytime/cli.py", "edge_anytime/preprocess.py"):
        assert required in names
    assert {n.split("/")[0] for n in names} <= {"edge_anytime", runtime_wheel.name.split("-py3")[0] + ".dist-info"}
    metadata = zipfile.ZipFile(runtime_wheel).read(
        next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist") and "extra ==" not in line]
    assert requires == ['Requires-Dist: numpy>=1.23', 'Requires-Dist: ai-edge-litert>=1.2; python_version >= "3.9"',
                        'Requires-Dist: tflite-runtime~=2.13.0; python_version < "3.9" and platform_system == "Linux"']
    extras = {line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Provides-Extra")}
    assert {"serial", "tflite", "video"} <= extras and "base" not in extras
    entry_points = zipfile.ZipFile(runtime_wheel).read(next(n for n in names if n.endswith("entry_points.txt")))
    assert "edge-anytime = edge_anytime.cli:main" in entry_points.decode()


@pytest.mark.parametrize("name", TARGETS)
def test_package_for_every_target(tmp_path, tiny_bundle, runtime_wheel, name, capsys):
    out = tmp_path / f"pkg-{name}"
    assert deploy("--target", name, "--bundle", tiny_bundle, "--out", out, wheel=runtime_wheel) == 0
    target = load_all()[name]
    for rel in ("README.md", "requirements.txt", "install.sh", "run.sh", "profile.sh", "selftest.sh", "serve.env",
                "package.json", "systemd/edge-anytime.service", f"wheels/{runtime_wheel.name}", "bundle/manifest.json"):
        assert (out / rel).is_file(), rel
    assert all((out / s).stat().st_mode & 0o111 for s in ("install.sh", "run.sh", "profile.sh", "selftest.sh"))
    # only the target's precision ships, and the rewritten manifest is valid
    bundle = Bundle.load(out / "bundle")
    wanted = target.precision["*"]
    assert bundle.precisions() == (wanted,)
    assert sorted(p.name for p in (out / "bundle" / "graphs").iterdir()) == \
        sorted(f"{g}.{wanted}.tflite" for g in ("stem", "body", "head"))
    assert bundle.manifest.metadata["deploy"]["target"] == target.name
    requirements = [l for l in (out / "requirements.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert requirements == list(target.python.packages)
    unit = (out / "systemd" / "edge-anytime.service").read_text()
    assert "ExecStart=@APP_DIR@/run.sh" in unit and "KillSignal=SIGTERM" in unit and "Restart=on-failure" in unit
    assert ("CPUAffinity=" in unit) == bool(target.runtime.cpus)
    for cmd in target.service.pre_start:
        assert f"ExecStartPre=+{cmd}" in unit
    install = (out / "install.sh").read_text()
    assert f'PYTHON="${{PYTHON:-python{target.python.version}}}"' in install
    assert "--no-deps" in install and all(f in install for f in target.python.wheel_flags)
    run = (out / "run.sh").read_text()
    assert f"--backend {target.runtime.backend} --threads {target.runtime.threads} --precision {wanted}" in run
    meta = json.loads((out / "package.json").read_text())
    assert meta["target"]["name"] == target.name and meta["precisions"] == {g: wanted for g in ("stem", "body", "head")}
    assert "package ready" in capsys.readouterr().out
    assert leftovers(tmp_path, out.name) == [out.name]


def test_precision_override_per_graph(tmp_path, tiny_bundle, runtime_wheel):
    out = tmp_path / "mixed"
    assert deploy("--target", "jetson", "--bundle", tiny_bundle, "--out", out, "--precision", "head=fp32,*=int8",
                  wheel=runtime_wheel) == 0
    bundle = Bundle.load(out / "bundle")
    assert {g: sorted(f) for g, f in bundle.manifest.files.items()} == {"stem": ["int8"], "body": ["int8"], "head": ["fp32"]}
    assert "--precision body=int8,head=fp32,stem=int8" in (out / "run.sh").read_text()


def test_profile_here_writes_a_profile_the_simulator_can_load_and_passes_the_self_test(tmp_path, tiny_bundle,
                                                                                       runtime_wheel, capsys):
    out = tmp_path / "x86"
    assert deploy("--target", "x86-64", "--bundle", tiny_bundle, "--out", out, "--profile", "--warmup", "5",
                  "--samples", "50", wheel=runtime_wheel) == 0
    text = capsys.readouterr().out
    assert "self-test PASS" in text
    bundle = Bundle.load(out / "bundle")
    profile = load_profile(out / "bundle" / "profiles" / "x86-64.json", bundle.program)
    assert bundle.profiles["x86-64"].backend == "litert"
    assert set(profile.graphs) == {"stem", "body", "head"}
    assert all(len(per["fp32"]) == 50 and min(per["fp32"]) > 0 for per in profile.graphs.values())
    assert len(profile.samples_s("body", "fp32")) == 50


def test_profile_here_refuses_another_architecture(tmp_path, tiny_bundle, runtime_wheel, capsys):
    out = tmp_path / "pi"
    assert deploy("--target", "raspberry-pi-5", "--bundle", tiny_bundle, "--out", out, "--profile",
                  wheel=runtime_wheel) == 1
    err = capsys.readouterr().err
    assert "is aarch64" in err and "--host user@address" in err
    assert leftovers(tmp_path, "pi") == []


def test_dry_run_prints_the_exact_remote_commands_and_writes_nothing(tmp_path, tiny_bundle, capsys):
    out = tmp_path / "orin"
    assert deploy("--target", "jetson", "--bundle", tiny_bundle, "--out", out, "--host", "nvidia@orin.local",
                  "--dry-run") == 0
    lines = capsys.readouterr().out.splitlines()
    ssh = "ssh -o BatchMode=yes -o ConnectTimeout=10 nvidia@orin.local"
    archive = tmp_path / ".orin.upload.tar.gz"
    expected = [
        f"{ssh} true",
        f"{ssh} 'mkdir -p edge-anytime'",
        f"scp -o BatchMode=yes -o ConnectTimeout=10 {archive} nvidia@orin.local:edge-anytime/orin.tar.gz",
        f"{ssh} 'cd edge-anytime && rm -rf orin.new && mkdir orin.new && tar -xzf orin.tar.gz -C orin.new && "
        f"rm orin.tar.gz && if [ -d orin/venv ]; then mv orin/venv orin.new/venv; fi && "
        f"if [ -f orin/serve.env ]; then cp orin/serve.env orin.new/serve.env; fi && rm -rf orin && mv orin.new orin'",
        f"{ssh} 'cd edge-anytime/orin && ./install.sh'",
        f"{ssh} 'cd edge-anytime/orin && ./profile.sh'",
        f"scp -o BatchMode=yes -o ConnectTimeout=10 nvidia@orin.local:edge-anytime/orin/bundle/profiles/"
        f"jetson-orin-nano.json {out}/bundle/profiles/jetson-orin-nano.json",
    ]
    assert lines[-len(expected):] == expected
    assert any("pip wheel --no-deps" in line for line in lines)
    assert leftovers(tmp_path, "orin") == []


@pytest.mark.parametrize("host, extra, message", [
    ("nobody@127.0.0.1", ["--port", "1"], "Connection refused"),
    ("nobody@unreachable.invalid", [], "Could not resolve hostname"),
])
def test_unreachable_host_is_a_clear_error_and_nothing_is_written(tmp_path, tiny_bundle, runtime_wheel, capsys,
                                                                  host, extra, message):
    out = tmp_path / "dev"
    assert deploy("--target", "jetson", "--bundle", tiny_bundle, "--out", out, "--host", host,
                  "--connect-timeout", "3", *extra, wheel=runtime_wheel) == 1
    err = capsys.readouterr().err
    assert f"cannot reach {host} over ssh" in err and message in err and "ssh-copy-id" in err
    assert leftovers(tmp_path, "dev") == []


def test_unknown_target(tmp_path, tiny_bundle, capsys):
    assert deploy("--target", "jetson-tx2", "--bundle", tiny_bundle, "--out", tmp_path / "x") == 1
    err = capsys.readouterr().err
    assert "unknown target 'jetson-tx2'" in err and "jetson-orin-nano" in err
    assert not (tmp_path / "x").exists()


def test_bundle_missing_the_targets_precision(tmp_path, tiny_bundle, runtime_wheel, capsys):
    src = copy_bundle(tiny_bundle, tmp_path / "fp32only")
    bundle = Bundle.load(src)
    files = {g: {"fp32": per["fp32"]} for g, per in bundle.manifest.files.items()}
    from dataclasses import replace

    write_manifest(src, replace(bundle.manifest, files=files))
    assert deploy("--target", "jetson-orin-nano", "--bundle", src, "--out", tmp_path / "out", wheel=runtime_wheel) == 1
    err = capsys.readouterr().err
    assert "lacks int8 files for graphs ['body', 'head', 'stem']" in err
    assert "--precision fp32" in err and "training.export --precision int8" in err
    assert leftovers(tmp_path, "out") == []
    assert deploy("--target", "jetson-orin-nano", "--bundle", src, "--out", tmp_path / "out", "--precision", "fp32",
                  wheel=runtime_wheel) == 0


def test_failing_self_test_writes_nothing(tmp_path, tiny_bundle, runtime_wheel, capsys):
    src = copy_bundle(tiny_bundle, tmp_path / "tampered")
    ref = src / "reference" / "self_test.npz"
    with np.load(ref) as data:
        arrays = dict(data)
    arrays["logits2"] = arrays["logits2"] + 0.5          # a reference that no longer matches the graphs
    np.savez(ref, **arrays)
    bundle = Bundle.load(src, verify_hashes=False)
    from dataclasses import replace

    write_manifest(src, replace(bundle.manifest, extra_files={"reference/self_test.npz": sha256_file(ref)}))
    out = tmp_path / "x86"
    assert deploy("--target", "x86-64", "--bundle", src, "--out", out, "--profile", "--samples", "20",
                  wheel=runtime_wheel) == 1
    captured = capsys.readouterr()
    assert "self-test FAIL" in captured.out and "exit 2 (logits2, fp32)" in captured.out
    assert "parity self-test failed" in captured.err
    assert leftovers(tmp_path, "x86") == []


def test_existing_out_needs_force_and_is_replaced_atomically(tmp_path, tiny_bundle, runtime_wheel, capsys):
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert deploy("--target", "x86-64", "--bundle", tiny_bundle, "--out", out, wheel=runtime_wheel) == 1
    assert "--force" in capsys.readouterr().err and (out / "old.txt").exists()
    assert deploy("--target", "x86-64", "--bundle", tiny_bundle, "--out", out, "--force", wheel=runtime_wheel) == 0
    assert not (out / "old.txt").exists() and (out / "install.sh").exists()
    assert leftovers(tmp_path, "pkg") == ["pkg"]


def test_recommended_precision_from_the_exporter(tmp_path, tiny_bundle, runtime_wheel, capsys):
    from dataclasses import replace

    src = copy_bundle(tiny_bundle, tmp_path / "rec")
    bundle = Bundle.load(src)
    mixed = {"stem": "fp32", "body": "int8", "head": "int8"}
    write_manifest(src, replace(bundle.manifest, metadata={**bundle.manifest.metadata, "recommended_precision": mixed}))

    def shipped(out):
        return {g: next(iter(f)) for g, f in Bundle.load(out / "bundle").manifest.files.items()}

    assert deploy("--target", "jetson", "--bundle", src, "--out", tmp_path / "j", wheel=runtime_wheel) == 0
    assert shipped(tmp_path / "j") == mixed                     # int8 targets take the exporter's choice
    assert deploy("--target", "x86-64", "--bundle", src, "--out", tmp_path / "x", wheel=runtime_wheel) == 0
    assert set(shipped(tmp_path / "x").values()) == {"fp32"}    # fp32 targets keep fp32
    assert deploy("--target", "x86-64", "--bundle", src, "--out", tmp_path / "r", "--precision", "recommended",
                  wheel=runtime_wheel) == 0
    assert shipped(tmp_path / "r") == mixed
    assert deploy("--target", "x86-64", "--bundle", tiny_bundle, "--out", tmp_path / "n", "--precision",
                  "recommended", wheel=runtime_wheel) == 1
    assert "--mixed-drift-budget" in capsys.readouterr().err


def test_offline_dry_run_downloads_wheels_for_the_targets_python_and_platform(tmp_path, tiny_bundle, capsys):
    assert deploy("--target", "jetson-nano", "--bundle", tiny_bundle, "--out", tmp_path / "n", "--offline",
                  "--dry-run") == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if " pip download " in l)
    assert "--python-version 3.8" in line and "--only-binary=:all:" in line
    assert "--platform manylinux_2_27_aarch64" in line and "manylinux_2_28" not in line
    assert not (tmp_path / "n").exists()
