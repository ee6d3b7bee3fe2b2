"""AnytimeNet (Kim, Bradford & Shao): a BaseResNet built by iterative insertion of blocks.

BaseResNet (Sec. II-A, Fig. 1, eq. 2): an IN block (3x3 conv), full pre-activation
residual blocks in 3 feature-size sections (widths 16-32-64; the first block of
sections 2 and 3 halves the resolution and zero-pads its shortcut), and an OUT
block (BN-ReLU-global pooling-Linear; `head_pool=k` pools to k x k instead, heads.py).
BN epsilon is 1e-3 (Sec. III-A4).

AnytimeNet (Sec. II-B, Fig. 2): iteration 1 has one block per section. Each later
iteration inserts new blocks *above* the existing ones of one section; the output
of the blocks below is cached, and everything above the insertion point (later
sections, OUT) is re-executed on the refined features with the same weights.
The paper's schedule (Sec. III-A2) inserts +4 then +3 blocks into section 1, then
section 2, then section 3: 7 iterations, 24 inner blocks at the end.

Normalisation (`iteration_bn`): a re-executed group and the shared OUT see new
input distributions at every iteration, so by default ("affine") every later run of
a group, and OUT at every iteration, has its own BatchNorm layers (statistics and
scale/shift; "stats": statistics only) around the shared convolutions and Linear;
"shared" keeps one BatchNorm per layer for all iterations.

Stage program: one graph per *block group* (the blocks inserted together), plus
`in_block` and `out` (one shared OUT by default; `shared_out=False` gives each
iteration its own `out{j}`). With iteration_bn="shared" a re-executed group is one
graph run in several steps on new inputs, so its weights are converted and stored
once; otherwise each (group, iteration) is its own graph (`sec3_grp0_it2`, `out_it2`). Counting the
blocks of each step's graph reproduces Table I: 5, 12, 18, 24, 29, 34, 38.

`forward(x)` returns the logits of every iteration (train with eq. 4,
`static_weights("anytimenet", n)`). BASELINE (`anytimenet-baseline`) is the
final 24-block network as a plain single-exit BaseResNet.

>>> model = AnytimeNet(num_classes=43)
>>> staged = model.stage_program(torch.zeros(1, 3, 32, 32))
>>> cumulative_blocks(staged.program, model.graph_blocks())
[5, 12, 18, 24, 29, 34, 38]
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..stages import ProgramBuilder, StagedModel
from .base import AnytimeModel
from .blocks import ExitHead, PreActBlock, block_table, conv3x3, cumulative_blocks, init_weights, tracing
from .registry import register_model

__all__ = ["AnytimeNet", "AnytimeNetBaseline", "DEFAULT_SCHEDULE", "block_table", "cumulative_blocks"]

#: The paper's insertions after iteration 1, as (section, blocks) with sections numbered from 0.
DEFAULT_SCHEDULE = ((0, 4), (0, 3), (1, 4), (1, 3), (2, 4), (2, 3))
BN_EPS = 1e-3
#: iteration_bn choices: one BatchNorm per layer for every iteration, own running statistics per iteration
#: (scale and shift shared), or own statistics and scale/shift per iteration (the default: it measured best,
#: docs/results.md, `anytimenet-bn`).
ITERATION_BN = ("shared", "stats", "affine")


def _final_blocks(initial_blocks: Sequence[int], schedule: Sequence[Sequence[int]]) -> tuple[int, ...]:
    blocks = list(initial_blocks)
    for section, n in schedule:
        blocks[section] += n
    return tuple(blocks)


@register_model("anytimenet")
class AnytimeNet(AnytimeModel):
    """AnytimeNet over BaseResNet. `schedule` lists the insertions of iterations 2..n as
    (section, n_blocks), sections numbered from 0; `initial_blocks` is iteration 1 (>= 1 per section)."""

    def __init__(self, num_classes: int, widths: Sequence[int] = (16, 32, 64),
                 initial_blocks: Sequence[int] = (1, 1, 1), schedule: Sequence[Sequence[int]] = DEFAULT_SCHEDULE,
                 shared_out: bool = True, bn_eps: float = BN_EPS, in_channels: int = 3,
                 head_pool: int = 1, iteration_bn: str = "affine") -> None:
        super().__init__()
        if iteration_bn not in ITERATION_BN:
            raise ValueError(f"iteration_bn={iteration_bn!r}: choose one of {', '.join(ITERATION_BN)} "
                             f"(shared: one BatchNorm per layer; stats: own running statistics per iteration; "
                             f"affine: own statistics and scale/shift per iteration)")
        widths, initial_blocks = [int(w) for w in widths], [int(n) for n in initial_blocks]
        schedule = [(int(s), int(n)) for s, n in schedule]
        if len(initial_blocks) != len(widths) or min(initial_blocks) < 1:
            raise ValueError(f"initial_blocks={initial_blocks}: need >= 1 block in each of the {len(widths)} "
                             f"sections (one per width in widths={widths}), e.g. {(1,) * len(widths)}")
        for section, n in schedule:
            if not (0 <= section < len(widths) and n >= 1):
                raise ValueError(f"schedule entry ({section}, {n}): the section must be in 0..{len(widths) - 1} "
                                 f"(numbered from 0) and the block count >= 1")
        self.config = dict(widths=widths, initial_blocks=initial_blocks, schedule=[list(e) for e in schedule],
                           shared_out=bool(shared_out), bn_eps=float(bn_eps), in_channels=int(in_channels),
                           head_pool=int(head_pool), iteration_bn=iteration_bn)
        self.num_classes = num_classes
        self._plan = self._make_plan(initial_blocks, schedule)
        self.in_block = conv3x3(in_channels, widths[0])
        # sections[s][g]: the g-th block group inserted into section s (group 0 is there from iteration 1).
        self.sections = nn.ModuleList()
        for s, width in enumerate(widths):
            sizes = [initial_blocks[s]] + [n for section, n in schedule if section == s]
            groups = nn.ModuleList()
            for g, n in enumerate(sizes):
                blocks = []
                for b in range(n):
                    first = s > 0 and g == 0 and b == 0
                    blocks.append(PreActBlock(widths[s - 1] if first else width, width, 2 if first else 1, bn_eps))
                groups.append(nn.Sequential(*blocks))
            self.sections.append(groups)
        n_out = 1 if shared_out else len(self._plan)
        self.out_blocks = nn.ModuleList(ExitHead(widths[-1], num_classes, bn_eps, pool=int(head_pool))
                                        for _ in range(n_out))
        # Per-iteration normalisation: every later run of a group (and of the shared OUT) gets its own
        # BatchNorm layers around the same convolution / Linear modules.
        self.iteration_groups = nn.ModuleDict()
        self.iteration_outs = nn.ModuleDict()
        init_weights(self)
        if iteration_bn != "shared":
            share_affine = iteration_bn == "stats"
            for j, (runs, _) in enumerate(self._plan):
                for s, g in runs:
                    if j != self._inserted_at(s, g):
                        self.iteration_groups[self._view_key(s, g, j)] = nn.Sequential(
                            *(_block_view(block, share_affine) for block in self.sections[s][g]))
                if shared_out and j > 0:
                    self.iteration_outs[f"it{j + 1}"] = _head_view(self.out_blocks[0], share_affine)

    @staticmethod
    def _make_plan(initial_blocks, schedule) -> list[tuple[list[tuple[int, int]], tuple[int, ...]]]:
        """Per iteration: the (section, group) executions in order, and the group count per section.
        The first execution reads cached features; everything after it runs on the new ones."""
        active = [1] * len(initial_blocks)
        plan = [([(s, 0) for s in range(len(active))], tuple(active))]
        for section, _ in schedule:
            active[section] += 1
            runs = [(section, active[section] - 1)]
            runs += [(s, g) for s in range(section + 1, len(active)) for g in range(active[s])]
            plan.append((runs, tuple(active)))
        return plan

    def _inserted_at(self, section: int, group: int) -> int:
        """The iteration (from 0) whose runs start with this group."""
        return next(j for j, (runs, _) in enumerate(self._plan) if (section, group) in runs)

    @staticmethod
    def _view_key(section: int, group: int, iteration: int) -> str:
        return f"s{section}g{group}it{iteration + 1}"

    def _group(self, section: int, group: int, iteration: int) -> nn.Module:
        """The module that runs group (section, group) in `iteration` (from 0): its own normalisation
        layers when iteration_bn is not shared and the group ran before."""
        return self.iteration_groups[self._view_key(section, group, iteration)] \
            if self._view_key(section, group, iteration) in self.iteration_groups else self.sections[section][group]

    def _group_graph(self, section: int, group: int, iteration: int) -> str:
        base = f"sec{section + 1}_grp{group}"
        return f"{base}_it{iteration + 1}" if self._view_key(section, group, iteration) in self.iteration_groups \
            else base

    @staticmethod
    def _source(section: int, group: int, active: tuple[int, ...]):
        """The (section, group) whose latest output feeds this group; None means the IN block."""
        if group > 0:
            return section, group - 1
        if section > 0:
            return section - 1, active[section - 1] - 1
        return None

    @property
    def num_exits(self) -> int:
        return len(self._plan)

    def _out(self, iteration: int) -> nn.Module:
        if f"it{iteration + 1}" in self.iteration_outs:
            return self.iteration_outs[f"it{iteration + 1}"]
        return self.out_blocks[0 if len(self.out_blocks) == 1 else iteration]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.in_block(x)
        latest: dict[tuple[int, int], torch.Tensor] = {}  # cached output of each group
        logits = []
        for j, (runs, active) in enumerate(self._plan):
            for s, g in runs:
                source = self._source(s, g, active)
                latest[(s, g)] = self._group(s, g, j)(stem if source is None else latest[source])
            logits.append(self._out(j)(latest[(len(active) - 1, active[-1] - 1)]))
        return logits

    def graph_blocks(self) -> dict[str, dict[str, int]]:
        """Blocks per graph, by Table I column (IN, SEC 1.., OUT); for `block_table`."""
        blocks = {"in_block": {"IN": 1}}
        for j, (runs, _) in enumerate(self._plan):
            for s, g in runs:
                blocks[self._group_graph(s, g, j)] = {f"SEC {s + 1}": len(self.sections[s][g])}
            blocks[self._out_graph(j)] = {"OUT": 1}
        return blocks

    def _out_graph(self, iteration: int) -> str:
        if f"it{iteration + 1}" in self.iteration_outs:
            return f"out_it{iteration + 1}"
        return "out" if len(self.out_blocks) == 1 else f"out{iteration + 1}"

    def stage_program(self, example: torch.Tensor | None = None) -> StagedModel:
        """Steps per iteration: the inserted group on the cached features below it, the groups
        above it again (same graphs), then OUT. Tensors are named it{j}_s{s}g{g}."""
        with tracing(self, example, self.config["in_channels"]) as example:
            return self._build(ProgramBuilder("image", example))

    def _build(self, builder: ProgramBuilder) -> StagedModel:
        builder.step("in", "in_block", self.in_block, {"x": "image"}, {"y": "in_out"})
        latest: dict[tuple[int, int], str] = {}
        exits = []
        for j, (runs, active) in enumerate(self._plan, start=1):
            for s, g in runs:
                source = self._source(s, g, active)
                tensor = f"it{j}_s{s + 1}g{g}"
                builder.step(f"it{j}_sec{s + 1}_grp{g}", self._group_graph(s, g, j - 1), self._group(s, g, j - 1),
                             {"x": "in_out" if source is None else latest[source]}, {"y": tensor})
                latest[(s, g)] = tensor
            builder.step(f"it{j}_out", self._out_graph(j - 1), self._out(j - 1),
                         {"x": latest[(len(active) - 1, active[-1] - 1)]}, {"logits": f"logits{j}"})
            exits.append(f"logits{j}")
        return builder.build(exit_tensors=exits)

    def table(self, example: torch.Tensor | None = None) -> list[dict[str, int]]:
        """Table I of the paper for this model: cumulative blocks per column by each iteration."""
        return block_table(self.stage_program(example).program, self.graph_blocks())


def _bn_view(bn: nn.BatchNorm2d, share_affine: bool) -> nn.BatchNorm2d:
    """A BatchNorm with its own running statistics; its scale/shift are `bn`'s own Parameters when
    `share_affine`, else fresh ones (1 and 0)."""
    view = nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum)
    if share_affine:
        view.weight, view.bias = bn.weight, bn.bias
    return view


def _block_view(block: PreActBlock, share_affine: bool) -> PreActBlock:
    """`block` with its convolutions shared and BatchNorm layers of its own."""
    view = PreActBlock(block.conv1.in_channels, block.out_channels, block.stride, block.bn1.eps)
    view.conv1, view.conv2 = block.conv1, block.conv2
    view.bn1, view.bn2 = _bn_view(block.bn1, share_affine), _bn_view(block.bn2, share_affine)
    return view


def _head_view(head: ExitHead, share_affine: bool) -> ExitHead:
    """The OUT block with its Linear (and conv) shared and BatchNorm layers of its own."""
    view = ExitHead(head.bn.num_features, head.fc.out_features, head.bn.eps, pool=head.pool.output_size)
    view.bn, view.fc, view.conv, view.pool = _bn_view(head.bn, share_affine), head.fc, head.conv, head.pool
    if head.conv is not None:
        view.conv_bn = _bn_view(head.conv_bn, share_affine)
    return view


@register_model("anytimenet-baseline")
class AnytimeNetBaseline(AnytimeNet):
    """BASELINE (Sec. III-A2): the final AnytimeNet network as one feed-forward BaseResNet with a
    single exit; `blocks` per section defaults to what the default schedule ends with (8, 8, 8)."""

    def __init__(self, num_classes: int, blocks: Sequence[int] = _final_blocks((1, 1, 1), DEFAULT_SCHEDULE),
                 widths: Sequence[int] = (16, 32, 64), bn_eps: float = BN_EPS, in_channels: int = 3) -> None:
        super().__init__(num_classes, widths=widths, initial_blocks=blocks, schedule=(), bn_eps=bn_eps,
                         in_channels=in_channels)
        self.config = dict(blocks=[int(n) for n in blocks], widths=[int(w) for w in widths],
                           bn_eps=float(bn_eps), in_channels=int(in_channels))
