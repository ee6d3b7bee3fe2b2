"""On-device footprint: the edge_anytime runtime (wheel + numpy + ai-edge-litert) vs a full TensorFlow install.

Builds the runtime wheel, installs it with requirements/runtime.txt into a fresh venv (what a deploy
package's install.sh does), and sums the installed files of edge-anytime and its dependency closure.
The TensorFlow side is the installed files of tensorflow-cpu and its dependency closure in the
project's .venv (a fresh TensorFlow venv would cost a 274 MB download and about a minute). Both sides
are measured the same way (the files each distribution's RECORD lists), in one run, so their ratio
is comparable. pip/setuptools (the venv's own tooling) are not counted on either side.

    .venv/bin/python bench/bench_footprint.py            # prints MB and the ratio, writes nothing
    .venv/bin/python bench/bench_footprint.py --json     # one JSON line
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Runs inside a venv: the installed size (bytes) of a distribution and everything it requires.
CLOSURE = r"""
import json, re, sys
from importlib import metadata
from pathlib import Path

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

dists = {norm(d.metadata["Name"]): d for d in metadata.distributions()}
seen, todo = set(), [norm(sys.argv[1])]
while todo:
    name = todo.pop()
    if name in seen or name not in dists:
        continue
    seen.add(name)
    for req in dists[name].requires or []:
        if ";" in req and "extra" in req.split(";", 1)[1]:
            continue
        todo.append(norm(re.split(r"[ ;<>=!~\[(]", req, 1)[0]))
sizes = {}
for name in sorted(seen):
    d = dists[name]
    total = 0
    for f in d.files or []:
        p = Path(d.locate_file(f))
        if p.is_file():
            total += p.stat().st_size
    sizes[name] = total
print(json.dumps(sizes))
"""


def closure_sizes(python: Path, root: str) -> dict[str, int]:
    out = subprocess.run([str(python), "-c", CLOSURE, root], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def runtime_venv(folder: Path) -> Path:
    from edge_anytime.deploy.package import build_wheel

    wheel = build_wheel(REPO, folder / "wheel")
    subprocess.run([sys.executable, "-m", "venv", str(folder / "venv")], check=True)
    python = folder / "venv" / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["-r", str(REPO / "requirements" / "runtime.txt")], check=True)
    subprocess.run(pip + ["--no-deps", str(wheel)], check=True)
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--tf-python", default=str(REPO / ".venv" / "bin" / "python"),
                        help="interpreter of an environment with tensorflow-cpu installed")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edge-anytime-footprint-") as tmp:
        runtime = closure_sizes(runtime_venv(Path(tmp)), "edge-anytime")
    tensorflow = closure_sizes(Path(args.tf_python), "tensorflow-cpu")
    if "tensorflow-cpu" not in tensorflow:
        print(f"no tensorflow-cpu in {args.tf_python}; run scripts/setup_env.sh full first", file=sys.stderr)
        return 1
    mb = 1e6
    rt_total, tf_total = sum(runtime.values()) / mb, sum(tensorflow.values()) / mb
    result = {"runtime_mb": round(rt_total, 1), "tensorflow_mb": round(tf_total, 1),
              "ratio": round(tf_total / rt_total, 1),
              "runtime_packages": {k: round(v / mb, 2) for k, v in sorted(runtime.items(), key=lambda kv: -kv[1])},
              "tensorflow_top": {k: round(v / mb, 1) for k, v in
                                 sorted(tensorflow.items(), key=lambda kv: -kv[1])[:6]},
              "seconds": round(time.perf_counter() - started, 1)}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"runtime on the device (edge-anytime wheel + numpy + ai-edge-litert and their deps): {rt_total:7.1f} MB")
    for name, size in result["runtime_packages"].items():
        print(f"    {name:<24} {size:8.2f} MB")
    print(f"full TensorFlow (tensorflow-cpu and its dependency closure):                       {tf_total:7.1f} MB")
    for name, size in result["tensorflow_top"].items():
        print(f"    {name:<24} {size:8.1f} MB")
    print(f"ratio TensorFlow / runtime: {result['ratio']}x   ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
