"""The text files of a deploy package: requirements, scripts, service unit, README.

Every function returns file content for one target; `package.py` writes them.
The scripts run on the device with bash and the package's own venv; nothing
here is imported there.

>>> from edge_anytime.deploy.targets import load_target
>>> print(requirements_txt(load_target("x86-64")).splitlines()[-1])
ai-edge-litert==2.3.0
"""

from __future__ import annotations

import shlex
from typing import Mapping

from .targets import Target

UNIT_NAME = "edge-anytime.service"


def precision_arg(precisions: Mapping[str, str]) -> str:
    """The --precision argument for the launchers: one name when all graphs agree, else GRAPH=PREC,..."""
    kinds = set(precisions.values())
    if len(kinds) == 1:
        return kinds.pop()
    return ",".join(f"{g}={p}" for g, p in sorted(precisions.items()))


def requirements_txt(target: Target) -> str:
    return (f"# Pins for {target.name} ({target.description}).\n"
            f"# Python {target.python.version} on {target.arch}; see the target notes in README.md.\n"
            + "".join(f"{spec}\n" for spec in target.python.packages))


def _runtime_args(target: Target, precisions: Mapping[str, str]) -> str:
    args = (f"--bundle bundle --backend {target.runtime.backend} --threads {target.runtime.threads} "
            f"--precision {shlex.quote(precision_arg(precisions))}")
    return args


def install_sh(target: Target, wheel_name: str) -> str:
    py = target.python.version
    flags = " ".join(shlex.quote(f) for f in target.python.wheel_flags)
    extras = f"[{','.join(target.service.extras)}]" if target.service.extras else ""
    venv_flags = "--system-site-packages" if target.service.source.startswith("csi:") else ""
    return f"""#!/usr/bin/env bash
# Install the edge_anytime runtime for {target.name} into ./venv (idempotent).
#   ./install.sh             venv + pinned requirements + the runtime wheel (its own dependencies resolved by pip)
#   ./install.sh --service   also install and start the systemd unit (sudo)
# PYTHON=/path/to/python3.X ./install.sh uses another interpreter.
# A csi:// camera needs OpenCV with GStreamer (JetPack's: sudo apt install python3-opencv), seen through
# VENV_FLAGS=--system-site-packages (the default when the target's source is csi://) in a new venv.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${{PYTHON:-python{py}}}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "install.sh: $PYTHON not found. This package targets Python {py} ({target.os})." >&2
  echo "  install it (Debian/Ubuntu: sudo apt install python{py} python{py}-venv) or run PYTHON=/path/to/python3 ./install.sh" >&2
  exit 1
fi
have="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$have" != "{py}" ]; then
  echo "install.sh: warning: $PYTHON is Python $have; the {target.name} pins were checked for Python {py}" >&2
fi
# VENV_FLAGS=--system-site-packages ./install.sh: see the system's OpenCV (JetPack's, with GStreamer, for csi://)
[ -x venv/bin/python ] || "$PYTHON" -m venv ${{VENV_FLAGS:-{venv_flags}}} venv
pip_major="$(venv/bin/python -m pip --version | awk '{{print $2}}' | cut -d. -f1)"
if [ "$pip_major" -lt 20 ]; then   # old distro pips cannot install manylinux2014 wheels
  venv/bin/python -m pip install --disable-pip-version-check --upgrade pip
fi
find_links=""
if ls wheels/deps/*.whl >/dev/null 2>&1; then find_links="--no-index --find-links wheels/deps"; fi
# one resolve: the pins and the wheel's own dependencies (environment markers pick the interpreter)
venv/bin/python -m pip install --disable-pip-version-check $find_links -r requirements.txt "wheels/{wheel_name}{extras}"
# the same version may be installed already: always take this package's code
venv/bin/python -m pip install --disable-pip-version-check --no-deps --force-reinstall {flags} wheels/{wheel_name}
venv/bin/python -c "import edge_anytime, sys; print('installed edge_anytime', edge_anytime.__version__, 'on Python', sys.version.split()[0])"
if [ "${{1:-}}" = "--service" ]; then
  unit=/etc/systemd/system/{UNIT_NAME}
  sed -e "s|@APP_DIR@|$PWD|g" -e "s|@USER@|$(id -un)|g" systemd/{UNIT_NAME} | sudo tee "$unit" >/dev/null
  sudo systemctl daemon-reload
  sudo systemctl enable --now {UNIT_NAME}
  echo "installed $unit; follow it with: journalctl -u {UNIT_NAME.split('.')[0]} -f"
fi
"""


