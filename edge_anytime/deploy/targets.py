"""Target profiles (`deploy/targets/<name>.toml`): what a device runs, validated into frozen records.

A profile names the CPU architecture, the Python and interpreter pins known
to work on the device, the backend, threads and CPU set, the precision of
each graph, and how the service starts. A file may instead be an alias of
another profile (`alias = "jetson-orin-nano"`). Loading rejects unknown keys,
wrong types and unknown targets with a message that names the fix.

>>> target = load_target("x86-64")
>>> target.arch, target.runtime.backend, target.precision_for("any-graph")
('x86_64', 'litert', 'fp32')
>>> load_target("jetsn")
Traceback (most recent call last):
...
edge_anytime.deploy.targets.TargetError: unknown target 'jetsn' (did you mean 'jetson'?); known targets: jetson, jetson-agx-orin, jetson-nano, jetson-orin-nano, raspberry-pi-5, x86-64

This module runs on the workstation: TOML is read with `tomllib` (Python 3.11
stdlib), imported only when a file is loaded. The device side gets the
resolved profile as JSON (`Target.to_json`), with no TOML parser.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from ..errors import EdgeAnytimeError
from ..manifest import PRECISIONS

ARCHES = ("aarch64", "x86_64", "armv7l")
BACKENDS = ("litert", "tflite_runtime")
TARGETS_ENV = "EDGE_ANYTIME_TARGETS"


class TargetError(EdgeAnytimeError, ValueError):
    """A target profile is unknown or malformed."""


@dataclass(frozen=True)
class PythonSpec:
    """The device's Python and the pinned packages installed next to the runtime wheel."""

    version: str
    packages: tuple[str, ...]
    wheel_flags: tuple[str, ...] = ()   # extra `pip install` flags for the runtime wheel

    @property
    def executable(self) -> str:
        return f"python{self.version}"


@dataclass(frozen=True)
class RuntimeSpec:
    """How the interpreter runs: backend name, threads per graph interpreter, CPUs to pin to."""

    backend: str
    threads: int = 1
    cpus: tuple[int, ...] = ()

    @property
    def cpus_arg(self) -> str:
        return ",".join(str(c) for c in self.cpus)


@dataclass(frozen=True)
class ServiceSpec:
    """Defaults of the systemd service: where frames come from, where results go, the budget."""

    source: str = ""
    sink: str = "stdout"
    budget_ms: float | None = None
    pre_start: tuple[str, ...] = ()     # privileged ExecStartPre commands (power mode, clocks)
    fifo_priority: int | None = None     # SCHED_FIFO priority of serve (the unit grants LimitRTPRIO for it)
    lock_memory: bool = False            # mlockall in serve (the unit sets LimitMEMLOCK=infinity)
    watchdog_s: int = 30                 # systemd WatchdogSec (0: no watchdog)
    metrics_port: int | None = None      # Prometheus text on 127.0.0.1:PORT

    @property
    def extras(self) -> tuple[str, ...]:
        """The wheel extras the default source needs: serial for serial links, video for cameras and clips."""
        kind = self.source.split(":", 1)[0]
        if kind == "serial":
            return ("serial",)
        if kind in ("v4l2", "file", "rtsp", "http", "https") or self.source.startswith("/dev/video"):
            return ("video",)            # csi:// takes the system's OpenCV with GStreamer (JetPack), not the wheel
        return ()


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    arch: str
    os: str
    glibc: str
    python: PythonSpec
    runtime: RuntimeSpec
    precision: Mapping[str, str]          # {'*': default, graph: precision, ...}
    service: ServiceSpec = field(default_factory=ServiceSpec)
    use_recommended: bool = False         # prefer the bundle's metadata.recommended_precision when it has one
    notes: str = ""
    source: str = ""                      # the file it came from
    alias: str | None = None              # the name asked for, when it was an alias

    def precision_for(self, graph: str) -> str:
        return self.precision.get(graph, self.precision["*"])

    def platform_tags(self) -> tuple[str, ...]:
        """pip `--platform` tags this device accepts (manylinux up to its glibc), newest first."""
        major, minor = (int(p) for p in self.glibc.split("."))
        tags = [f"manylinux_{major}_{m}_{self.arch}" for m in range(minor, 16, -1)]
        return tuple(tags + [f"manylinux2014_{self.arch}", f"linux_{self.arch}"])

    def to_json(self) -> dict[str, Any]:
        """The resolved profile as plain JSON (what the package ships as target.json)."""
        return {"name": self.name, "description": self.description, "arch": self.arch, "os": self.os,
                "glibc": self.glibc,
                "python": {"version": self.python.version, "packages": list(self.python.packages),
                           "wheel_flags": list(self.python.wheel_flags)},
                "runtime": {"backend": self.runtime.backend, "threads": self.runtime.threads,
                            "cpus": list(self.runtime.cpus)},
                "precision": dict(self.precision), "use_recommended": self.use_recommended,
                "service": {"source": self.service.source, "sink": self.service.sink,
                            "budget_ms": self.service.budget_ms, "pre_start": list(self.service.pre_start),
                            "fifo_priority": self.service.fifo_priority, "lock_memory": self.service.lock_memory,
                            "watchdog_s": self.service.watchdog_s, "metrics_port": self.service.metrics_port},
                "notes": self.notes}


