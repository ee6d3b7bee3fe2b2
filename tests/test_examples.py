"""The documented examples run as written."""

import re
import subprocess
import sys

import pytest

from tests.conftest import DEMO_BUNDLE, REPO


@pytest.mark.skipif(not DEMO_BUNDLE.is_dir(), reason="demo bundle not built")
def test_control_loop_example_answers_every_frame_with_a_generous_deadline():
    out = subprocess.run([sys.executable, "examples/control_loop.py", "--frames", "30", "--deadline-ms", "20"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = out.stdout.strip().splitlines()[-1]
    match = re.search(r"(\d+) answered in time, accuracy ([\d.]+)%", summary)
    assert match and int(match.group(1)) == 30, summary
    assert float(match.group(2)) >= 70.0
    assert "misses 0, callback errors 0" in summary


@pytest.mark.skipif(not DEMO_BUNDLE.is_dir(), reason="demo bundle not built")
@pytest.mark.parametrize("doc", ["docs/runtime.md"])
def test_every_python_block_of_the_runtime_guide_runs_as_written(doc):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / doc).read_text(), re.S)
    assert blocks
    for number, block in enumerate(blocks):
        out = subprocess.run([sys.executable, "-c", block], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{doc} python block {number}:\n{block}\n{out.stderr[-2000:]}"
