"""Print an architecture's stage program: what anytime mode and each a-priori slice execute.

    python -m training.inspect --arch anytimenet --json
    python -m training.inspect --arch is-resnext --arch-kwargs '{"hierarchical": true}'
    python -m training.inspect --arch eann --arch-kwargs '{"keep_exits": [0, 2, 5]}' --input-size 48

Per exit: the steps anytime mode has run by then (cumulative), the blocks they hold
when the model says how many blocks each graph has (`graph_blocks()`, e.g. AnytimeNet
Table I), the steps of its a-priori slice (`Program.apriori_plan`), cumulative
anytime FLOPs (`Program.cumulative_flops`) and the FLOPs and parameters of the slice.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch


def describe(arch: str, num_classes: int = 43, arch_kwargs: dict | None = None, input_size: int = 32,
             in_channels: int = 3) -> dict:
    """The stage program of `arch` as a JSON-able dict (see the module docstring)."""
    from .models import create_model
    from .models.blocks import block_table

    model = create_model(arch, num_classes=num_classes, **(arch_kwargs or {}))
    model.eval()
    staged = model.stage_program(torch.zeros(1, in_channels, input_size, input_size))
    program = staged.program
    blocks = block_table(program, model.graph_blocks()) if hasattr(model, "graph_blocks") else None
    cumulative = program.cumulative_flops()
    exits, ran = [], 0
    for segment, flops in zip(program.anytime_segments(), cumulative):
        exit_ = program.exits[segment.exit_index]
        ran += len(segment.steps)
        plan = program.apriori_plan(exit_.index)
        graphs = {program.steps[i].graph for i in plan}
        row = {"index": exit_.index, "name": exit_.name, "tensor": exit_.tensor,
               "coarse_tensor": exit_.coarse_tensor,
               "anytime_steps": ran, "anytime_new_steps": [program.steps[i].name for i in segment.steps],
               "anytime_flops": flops,
               "apriori_steps": [program.steps[i].name for i in plan],
               "apriori_flops": sum(program.graphs[program.steps[i].graph].flops for i in plan),
               "apriori_params": sum(program.graphs[g].params for g in graphs)}
        if blocks is not None:
            row["anytime_blocks"] = blocks[segment.exit_index]
        exits.append(row)
    return {
        "arch": arch, "num_classes": num_classes, "config": getattr(model, "config", {}),
        "input_shape": [1, in_channels, input_size, input_size],
        "params": sum(p.numel() for p in model.parameters()),
        "num_exits": len(program.exits),
        "graphs": {name: {"flops": g.flops, "params": g.params,
                          "inputs": {p.name: list(p.shape) for p in g.inputs},
                          "outputs": {p.name: list(p.shape) for p in g.outputs},
                          "steps": [program.steps[i].name for i in program.steps_for_graph(name)]}
                   for name, g in program.graphs.items()},
        "steps": [{"name": s.name, "graph": s.graph, "inputs": dict(s.inputs), "outputs": dict(s.outputs)}
                  for s in program.steps],
        "exits": exits,
    }


def _text(info: dict) -> str:
    lines = [f"{info['arch']}: {info['params']:,} parameters, {len(info['graphs'])} graphs, "
             f"{len(info['steps'])} steps, {info['num_exits']} exits; config {json.dumps(info['config'])}",
             f"{'exit':>4} {'name':<14} {'steps':>5} {'blocks':>6} {'anytime MFLOPs':>14} "
             f"{'a-priori MFLOPs':>15} {'a-priori params':>15}  a-priori slice"]
    for e in info["exits"]:
        blocks = e["anytime_blocks"]["Total"] if "anytime_blocks" in e else "-"
        lines.append(f"{e['index']:>4} {e['name']:<14} {e['anytime_steps']:>5} {blocks:>6} "
                     f"{e['anytime_flops'] / 1e6:>14.2f} {e['apriori_flops'] / 1e6:>15.2f} "
                     f"{e['apriori_params']:>15,}  {' '.join(e['apriori_steps'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from .models import list_models

    parser = argparse.ArgumentParser(prog="python -m training.inspect", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Registered architectures: " + ", ".join(list_models()))
    parser.add_argument("--arch", required=True, help="registered architecture name")
    parser.add_argument("--arch-kwargs", default="{}", metavar="JSON",
                        help="constructor keyword arguments as a JSON object, e.g. '{\"width\": 32}'")
    parser.add_argument("--num-classes", type=int, default=43, help="number of classes (default: 43, GTSRB)")
    parser.add_argument("--input-size", type=int, default=32, help="square input side in pixels (default: 32)")
    parser.add_argument("--in-channels", type=int, default=3, help="input channels (default: 3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        kwargs = json.loads(args.arch_kwargs)
        if not isinstance(kwargs, dict):
            raise ValueError("not an object")
    except ValueError as err:
        parser.error(f"--arch-kwargs must be a JSON object such as '{{\"width\": 32}}' ({err})")
    try:
        info = describe(args.arch, args.num_classes, kwargs, args.input_size, args.in_channels)
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2) if args.json else _text(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