# key -> (type, required); tables are checked by the same table of their own
_TOP = {"name": (str, True), "description": (str, True), "arch": (str, True), "os": (str, False),
        "glibc": (str, True), "notes": (str, False), "python": (dict, True), "runtime": (dict, True),
        "precision": (dict, True), "service": (dict, False)}
_PYTHON = {"version": (str, True), "packages": (list, True), "wheel_flags": (list, False)}
_RUNTIME = {"backend": (str, True), "threads": (int, False), "cpus": (list, False)}
_SERVICE = {"source": (str, False), "sink": (str, False), "budget_ms": ((int, float), False),
            "pre_start": (list, False), "fifo_priority": (int, False), "lock_memory": (bool, False),
            "watchdog_s": (int, False), "metrics_port": (int, False)}
_ALIAS = {"alias": (str, True), "description": (str, False)}


def _check(table: Mapping[str, Any], schema: Mapping[str, tuple], where: str) -> None:
    unknown = sorted(set(table) - set(schema))
    if unknown:
        raise TargetError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(schema)}")
    for key, (kind, required) in schema.items():
        if key not in table:
            if required:
                raise TargetError(f"{where}: missing required key {key!r}")
            continue
        value = table[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise TargetError(f"{where}: {key} must be {names}, got {type(value).__name__} {value!r}")


def _strings(values: list, where: str) -> tuple[str, ...]:
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise TargetError(f"{where} must be a list of non-empty strings, got {values!r}")
    return tuple(values)


def parse_target(data: Mapping[str, Any], where: str = "target") -> Target:
    """Validate a profile's TOML data (already parsed) into a Target."""
    _check(data, _TOP, where)
    if data["arch"] not in ARCHES:
        raise TargetError(f"{where}: arch {data['arch']!r} is not one of {ARCHES}")
    if not re.fullmatch(r"\d+\.\d+", data["glibc"]):
        raise TargetError(f"{where}: glibc must look like '2.35', got {data['glibc']!r}")
    py = data["python"]
    _check(py, _PYTHON, f"{where} [python]")
    if not re.fullmatch(r"3\.\d+", py["version"]):
        raise TargetError(f"{where} [python]: version must look like '3.10', got {py['version']!r}")
    packages = _strings(py["packages"], f"{where} [python].packages")
    for spec in packages:
        if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+!]+", spec):
            raise TargetError(f"{where} [python].packages: {spec!r} must be pinned exactly, like 'numpy==2.2.6'")
    rt = data["runtime"]
    _check(rt, _RUNTIME, f"{where} [runtime]")
    if rt["backend"] not in BACKENDS:
        raise TargetError(f"{where} [runtime]: backend {rt['backend']!r} is not one of {BACKENDS}")
    threads = rt.get("threads", 1)
    if threads < 1:
        raise TargetError(f"{where} [runtime]: threads must be >= 1, got {threads}")
    cpus = rt.get("cpus", [])
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cpus):
        raise TargetError(f"{where} [runtime]: cpus must be a list of CPU numbers like [4, 5], got {cpus!r}")
    precision = dict(data["precision"])
    use_recommended = precision.pop("use_recommended", False)
    if not isinstance(use_recommended, bool):
        raise TargetError(f"{where} [precision]: use_recommended must be true or false, got {use_recommended!r}")
    if "default" not in precision:
        raise TargetError(f"{where} [precision]: missing 'default' (e.g. default = \"fp32\")")
    for graph, value in precision.items():
        if value not in PRECISIONS:
            raise TargetError(f"{where} [precision]: {graph} = {value!r} is not one of {PRECISIONS}")
    precision["*"] = precision.pop("default")
    svc = data.get("service", {})
    _check(svc, _SERVICE, f"{where} [service]")
    service = ServiceSpec(source=svc.get("source", ""), sink=svc.get("sink", "stdout"),
                          budget_ms=None if svc.get("budget_ms") is None else float(svc["budget_ms"]),
                          pre_start=_strings(svc.get("pre_start", []), f"{where} [service].pre_start"),
                          fifo_priority=svc.get("fifo_priority"), lock_memory=svc.get("lock_memory", False),
                          watchdog_s=svc.get("watchdog_s", 30), metrics_port=svc.get("metrics_port"))
    if service.fifo_priority is not None and not 1 <= service.fifo_priority <= 99:
        raise TargetError(f"{where} [service]: fifo_priority must be 1..99 (50 leaves room for kernel threads), "
                          f"got {service.fifo_priority}")
    if service.watchdog_s < 0 or (service.metrics_port is not None and not 0 < service.metrics_port < 65536):
        raise TargetError(f"{where} [service]: watchdog_s must be >= 0 and metrics_port 1..65535")
    return Target(name=data["name"], description=data["description"], arch=data["arch"], os=data.get("os", ""),
                  glibc=data["glibc"],
                  python=PythonSpec(py["version"], packages,
                                    _strings(py.get("wheel_flags", []), f"{where} [python].wheel_flags")),
                  runtime=RuntimeSpec(rt["backend"], threads, tuple(cpus)), precision=precision,
                  service=service, use_recommended=use_recommended, notes=data.get("notes", "").strip(),
                  source=where)


