"""Runs onnx2tf conversion jobs for the exporter, each in a fresh process state.

One job = one graph: copy the ONNX file (onnx2tf rewrites its input), simplify the copy with
onnxsim in process (until it stops changing, at most 3 passes), put a layout guard after cubic
inputs (`guard_cubic_inputs`), then onnx2tf's own command line with `-nuo` (no onnxsim
subprocesses). Measured on the demo ResANN bundle: all 18 .tflite files byte-identical to onnx2tf's
default path (three `onnxsim` subprocesses, which cost ~9 s per graph just to start).

Two ways to run a job, byte-identical results (tests/test_export_units.py):

- `ForkServer` (default where `os.fork` exists): one helper process imports TensorFlow and onnx2tf
  once (~5 s), then forks a child per job. The child starts from the same pristine post-import
  state every time, so a graph's bytes never depend on what was converted before it (running
  several conversions in one process does change them: Keras layer-name counters). ~2-3 s per
  small graph instead of ~16-19 s for a fresh `python -m onnx2tf`. The helper exits when its pipe
  closes or after `IDLE_EXIT_S` without work; the exporter starts a new one when needed.
- a fresh process per job (where fork is missing, or with EDGE_ANYTIME_CONVERT_FORK=0).

A job is JSON: {"source": the exporter's ONNX file (never written), "onnx": where its working copy
goes (rewritten: onnxsim, guard, onnx2tf's op naming; recopied on every run, so a job can be
retried), "run_dir": working directory (onnx2tf looks for its sample-data file there), "log": log
file, "argv": onnx2tf arguments after `-i <onnx>`, "timeout_s": seconds}. The reply is
{"returncode": int, "timed_out": bool}.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Mapping

#: A forking helper left without work this long exits (a later job starts a new one, ~5 s); it holds
#: ~0.6 GB (TensorFlow imported), so it does not linger on a shared machine.
IDLE_EXIT_S = 120.0
#: How the helper and the fresh-process fallback are started (`-m` would import this module twice).
_ENTRY = "import sys; from training.export.onnx2tf_worker import _main; sys.exit(_main(sys.argv[1:]))"


def conversion_env() -> dict[str, str]:
    """The environment of every onnx2tf run: the venv's bin first on PATH, TF quiet, no GPU, fixed hash seed."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0", CUDA_VISIBLE_DEVICES="", PYTHONHASHSEED="0",
               PYTHONWARNINGS="ignore")
    return env


def simplify(path: str, passes: int = 3) -> str:
    """onnxsim the file in place until it stops changing (what onnx2tf does with 3 subprocesses)."""
    import onnx
    import onnxsim

    model = onnx.load(path)
    before = model.SerializeToString(deterministic=True)
    for i in range(passes):
        try:
            simplified, ok = onnxsim.simplify(model)
        except Exception as exc:  # onnx2tf also goes on with the unsimplified model
            return f"onnxsim pass {i + 1} failed ({type(exc).__name__}: {exc}); converting the unsimplified model"
        if not ok:
            return f"onnxsim pass {i + 1}: the simplified model failed its check; converting the previous one"
        after = simplified.SerializeToString(deterministic=True)
        model = simplified
        if after == before:
            break
        before = after
    onnx.save(model, path)
    return f"onnxsim: {len(model.graph.node)} nodes after {i + 1} pass(es)"


def cubic(shape) -> bool:
    """A 3-D..5-D shape whose non-batch dims are all equal, e.g. (1, 8, 8, 8): NCHW == NHWC."""
    dims = list(shape)
    return 3 <= len(dims) <= 5 and all(isinstance(d, int) and d == dims[1] for d in dims[1:])


def guard_cubic_inputs(path: str) -> list[str]:
    """Put an exact no-op (1x1 MaxPool, stride 1) between each graph input of cubic shape and its consumers.

    onnx2tf 1.29.24 decides whether a tensor was transposed to channel-last by comparing its ONNX and
    TF shapes, and that cannot tell for a cubic shape: a (1, 8, 8, 8) graph input, channel-last inside
    TF like every other 4-D input (kept NCHW with -k or not), is taken as untransposed, and ops that
    read it with an axis argument go wrong. Measured: AnytimeNet's type-A shortcut x[:, :, ::2, ::2]
    on a (1, 8, 8, 8) input sliced C and W instead of H and W; IS-ResNeXt's torch.cat([cached, new], 1)
    with a (1, 8, 8, 8) cached slice transposed the cached part once more (Concat's "shape unmatched"
    workaround transposes an input whose shapes agree unless it is flagged NHWC). An Identity is not
    enough (it fixes the Slice, not the Concat). A pooling op is what onnx2tf knows is channel-last:
    it flags its output NHWC and, for a cubic input, skips its own forced transpose; a 1x1 max pool
    with stride 1 copies its input exactly (also in int8: same scale in and out). Runs after onnxsim,
    which would remove it."""
    import onnx

    model = onnx.load(path)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    names = {v for node in graph.node for v in list(node.input) + list(node.output)} | {i.name for i in graph.input}
    guarded, new_nodes = [], []
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        if not cubic(dims):
            continue
        alias = f"{value.name}__layout_guard"
        while alias in names:
            alias += "_"
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == value.name:
                    node.input[i] = alias
        ones = [1] * (len(dims) - 2)
        new_nodes.append(onnx.helper.make_node("MaxPool", [value.name], [alias], name=f"{alias}_node",
                                               kernel_shape=ones, strides=ones))
        guarded.append(value.name)
    if guarded:
        nodes = new_nodes + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.save(model, path)
    return guarded


