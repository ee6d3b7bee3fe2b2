"""Copy a package to a device over scp and install, profile and self-test it over ssh.

Every command is built first as an argv list (`Remote.plan`), so `--dry-run`
prints exactly what would run. ssh runs in batch mode (keys only, never a
password prompt) with a short connect timeout; an unreachable host is a
`DeployError` before anything is copied.

>>> r = Remote("pi@raspberrypi.local", package="tiny-x86-64", target="x86-64")
>>> print(r.shell(r.reach_check()))
ssh -o BatchMode=yes -o ConnectTimeout=10 pi@raspberrypi.local true
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .package import DeployError

REMOTE_ROOT = "edge-anytime"   # relative to the remote user's home directory


@dataclass(frozen=True)
class Remote:
    """One device reached as `user@address` (or an ssh config alias)."""

    host: str
    package: str                      # folder name on the device: ~/edge-anytime/<package>
    target: str
    connect_timeout_s: int = 10
    port: int | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"([A-Za-z0-9._-]+@)?[A-Za-z0-9._:\[\]-]+", self.host) or self.host.startswith("-"):
            raise DeployError(f"--host {self.host!r} is not user@address (e.g. nvidia@192.0.2.10 or an ssh alias)")

    @property
    def remote_dir(self) -> str:
        return f"{REMOTE_ROOT}/{self.package}"

    def _options(self, scp: bool = False) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}"]
        if self.port is not None:
            opts += ["-P" if scp else "-p", str(self.port)]
        return opts

    def ssh(self, command: str) -> list[str]:
        return ["ssh", *self._options(), self.host, command]

    def reach_check(self) -> list[str]:
        return self.ssh("true")

    def upload(self, archive: Path) -> list[list[str]]:
        name = shlex.quote(self.package)
        remote_archive = f"{REMOTE_ROOT}/{self.package}.tar.gz"
        # a redeploy keeps the device's venv (install.sh reuses it) and its edited serve.env
        unpack = (f"cd {REMOTE_ROOT} && rm -rf {name}.new && mkdir {name}.new && "
                  f"tar -xzf {name}.tar.gz -C {name}.new && rm {name}.tar.gz && "
                  f"if [ -d {name}/venv ]; then mv {name}/venv {name}.new/venv; fi && "
                  f"if [ -f {name}/serve.env ]; then cp {name}/serve.env {name}.new/serve.env; fi && "
                  f"rm -rf {name} && mv {name}.new {name}")
        return [self.ssh(f"mkdir -p {REMOTE_ROOT}"),
                ["scp", *self._options(scp=True), str(archive), f"{self.host}:{remote_archive}"],
                self.ssh(unpack)]

    def install_and_test(self) -> list[list[str]]:
        where = f"cd {shlex.quote(self.remote_dir)}"
        return [self.ssh(f"{where} && ./install.sh"), self.ssh(f"{where} && ./profile.sh")]

    def fetch_profile(self, dest: Path) -> list[str]:
        remote = f"{self.remote_dir}/bundle/profiles/{self.target}.json"
        return ["scp", *self._options(scp=True), f"{self.host}:{remote}", str(dest)]

    def plan(self, archive: Path, profile_dest: Path) -> list[list[str]]:
        """Every command, in order: reach, upload + unpack, install, profile + self-test, fetch the profile."""
        return [self.reach_check(), *self.upload(archive), *self.install_and_test(), self.fetch_profile(profile_dest)]

    @staticmethod
    def shell(argv: Sequence[str]) -> str:
        return " ".join(shlex.quote(a) for a in argv)


def make_archive(folder: Path, archive: Path) -> Path:
    """tar.gz of the package folder's contents (paths relative to it)."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return archive


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), stderr=subprocess.PIPE, text=True)  # stdout: the terminal


def check_tools() -> None:
    missing = [tool for tool in ("ssh", "scp") if shutil.which(tool) is None]
    if missing:
        raise DeployError(f"{' and '.join(missing)} not found; install the OpenSSH client (apt install openssh-client)")


def reach(remote: Remote) -> None:
    """Raise DeployError naming the fix if the host cannot be reached with key authentication."""
    check_tools()
    argv = remote.reach_check()
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=remote.connect_timeout_s + 20)
    except subprocess.TimeoutExpired:
        raise DeployError(f"cannot reach {remote.host} over ssh: no answer in {remote.connect_timeout_s + 20} s. "
                          f"Check the address and the network path to the device") from None
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()
        raise DeployError(
            f"cannot reach {remote.host} over ssh (exit {result.returncode}: {detail[-1] if detail else 'no output'}). "
            f"Check the address and that sshd runs on the device, and set up key login: ssh-copy-id {remote.host}")


def _step_name(argv: Sequence[str]) -> str:
    command = argv[-1]
    if argv[0] == "scp":
        return "copying the profile back" if command.endswith(".json") else "copying the package"
    for script, name in (("install.sh", "install"), ("profile.sh", "profiling / self-test"), ("tar -xzf", "unpacking")):
        if script in command:
            return name
    return "ssh"


def deploy_remote(remote: Remote, package_dir: Path, archive: Path, profile_dest: Path,
                  run: Runner | None = None) -> None:
    """Run the plan after `reach`: upload, install, profile + self-test, fetch the profile into profile_dest.

    `run(argv)` executes one command (default: subprocess, stdout streamed, stderr kept for the error).
    """
    run = run or _run
    make_archive(package_dir, archive)
    try:
        steps = remote.plan(archive, profile_dest)[1:]
        for argv in steps:
            print(f"+ {remote.shell(argv)}", flush=True)
            result = run(argv)
            if result.returncode != 0:
                raise DeployError(f"on {remote.host}: {_step_name(argv)} failed (exit {result.returncode}): "
                                  f"{remote.shell(argv)}\n{(result.stderr or '')[-1500:]}")
    finally:
        if archive.exists():
            archive.unlink()