def targets_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where profiles live: `explicit`, else $EDGE_ANYTIME_TARGETS, else deploy/targets of the checkout."""
    if explicit is not None:
        folder = Path(explicit)
    elif os.environ.get(TARGETS_ENV):
        folder = Path(os.environ[TARGETS_ENV])
    else:
        folder = Path(__file__).resolve().parents[2] / "deploy" / "targets"
    if not folder.is_dir():
        raise TargetError(f"target profile folder {str(folder)!r} does not exist; run from a source checkout, "
                          f"pass --targets-dir, or set {TARGETS_ENV}")
    return folder


def known_targets(folder: str | os.PathLike | None = None) -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in targets_dir(folder).glob("*.toml")))


def _read(path: Path) -> dict[str, Any]:
    import tomllib  # workstation side only (Python >= 3.11)

    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TargetError(f"{path}: not valid TOML: {exc}") from exc


def load_target(name: str, folder: str | os.PathLike | None = None) -> Target:
    """Load and validate the profile `name` (following one alias)."""
    root = targets_dir(folder)
    known = known_targets(root)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TargetError(f"unknown target {name!r}{hint}; known targets: {', '.join(known)}")
    path = root / f"{name}.toml"
    data = _read(path)
    if "alias" in data:
        _check(data, _ALIAS, str(path))
        real = data["alias"]
        if real not in known or real == name:
            raise TargetError(f"{path}: alias {real!r} is not another known target; known targets: {', '.join(known)}")
        if "alias" in _read(root / f"{real}.toml"):
            raise TargetError(f"{path}: alias {real!r} is itself an alias; point at the real profile")
        target = load_target(real, root)
        return replace(target, alias=name)
    target = parse_target(data, str(path))
    if target.name != name:
        raise TargetError(f"{path}: name = {target.name!r} must match the file name {name!r}")
    return target


def load_all(folder: str | os.PathLike | None = None) -> dict[str, Target]:
    """Every profile, aliases included (each validated)."""
    return {name: load_target(name, folder) for name in known_targets(folder)}
