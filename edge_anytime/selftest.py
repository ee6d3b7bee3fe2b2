"""Parity self-test on the device: the bundle's reference inputs through the converted graphs.

`reference/self_test.npz` holds preprocessed inputs (`input`, shape (N, 1, C, H, W)
or the model input shape) and the fp32 logits of every exit (e.g. `logits0`,
shape (N, 1, classes)). The self-test runs each input through the whole stage
program with the device's backend, threads and precisions, and compares every
exit with a tolerance that depends on the loosest precision among the graphs
that exit depends on.

>>> report = run_selftest("deploy/bundles/gtsrb-resann", backend="litert")     # doctest: +SKIP
>>> print(report)                                                              # doctest: +SKIP
self-test PASS: 3 exits, 16 samples, backend litert, precision fp32
  exit 0 (logits0, fp32): max |diff| 2.1e-06 <= 1.0e-03, top-1 agreement 16/16

Command line (exit status 1 on failure; runs on the device with numpy + LiteRT only):
    python -m edge_anytime.selftest --bundle bundle --backend litert --threads 1 --precision auto
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np

from .bundle import Bundle
from .runners import close_runners, load_runners, run_program  # noqa: F401  (re-exported)
from .errors import BundleError, EdgeAnytimeError
from .manifest import PRECISIONS

# max |logit difference| allowed: atol + rtol * max |reference logit| of that exit
TOLERANCES = {"fp32": (1e-3, 1e-3), "fp16": (5e-2, 2e-2), "int8": (0.25, 0.1)}

Precision = Union[str, Mapping[str, str]]


def parse_precision(text: str) -> Precision:
    """'fp32', 'auto', or per graph 'stem=int8,head=fp32,*=fp32' (the form the launchers pass).

    >>> parse_precision("stem=int8,*=fp32")
    {'stem': 'int8', '*': 'fp32'}
    """
    text = text.strip()
    if "=" not in text:
        if text != "auto" and text not in PRECISIONS:
            raise BundleError(f"precision {text!r} is not one of {PRECISIONS} or 'auto'")
        return text
    mapping = {}
    for item in text.split(","):
        graph, _, value = item.partition("=")
        if not graph.strip() or value.strip() not in PRECISIONS:
            raise BundleError(f"precision item {item!r}: write GRAPH=PRECISION with one of {PRECISIONS}")
        mapping[graph.strip()] = value.strip()
    return mapping


def resolve_precisions(bundle: Bundle, precision: Precision = "auto") -> dict[str, str]:
    """Per-graph precision; 'auto' takes each graph's only file (a deploy package keeps one), else fp32."""
    if precision == "auto":
        chosen = {}
        for graph, files in bundle.manifest.files.items():
            chosen[graph] = next(iter(files)) if len(files) == 1 else ("fp32" if "fp32" in files else
                                                                        [p for p in PRECISIONS if p in files][0])
        return chosen
    return bundle.resolve_precisions(precision)


def reference_inputs(bundle: Bundle) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """The reference inputs, each shaped like the model input, and {exit tensor: (N, classes) logits}."""
    data = bundle.reference_data()
    if "input" not in data:
        raise BundleError(f"{bundle.manifest.reference}: no 'input' array (it has {sorted(data)}); re-export the bundle")
    shape = tuple(bundle.model.input.shape)
    raw = np.asarray(data["input"], dtype=np.float32)
    if raw.shape == shape:
        raw = raw[None]
    if raw.shape[-len(shape) + 1:] != shape[1:] or raw.size % int(np.prod(shape)):
        raise BundleError(f"{bundle.manifest.reference}: input has shape {raw.shape}, expected (N, *{shape}) "
                          f"or (N, {', '.join(map(str, shape[1:]))})")
    inputs = list(raw.reshape((-1,) + shape))
    refs = {}
    for exit_ in bundle.program.exits:
        if exit_.tensor not in data:
            raise BundleError(f"{bundle.manifest.reference}: no reference logits for exit tensor {exit_.tensor!r}")
        refs[exit_.tensor] = np.asarray(data[exit_.tensor], dtype=np.float32).reshape(len(inputs), -1)
    return inputs, refs