def _run_in_this_process(job: Mapping) -> int:
    """The job itself; call only in a process that exits right after (onnx2tf leaves global state)."""
    os.chdir(job["run_dir"])
    if job.get("source"):
        shutil.copyfile(job["source"], job["onnx"])
    print(simplify(job["onnx"]), flush=True)
    guarded = guard_cubic_inputs(job["onnx"])
    if guarded:
        print(f"layout guard (1x1 MaxPool) after cubic inputs: {guarded}", flush=True)
    import onnx2tf.onnx2tf as cli

    sys.argv = ["onnx2tf", "-i", job["onnx"], "-nuo", *job["argv"]]
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def _child(job: Mapping) -> None:
    """In the forked child: own process group, output to the log, run, exit without cleanup."""
    code = 1
    try:
        os.setsid()
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        code = _run_in_this_process(job)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _wait(pid: int, timeout_s: float) -> tuple[int, bool]:
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return -signal.SIGKILL, True
        time.sleep(delay)
        delay = min(0.05, delay * 2)


def serve() -> None:
    """The forking helper: JSON jobs on stdin, one JSON reply line per job on the original stdout."""
    replies = os.fdopen(os.dup(1), "w")
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)  # whatever the imports print stays off the reply pipe
    import numpy  # noqa: F401  (the imports that cost seconds, done once)
    import onnx  # noqa: F401
    import onnxsim  # noqa: F401
    import onnx2tf.onnx2tf  # noqa: F401

    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()
    stdin = sys.stdin.buffer
    while True:
        readable, _, _ = select.select([stdin], [], [], IDLE_EXIT_S)
        if not readable:
            return
        line = stdin.readline()
        if not line:
            return
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(job)
        code, timed_out = _wait(pid, float(job.get("timeout_s", 1800.0)))
        replies.write(json.dumps({"returncode": code, "timed_out": timed_out}) + "\n")
        replies.flush()


class ForkServer:
    """Client side of `serve()`; one job at a time (a lock serialises callers)."""

    def __init__(self, start_timeout_s: float = 300.0) -> None:
        self._lock = threading.Lock()
        self._process = subprocess.Popen([sys.executable, "-c", _ENTRY, "--serve"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         env=conversion_env(), cwd=str(Path(__file__).resolve().parents[2]))
        reply = self._read(start_timeout_s)
        if not reply.get("ready"):
            self.close()
            raise RuntimeError("the onnx2tf helper process did not start")

    def alive(self) -> bool:
        return self._process.poll() is None

    def _read(self, timeout_s: float) -> dict:
        stdout = self._process.stdout
        readable, _, _ = select.select([stdout], [], [], timeout_s)
        line = stdout.readline() if readable else b""
        if not line:
            raise RuntimeError(f"the onnx2tf helper process stopped answering (exit status {self._process.poll()})")
        return json.loads(line)

    def run(self, job: Mapping) -> dict:
        with self._lock:
            self._process.stdin.write((json.dumps(dict(job)) + "\n").encode())
            self._process.stdin.flush()
            return self._read(float(job.get("timeout_s", 1800.0)) + 60.0)

    def close(self) -> None:
        try:
            if self._process.stdin:
                self._process.stdin.close()
            self._process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()
            self._process.wait()


_SERVER: ForkServer | None = None
_SERVER_LOCK = threading.Lock()


def fork_enabled() -> bool:
    return hasattr(os, "fork") and os.environ.get("EDGE_ANYTIME_CONVERT_FORK", "1") != "0"


def run_job(job: Mapping) -> dict:
    """Run one conversion job (see the module docstring) the fastest available way."""
    global _SERVER
    if fork_enabled():
        with _SERVER_LOCK:
            for attempt in range(2):  # a helper that idled out (or died) is replaced once
                if _SERVER is None or not _SERVER.alive():
                    _SERVER = ForkServer()
                try:
                    return _SERVER.run(job)
                except (RuntimeError, OSError, ValueError):
                    _SERVER.close()
                    _SERVER = None
                    if attempt:
                        raise
    job_path = Path(job["run_dir"]) / "job.json"
    job_path.write_text(json.dumps(dict(job)))
    try:
        completed = subprocess.run([sys.executable, "-c", _ENTRY, str(job_path)],
                                   env=conversion_env(), cwd=str(Path(__file__).resolve().parents[2]),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   timeout=float(job.get("timeout_s", 1800.0)))
    except subprocess.TimeoutExpired:
        return {"returncode": -signal.SIGKILL, "timed_out": True}
    return {"returncode": completed.returncode, "timed_out": False}


def close_server() -> None:
    """Stop the forking helper (also done at interpreter exit)."""
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is not None:
            _SERVER.close()
            _SERVER = None


def _main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        serve()
        return 0
    if len(argv) != 1:
        print("usage: onnx2tf_worker (--serve | JOB.json)", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    with open(job["log"], "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        code = _run_in_this_process(job)
        sys.stdout.flush()
        sys.stderr.flush()
    return code


import atexit  # noqa: E402

atexit.register(close_server)