def run_sh(target: Target, precisions: Mapping[str, str]) -> str:
    cpus = f" --cpus {target.runtime.cpus_arg}" if target.runtime.cpus else ""
    return f"""#!/usr/bin/env bash
# Start the anytime inference service for {target.name} (the systemd unit runs this).
# Settings: the environment wins (systemctl edit: Environment=EA_SOURCE=...), then serve.env fills in what is
# unset; arguments are passed on and win over both, e.g.
#   ./run.sh --source npz:bundle/reference/self_test.npz --sink stdout --max-frames 10
set -euo pipefail
cd "$(dirname "$0")"
if [ -f serve.env ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    key="${{line%%=*}}"
    [[ "$key" =~ ^[A-Z_][A-Z0-9_]*$ ]] || continue
    if [ -z "${{!key+x}}" ]; then export "$key=${{line#*=}}"; fi
  done < serve.env
fi
budget=()
if [ -n "${{EA_BUDGET_MS:-}}" ]; then budget=(--budget-ms "$EA_BUDGET_MS"); fi
exec venv/bin/python -m edge_anytime.serve {_runtime_args(target, precisions)}{cpus} \\
  --profile-target {target.name} --source "${{EA_SOURCE:-}}" --sink "${{EA_SINK:-stdout}}" ${{budget[@]+"${{budget[@]}}"}} "$@"
"""


def profile_sh(target: Target, precisions: Mapping[str, str], warmup: int, samples: int) -> str:
    cpus = f" --cpus {target.runtime.cpus_arg}" if target.runtime.cpus else ""
    return f"""#!/usr/bin/env bash
# On the device: measure every graph's latency (-> bundle/profiles/{target.name}.json), then the parity
# self-test. Exit status non-zero if either fails. Run it in the power mode the service uses.
set -euo pipefail
cd "$(dirname "$0")"
venv/bin/python -m edge_anytime.profiling {_runtime_args(target, precisions)}{cpus} \\
  --target {target.name} --warmup "${{EA_WARMUP:-{warmup}}}" --samples "${{EA_SAMPLES:-{samples}}}" "$@"
exec ./selftest.sh
"""


def selftest_sh(target: Target, precisions: Mapping[str, str]) -> str:
    return f"""#!/usr/bin/env bash
# Parity self-test: the bundle's reference inputs through the converted graphs on this device.
set -euo pipefail
cd "$(dirname "$0")"
exec venv/bin/python -m edge_anytime.selftest {_runtime_args(target, precisions)}
"""


def serve_env(target: Target) -> str:
    svc = target.service
    budget = "" if svc.budget_ms is None else f"{svc.budget_ms:g}"
    fifo = "" if svc.fifo_priority is None else str(svc.fifo_priority)
    port = "" if svc.metrics_port is None else str(svc.metrics_port)
    return f"""# Defaults of run.sh and the systemd unit (KEY=value, no spaces around '='). A variable already set in the
# environment wins (systemctl edit {UNIT_NAME}: [Service] Environment=EA_SOURCE=...).
# EA_SOURCE: v4l2:///dev/video0 | csi://0 | clip.mp4 | rtsp://... | FOLDER | rec.npz | serial:URL (answers over the link)
# EA_SINK:   none | stdout (a line per frame) | jsonl:FILE | serial:URL
# EA_BUDGET_MS: budget per frame (video sources: from capture); serial frames may carry their own
# EA_FIFO_PRIORITY: SCHED_FIFO priority (empty: normal scheduling); EA_LOCK_MEMORY=1: mlockall
# EA_LOG_LEVEL: debug|info|warning|error; EA_STATS_EVERY: counters to the journal every N s
# EA_METRICS_PORT: Prometheus text on 127.0.0.1:PORT/metrics (empty: off)
EA_SOURCE={svc.source}
EA_SINK={svc.sink}
EA_BUDGET_MS={budget}
EA_FIFO_PRIORITY={fifo}
EA_LOCK_MEMORY={1 if svc.lock_memory else 0}
EA_LOG_LEVEL=info
EA_STATS_EVERY=60
EA_METRICS_PORT={port}
"""