@dataclass(frozen=True)
class ExitCheck:
    exit_index: int
    tensor: str
    precision: str          # loosest precision among the graphs this exit depends on
    max_abs_diff: float
    tolerance: float
    agree: int              # samples whose top-1 class matches the reference
    samples: int

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_diff <= self.tolerance)


@dataclass(frozen=True)
class SelfTestReport:
    backend: str
    precisions: Mapping[str, str]
    checks: tuple[ExitCheck, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def __str__(self) -> str:
        kinds = sorted(set(self.precisions.values()))
        lines = [f"self-test {'PASS' if self.passed else 'FAIL'}: {len(self.checks)} exits, "
                 f"{self.checks[0].samples if self.checks else 0} samples, backend {self.backend}, "
                 f"precision {'/'.join(kinds)}"]
        for c in self.checks:
            verdict = "<=" if c.passed else "> "
            lines.append(f"  exit {c.exit_index} ({c.tensor}, {c.precision}): max |diff| {c.max_abs_diff:.1e} "
                         f"{verdict} {c.tolerance:.1e}, top-1 agreement {c.agree}/{c.samples}"
                         + ("" if c.passed else "  <-- FAIL"))
        if not self.passed:
            lines.append("  a failing exit means the converted graphs or the interpreter do not reproduce the "
                         "trained model: check the backend/numpy versions against the target profile, re-copy "
                         "the bundle, or re-export it (python -m training.export)")
        return "\n".join(lines)


def _loosest(precisions) -> str:
    order = {"fp32": 0, "fp16": 1, "int8": 2}
    return max(precisions, key=order.__getitem__)


def run_selftest(bundle, backend: str = "litert", threads: int = 1, precision: Precision = "auto") -> SelfTestReport:
    """Run the reference inputs through the stage program and compare every exit (see the module doc)."""
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    program = bundle.program
    precisions = resolve_precisions(bundle, precision)
    inputs, refs = reference_inputs(bundle)
    runners = load_runners(bundle, precisions, backend, threads)
    try:
        outputs = {e.tensor: [] for e in program.exits}
        for tensor in inputs:
            env = run_program(program, runners, tensor)
            for name in outputs:
                outputs[name].append(np.asarray(env[name], dtype=np.float32).reshape(-1))
    finally:
        close_runners(runners)
    checks = []
    for exit_ in program.exits:
        got, ref = np.stack(outputs[exit_.tensor]), refs[exit_.tensor]
        if got.shape != ref.shape:
            raise BundleError(f"exit {exit_.index}: the graphs produce {got.shape[1]} logits but the reference "
                              f"has {ref.shape[1]}; the reference does not belong to this bundle")
        kind = _loosest({precisions[program.steps[i].graph] for i in program.apriori_plan(exit_.index)})
        atol, rtol = TOLERANCES[kind]
        checks.append(ExitCheck(exit_.index, exit_.tensor, kind, float(np.max(np.abs(got - ref))),
                                atol + rtol * float(np.max(np.abs(ref))),
                                int(np.sum(got.argmax(1) == ref.argmax(1))), len(inputs)))
    return SelfTestReport(backend, precisions, tuple(checks))


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """--bundle, --backend, --threads, --precision: shared by selftest, profiling and serve."""
    parser.add_argument("--bundle", required=True, help="bundle folder (holds manifest.json)")
    parser.add_argument("--backend", default="litert", help="litert (default) or tflite_runtime (numpy<2 images)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads per graph (default 1)")
    parser.add_argument("--precision", default="auto", type=parse_precision,
                        help="fp32|fp16|int8, GRAPH=PREC,...,*=PREC, or auto (each graph's only file; default)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_anytime.selftest", description=__doc__.split("\n")[0])
    add_runtime_arguments(parser)
    args = parser.parse_args(argv)
    try:
        report = run_selftest(args.bundle, args.backend, args.threads, args.precision)
    except (EdgeAnytimeError, OSError, ValueError) as exc:
        print(f"self-test ERROR: {exc}", file=sys.stderr)
        return 2
    print(report)
    sys.stdout.flush()
    return 0 if report.passed else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
