"""`edge-anytime inspect` (`python -m edge_anytime.inspect_bundle`): what a bundle holds, read on the device.

Model and labels, the input and its declared preprocessing (colour order,
resize policy, normalisation), every graph with its files per precision, the
exits, each precision's argmax agreement with fp32 per exit (the parity report)
and the exits `fallback_precision="auto"` answers from int8 on a real clock,
and the latency profiles with their median per graph. numpy only; with
`--json` the same as one JSON object. (A zoo model's stage program, before
export, is `python -m training.inspect`.)

    edge-anytime inspect --bundle deploy/bundles/gtsrb-resann
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

from .bundle import Bundle
from .errors import EdgeAnytimeError
from .runners import fallback_exits


def describe(bundle: Bundle) -> dict[str, Any]:
    """The bundle as a plain dict (what --json prints)."""
    model, program = bundle.model, bundle.program
    spec = model.input
    return {
        "root": str(bundle.root), "format_version": bundle.manifest.version,
        "model": {"name": model.name, "arch": model.arch, "dataset": model.dataset, "classes": len(model.labels),
                  "coarse_classes": len(model.coarse_labels)},
        "input": {"tensor": spec.tensor, "shape": list(spec.shape), "layout": spec.layout,
                  "color_order": spec.color_order, "resize": spec.resize, "interpolation": spec.interpolation,
                  "mean": list(spec.mean), "std": list(spec.std), "scale": spec.scale},
        "graphs": {name: {"flops": g.flops, "params": g.params,
                          "files": {p: f.path for p, f in bundle.manifest.files[name].items()}}
                   for name, g in program.graphs.items()},
        "steps": [s.name for s in program.steps],
        "exits": [{"index": e.index, "tensor": e.tensor, "flops": e.flops, "val_accuracy": e.val_accuracy}
                  for e in program.exits],
        "precisions": list(bundle.precisions()),
        "argmax_agreement": {p: a for p, a in ((p, bundle.argmax_agreement(p)) for p in bundle.precisions()
                                               if p != "fp32") if a is not None},
        "auto_fallback_exits": sorted(fallback_exits(bundle, "auto", dict.fromkeys(program.graphs, "fp32"),
                                                     simulated=False)[1]),
        "profiles": {target: {"backend": p.backend, "threads": p.threads, "host": p.host,
                              "median_us": {g: {prec: round(statistics.median(s), 2) for prec, s in per.items() if s}
                                            for g, per in p.graphs.items()}}
                     for target, p in bundle.profiles.items()},
        "reference": bundle.manifest.reference,
    }


def format_text(info: dict[str, Any]) -> str:
    spec = info["input"]
    lines = [f"bundle {info['root']} (format v{info['format_version']})",
             f"model {info['model']['name']}: {info['model']['arch']} on {info['model']['dataset'] or '?'}, "
             f"{info['model']['classes']} classes",
             f"input {spec['tensor']} {spec['shape']} {spec['layout']}, {spec['color_order']} frames, "
             f"resize {spec['resize']} ({spec['interpolation']}), ((x / {spec['scale']:g}) - mean {spec['mean']}) "
             f"/ std {spec['std']}",
             f"precisions (every graph): {', '.join(info['precisions']) or 'none in common'}",
             "graphs:"]
    for name, graph in info["graphs"].items():
        lines.append(f"  {name}: {graph['flops']:,} FLOPs, {graph['params']:,} params, files "
                     f"{', '.join(sorted(graph['files']))}")
    lines.append("exits:")
    for e in info["exits"]:
        acc = "" if e["val_accuracy"] is None else f", val accuracy {e['val_accuracy']:.4f}"
        lines.append(f"  {e['index']}: {e['tensor']}, {e['flops']:,} FLOPs{acc}")
    for precision, agreements in info["argmax_agreement"].items():
        lines.append(f"parity {precision}: argmax agreement with fp32 per exit "
                     + " ".join(f"{a:.3f}" for a in agreements))
    auto = info["auto_fallback_exits"]
    lines.append(f"precision fallback ('auto', real clock): exits {', '.join(map(str, auto))} from int8" if auto else
                 "precision fallback ('auto'): none (needs int8 graphs agreeing with fp32 on >= 99% per exit)")
    lines.append("profiles:" if info["profiles"] else "profiles: none (measure one: edge-anytime profile ...)")
    for target, p in info["profiles"].items():
        medians = "; ".join(f"{g} " + " ".join(f"{prec} {us:g}" for prec, us in per.items())
                            for g, per in p["median_us"].items())
        lines.append(f"  {target} ({p['backend']}, {p['threads']} thread(s), host {p['host'] or '?'}): "
                     f"median us {medians}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "python -m edge_anytime.inspect_bundle") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", required=True, help="bundle folder (holds manifest.json)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check of every file")
    args = parser.parse_args(argv)
    try:
        info = describe(Bundle.load(args.bundle, verify_hashes=not args.no_verify))
    except (EdgeAnytimeError, OSError) as exc:
        print(f"inspect: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2) if args.json else format_text(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
