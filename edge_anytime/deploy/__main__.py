"""`python -m edge_anytime.deploy`: build a deploy package for a target, optionally profile and install it.

    python -m edge_anytime.deploy --target jetson --bundle deploy/bundles/gtsrb-resann --out out/jetson
    python -m edge_anytime.deploy --target x86-64 --bundle B --out out/x86 --profile          # profile here
    python -m edge_anytime.deploy --target jetson --bundle B --out out/j --host nvidia@orin.local
    python -m edge_anytime.deploy ... --host nvidia@orin.local --dry-run                   # print commands only

Exit status 0 on success, 1 on any error (the message names the fix); on an
error nothing is left in --out.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

from ..bundle import Bundle
from ..errors import EdgeAnytimeError
from ..profile import load_profile
from ..selftest import parse_precision
from .package import DeployError, Staging, build_wheel, check_wheel, choose_precisions, download_deps, machine_arch
from .package import write_package
from .remote import Remote, deploy_remote, reach
from .targets import Target, load_target

PROJECT = Path(__file__).resolve().parents[2]


def _precision(text: str):
    return "recommended" if text == "recommended" else parse_precision(text)


def parse_args(argv: list[str] | None, prog: str = "python -m edge_anytime.deploy") -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--target", required=True, help="target profile name (deploy/targets/NAME.toml)")
    p.add_argument("--bundle", required=True, help="bundle folder (manifest.json + graphs)")
    p.add_argument("--out", required=True, help="package folder to create (atomically)")
    p.add_argument("--precision", type=_precision, default=None,
                   help="override the target's precision: fp32|fp16|int8, GRAPH=PREC,...,*=PREC, or recommended "
                        "(the exporter's per-graph choice in the bundle's metadata)")
    p.add_argument("--profile", action="store_true",
                   help="measure latencies + run the self-test here (only when this machine is the target)")
    p.add_argument("--host", help="user@address: copy, install, profile and self-test on the device over ssh")
    p.add_argument("--port", type=int, default=None, help="ssh port of --host")
    p.add_argument("--connect-timeout", type=int, default=10, help="ssh ConnectTimeout in seconds (default 10)")
    p.add_argument("--dry-run", action="store_true", help="print every command instead of running it; write nothing")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--wheel", type=Path, help="use this runtime wheel instead of building one from the checkout")
    p.add_argument("--offline", action="store_true", help="also download the target's dependency wheels (wheels/deps)")
    p.add_argument("--targets-dir", help="folder of target profiles (default: deploy/targets of the checkout)")
    p.add_argument("--warmup", type=int, default=20, help="profiling warm-up passes (default 20)")
    p.add_argument("--samples", type=int, default=500, help="profiling samples per graph (default 500)")
    return p.parse_args(argv)


def _check_profile_here(target: Target) -> None:
    here = machine_arch()
    if here != target.arch:
        raise DeployError(f"--profile measures on this machine ({here}), but target {target.name!r} is {target.arch}: "
                          f"profile on the device instead: add --host user@address, or run ./profile.sh in the "
                          f"package on the device")
    from ..errors import require

    module = {"litert": "ai_edge_litert.interpreter", "tflite_runtime": "tflite_runtime.interpreter"}
    require(module[target.runtime.backend], "tflite" if target.runtime.backend == "tflite_runtime" else "base")


def _profile_here(bundle_dir: Path, target: Target, precisions: dict, warmup: int, samples: int) -> None:
    from ..profiling import ProfileOptions, pin_cpus, profile_bundle, store_profile, summary
    from ..selftest import run_selftest

    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    print(pin_cpus(target.runtime.cpus))
    try:
        profile = profile_bundle(bundle_dir, target.name, target.runtime.backend, target.runtime.threads,
                                 precisions, ProfileOptions(warmup, samples))
    finally:
        if before is not None and target.runtime.cpus:
            os.sched_setaffinity(0, before)
    store_profile(profile, bundle_dir)
    print(summary(profile))
    report = run_selftest(bundle_dir, target.runtime.backend, target.runtime.threads, precisions)
    print(report)
    if not report.passed:
        raise DeployError(f"the parity self-test failed on this machine for target {target.name!r} (see above); "
                          f"the package was not written")


def _dry_run(args, target: Target, precisions: dict, remote: Remote | None, out: Path) -> int:
    print("# dry run: nothing is written, copied or executed")
    print(f"# package {out} for target {target.name} ({target.description})")
    print(f"# precisions: {precisions}; backend {target.runtime.backend}, {target.runtime.threads} thread(s)")
    if args.wheel:
        print(f"# runtime wheel: {args.wheel}")
    else:
        print(f"{sys.executable} -m pip wheel --no-deps --no-build-isolation -w {out}/wheels {PROJECT}")
    if args.offline:
        print(Remote.shell(download_deps(target, out / "requirements.txt", out / "wheels" / "deps")))
    if args.profile and remote is None:
        print(f"{sys.executable} -m edge_anytime.profiling --bundle {out}/bundle --target {target.name} "
              f"--backend {target.runtime.backend} --threads {target.runtime.threads} --warmup {args.warmup} "
              f"--samples {args.samples}")
        print(f"{sys.executable} -m edge_anytime.selftest --bundle {out}/bundle --backend {target.runtime.backend}")
    if remote is not None:
        archive = out.parent / f".{out.name}.upload.tar.gz"
        print(f"# tar -czf {archive} -C {out} .")
        for argv in remote.plan(archive, out / "bundle" / "profiles" / f"{target.name}.json"):
            print(Remote.shell(argv))
    return 0


def deploy(args: argparse.Namespace) -> int:
    target = load_target(args.target, args.targets_dir)
    bundle = Bundle.load(args.bundle)
    precisions = choose_precisions(bundle, target, args.precision)
    out = Path(args.out).absolute()
    if out.exists() and not args.force:
        raise DeployError(f"{out} already exists; pass --force to replace it, or choose another --out")
    remote = None
    if args.host:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", out.name):
            raise DeployError(f"--out folder name {out.name!r} is used on the device: use letters, digits, . _ -")
        remote = Remote(args.host, package=out.name, target=target.name, connect_timeout_s=args.connect_timeout,
                        port=args.port)
    if args.dry_run:
        return _dry_run(args, target, precisions, remote, out)
    if args.profile and remote is None:
        _check_profile_here(target)
    if remote is not None:
        reach(remote)
    with Staging(out, force=args.force) as stage, tempfile.TemporaryDirectory(prefix="edge-anytime-") as tmp:
        if args.wheel:
            check_wheel(args.wheel)
            wheel = args.wheel
        else:
            wheel = build_wheel(PROJECT, tmp)
        packaged = write_package(stage.path, target, bundle, wheel, precisions, args.warmup, args.samples,
                                 offline=args.offline)
        if args.profile and remote is None:
            _profile_here(stage.path / "bundle", target, precisions, args.warmup, args.samples)
        if remote is not None:
            dest = stage.path / "bundle" / "profiles" / f"{target.name}.json"
            dest.parent.mkdir(exist_ok=True)
            deploy_remote(remote, stage.path, out.parent / f".{out.name}.upload.tar.gz", dest)
            load_profile(dest, packaged.program)
            print(f"fetched the {target.name} profile from {remote.host}")
        stage.commit()
    print(f"package ready: {out} (target {target.name}, precisions {sorted(set(precisions.values()))}, "
          f"wheel {wheel.name})")
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m edge_anytime.deploy") -> int:
    args = parse_args(argv, prog)
    try:
        return deploy(args)
    except (EdgeAnytimeError, OSError) as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
