"""`edge-anytime`: one command for the device side, installed with the wheel.

    edge-anytime serve    --bundle B --source clip.mp4 --resize stretch --budget-ms 20
    edge-anytime deploy   --target jetson --bundle B --out out/jetson
    edge-anytime selftest --bundle B
    edge-anytime profile  --bundle B --target x86-64
    edge-anytime replay   --bundle B --demo           (needs the simulator: a source checkout)
    edge-anytime inspect  --bundle B

Each command takes the same flags as its module (`python -m edge_anytime.serve`,
`.deploy`, `.selftest`, `.profiling`, `simulator.replay`, `.inspect_bundle`),
which keep working; `edge-anytime COMMAND --help` lists them.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable

from . import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("edge_anytime.serve", "the inference service: a source -> the controller -> sinks"),
    "deploy": ("edge_anytime.deploy.__main__", "build a device package for a target; profile; install over ssh"),
    "selftest": ("edge_anytime.selftest", "run a bundle's parity self-test on this machine"),
    "profile": ("edge_anytime.profiling", "measure a bundle's per-graph latency profile on this machine"),
    "replay": ("simulator.replay", "replay a stream under budgets (needs the simulator of a source checkout)"),
    "inspect": ("edge_anytime.inspect_bundle", "show a bundle: input, preprocessing, graphs, exits, profiles"),
}
_TAKES_PROG = ("serve", "inspect", "deploy")


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items())
    return (f"usage: edge-anytime COMMAND [options]   (edge-anytime COMMAND --help)\n\n"
            f"Anytime DNN inference on edge targets, edge_anytime {__version__}.\n\ncommands:\n{rows}\n")


def load(command: str) -> Callable[..., int]:
    """The `main` of a command's module; a clear error when the simulator is not installed."""
    module_name = COMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if command == "replay" and exc.name and exc.name.split(".")[0] == "simulator":
            raise SystemExit("edge-anytime replay: the simulator is not installed here (it ships with the source "
                             "checkout, not the device wheel). Run it from a clone of the repository: "
                             "python -m simulator.replay --bundle B --demo, or install the clone with "
                             "pip install -e '.[sim]'") from None
        raise
    return module.main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        return 0
    if argv[0] == "--version":
        print(f"edge-anytime {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"edge-anytime: unknown command {command!r}\n\n{usage()}", file=sys.stderr, end="")
        return 2
    entry = load(command)
    if command in _TAKES_PROG:
        return entry(rest, prog=f"edge-anytime {command}")
    return entry(rest)


if __name__ == "__main__":
    sys.exit(main())