def systemd_unit(target: Target, model_name: str) -> str:
    svc = target.service
    pre = "".join(f"ExecStartPre=+{cmd}\n" for cmd in svc.pre_start)
    affinity = f"CPUAffinity={' '.join(map(str, target.runtime.cpus))}\n" if target.runtime.cpus else ""
    watchdog = f"WatchdogSec={svc.watchdog_s}\n" if svc.watchdog_s else ""
    rtprio = f"LimitRTPRIO={svc.fifo_priority}\n" if svc.fifo_priority else ""
    return f"""# systemd unit for {model_name} on {target.name}. install.sh --service fills in @APP_DIR@ and @USER@.
# Settings live in serve.env; override one with `sudo systemctl edit {UNIT_NAME}` ([Service] Environment=...).
[Unit]
Description=edge_anytime anytime inference: {model_name} on {target.name}
After=network.target
# give up after 5 failed starts in 5 minutes (then: systemctl reset-failed {UNIT_NAME})
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
User=@USER@
SupplementaryGroups=dialout video
WorkingDirectory=@APP_DIR@
{pre}ExecStart=@APP_DIR@/run.sh
{watchdog}KillSignal=SIGTERM
TimeoutStartSec=120
TimeoutStopSec=10
Restart=on-failure
RestartSec=2
SyslogIdentifier=edge-anytime
{affinity}LimitMEMLOCK=infinity
{rtprio}
[Install]
WantedBy=multi-user.target
"""


def readme_md(target: Target, model_name: str, precisions: Mapping[str, str], wheel_name: str) -> str:
    graphs = "\n".join(f"| {g} | {p} |" for g, p in sorted(precisions.items()))
    return f"""# {model_name} for {target.name}

{target.description}. Built by `python -m edge_anytime.deploy`; see docs/deploy.md in the
edge_anytime repository for the whole path from a checkpoint to a running service.

## On the device

```bash
./install.sh              # venv with {', '.join(target.python.packages)} + the runtime wheel
./profile.sh              # latency of every graph -> bundle/profiles/{target.name}.json, then the self-test
./selftest.sh             # parity self-test only (exit status 1 on failure)
./run.sh --source npz:bundle/reference/self_test.npz --max-frames 5    # a quick replay
./run.sh --source v4l2:///dev/video0 --resize center_crop --sink stdout  # a camera (pip install opencv-python-headless)
./install.sh --service    # systemd unit: starts now and at boot (settings in serve.env; the environment wins)
venv/bin/edge-anytime inspect --bundle bundle   # the model, its input and preprocessing, exits, profiles
```

The service notifies systemd when it is ready and pings its watchdog; counters go to the journal every
EA_STATS_EVERY seconds, and EA_METRICS_PORT serves Prometheus metrics on 127.0.0.1.

Stop the service with `sudo systemctl stop {UNIT_NAME}`; it finishes the frame in flight and prints
its counters to the journal (`journalctl -u {UNIT_NAME.split('.')[0]}`).

## Contents

| path | what |
|---|---|
| bundle/ | the model: manifest.json, one .tflite per graph at the precision below, reference/, profiles/ |
| wheels/{wheel_name} | the edge_anytime runtime (numpy + one interpreter; no torch/tensorflow) |
| requirements.txt | pinned packages for Python {target.python.version} on {target.arch} |
| install.sh, run.sh, profile.sh, selftest.sh | install, serve, measure, check |
| serve.env | source, sink and budget of the service |
| systemd/{UNIT_NAME} | the service unit (template) |
| package.json | what was built, for which target, from what |

| graph | precision |
|---|---|
{graphs}

Backend `{target.runtime.backend}`, {target.runtime.threads} thread(s) per graph, CPUs
{target.runtime.cpus_arg or 'not pinned'}.

## Target notes

{target.notes}
"""
