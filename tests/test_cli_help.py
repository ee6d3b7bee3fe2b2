"""Every documented command answers --help, and docs/cli.md documents each of them."""

import subprocess
import sys

import pytest

from scripts.gen_cli_doc import COMMANDS
from tests.conftest import REPO


@pytest.mark.parametrize("module", [m for m, _ in COMMANDS])
def test_help_works_and_is_documented(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout
    assert f"python -m {module}`" in (REPO / "docs" / "cli.md").read_text()
