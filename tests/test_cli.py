"""The `edge-anytime` command: every subcommand answers --help with its module's flags, dispatches to it, and
`replay` without the simulator says where it lives."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edge_anytime.cli import COMMANDS
from tests.conftest import DEMO_BUNDLE, REPO


def cli(*args, cwd=REPO, env=None):
    return subprocess.run([sys.executable, "-m", "edge_anytime", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def test_usage_lists_every_command():
    out = cli("--help")
    assert out.returncode == 0 and all(f"  {name} " in out.stdout for name in COMMANDS)
    bad = cli("serv")
    assert bad.returncode == 2 and "unknown command 'serv'" in bad.stderr


@pytest.mark.parametrize("command, flag", [("serve", "--source"), ("deploy", "--target"), ("selftest", "--bundle"),
                                           ("profile", "--samples"), ("replay", "--demo"), ("inspect", "--json")])
def test_every_command_has_its_module_flags(command, flag):
    out = cli(command, "--help")
    assert out.returncode == 0, out.stderr
    assert flag in out.stdout and "usage:" in out.stdout


def test_inspect_and_selftest_run_on_the_shipped_bundle():
    out = cli("inspect", "--bundle", str(DEMO_BUNDLE))
    assert out.returncode == 0 and "format v2" in out.stdout and "RGB frames, resize exact" in out.stdout
    assert "x86-64 (litert" in out.stdout
    assert "parity int8: argmax agreement with fp32 per exit 0.996 0.999 0.995" in out.stdout
    assert "precision fallback ('auto', real clock): exits 0, 1, 2 from int8" in out.stdout
    out = cli("selftest", "--bundle", str(DEMO_BUNDLE), "--precision", "fp32")
    assert out.returncode == 0 and "self-test PASS" in out.stdout


def test_replay_without_the_simulator_names_where_it_lives(tmp_path):
    (tmp_path / "edge_anytime").symlink_to(REPO / "edge_anytime")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # the venv's python has this checkout on its path (scripts/setup_env.sh): an install without the simulator
    # is one whose path lacks it
    without_checkout = (f"import runpy, sys; sys.path[:] = [p for p in sys.path if p != {str(REPO)!r}]; "
                        "runpy.run_module('edge_anytime', run_name='__main__', alter_sys=True)")
    out = subprocess.run([sys.executable, "-c", without_checkout, "replay", "--demo"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1 and "simulator is not installed here" in out.stderr
    assert "python -m simulator.replay" in out.stderr
