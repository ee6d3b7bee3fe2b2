"""EANN: a sequence of exponentially deepening anytime networks (Hu et al., adaloss Sec. 4,
Fig. 4, Prop. 4.1; ANN-SIEVE workshop paper Sec. 2 "EANN").

Each member is a small ResANN (adaloss App. B): a 3x3 conv, three sections of full
pre-activation residual units (widths c, 2c, 4c; the first unit of sections 2 and 3
halves the resolution, type-A zero-padded shortcut), and a BN-ReLU-GAP-Linear
predictor (`head_pool=k`: pooled to k x k, heads.py) every `exit_period` units (and
after the last unit). Member i has
`base_units * base**i` units per section (rounded half up), so depths grow by the base b
(default 2, as in the paper's n = 7, 13, 25). The members run in order and share
nothing but the image: the a-priori slice of a member's exit holds only that member's
steps. An exit's prediction is used only if it beats every earlier exit on the
validation set (Fig. 4): `select_exits(val_accuracies)` returns the kept exits, and
`stage_program(example, keep=...)` (or the `keep_exits` constructor argument, stored in
the config) builds the program with only those, dropping steps no kept exit needs.

`forward(x)` always returns every exit's logits (training and validation need all).

>>> select_exits([0.50, 0.62, 0.60, 0.70, 0.70])
[0, 1, 3]
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import torch
from torch import nn

from ..stages import ProgramBuilder, StagedModel
from .base import AnytimeModel
from .blocks import ExitHead, PreActBlock, conv3x3, init_weights, tracing
from .registry import register_model

__all__ = ["EANN", "ResANNMember", "select_exits"]


def select_exits(val_accuracies: Sequence[float]) -> list[int]:
    """Indices of the exits whose validation accuracy is strictly higher than that of every
    earlier exit (the first exit is always kept); the other exits' results are never used."""
    kept, best = [], float("-inf")
    for index, accuracy in enumerate(val_accuracies):
        if accuracy > best:
            kept.append(index)
            best = accuracy
    return kept


class ResANNMember(nn.Module):
    """One ResANN of the ensemble: stem, unit groups between exits, one head per exit."""

    def __init__(self, num_classes: int, units: int, width: int, exit_period: int, bn_eps: float,
                 in_channels: int, head_pool: int = 1) -> None:
        super().__init__()
        self.stem = conv3x3(in_channels, width)
        widths = [width * 2 ** s for s in range(3)]
        unit_list = []
        for s, w in enumerate(widths):
            for u in range(units):
                first = s > 0 and u == 0
                unit_list.append(PreActBlock(widths[s - 1] if first else w, w, 2 if first else 1, bn_eps))
        cuts = [u for u in range(exit_period, len(unit_list) + 1, exit_period)]
        if cuts[-1] != len(unit_list):
            cuts.append(len(unit_list))
        self.groups = nn.ModuleList(nn.Sequential(*unit_list[a:b]) for a, b in zip([0] + cuts[:-1], cuts))
        self.heads = nn.ModuleList(ExitHead(group[-1].out_channels, num_classes, bn_eps, pool=head_pool)
                                   for group in self.groups)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, logits = self.stem(x), []
        for group, head in zip(self.groups, self.heads):
            h = group(h)
            logits.append(head(h))
        return logits


@register_model("eann")
class EANN(AnytimeModel):
    """ResANNs of `base_units * base**i` units per section (rounded half up), i = 0..num_anns-1, run in order."""

    def __init__(self, num_classes: int, num_anns: int = 3, base: float = 2.0, base_units: int = 2,
                 width: int = 16, exit_period: int = 2, bn_eps: float = 1e-5, in_channels: int = 3,
                 keep_exits: Sequence[int] | None = None, head_pool: int = 1) -> None:
        super().__init__()
        if num_anns < 1 or base <= 1 or base_units < 1 or exit_period < 1:
            raise ValueError(f"EANN needs num_anns >= 1, base > 1, base_units >= 1 and exit_period >= 1; got "
                             f"num_anns={num_anns}, base={base}, base_units={base_units}, exit_period={exit_period}")
        self.units = [max(1, math.floor(base_units * base ** i + 0.5)) for i in range(num_anns)]
        self.anns = nn.ModuleList(ResANNMember(num_classes, n, width, exit_period, bn_eps, in_channels,
                                               int(head_pool)) for n in self.units)
        self.num_classes = num_classes
        self.keep_exits = None if keep_exits is None else self._check_keep(keep_exits)
        self.config = dict(num_anns=int(num_anns), base=float(base), base_units=int(base_units), width=int(width),
                           exit_period=int(exit_period), bn_eps=float(bn_eps), in_channels=int(in_channels),
                           keep_exits=self.keep_exits, head_pool=int(head_pool))
        init_weights(self)

    select_exits = staticmethod(select_exits)

    @property
    def num_exits(self) -> int:
        return sum(len(ann.heads) for ann in self.anns)

    def exit_owners(self) -> list[tuple[int, int]]:
        """(member, exit within member) of each exit, in order."""
        return [(a, e) for a, ann in enumerate(self.anns) for e in range(len(ann.heads))]

    def exit_groups(self) -> list[int]:
        """Exits per member, in order: the trainer weights each member's exits on their own
        (adaloss Sec. 4: every ANN of the ensemble has its own loss weights, final exit B_L = 1)."""
        return [len(ann.heads) for ann in self.anns]

    def _check_keep(self, keep: Sequence[int]) -> list[int]:
        keep = sorted({int(k) for k in keep})
        if not keep or keep[0] < 0 or keep[-1] >= self.num_exits:
            raise ValueError(f"keep={keep}: give a non-empty list of exits in 0..{self.num_exits - 1}, "
                             f"e.g. select_exits(val_accuracies)")
        return keep

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [logits for ann in self.anns for logits in ann(x)]

    def stage_program(self, example: torch.Tensor | None = None, keep: Sequence[int] | None = None) -> StagedModel:
        """Per member: stem, then unit group g and head g for each exit; with `keep` (default:
        `keep_exits`, else all) only the kept heads, and no steps after a member's last kept exit.
        Exits are named ann{a}_exit{e} after the member and its own exit."""
        keep = self.keep_exits if keep is None else keep
        kept = set(range(self.num_exits) if keep is None else self._check_keep(keep))
        with tracing(self, example, self.config["in_channels"]) as example:
            return self._build(ProgramBuilder("image", example), kept)

    def _build(self, builder: ProgramBuilder, kept: set[int]) -> StagedModel:
        owners = self.exit_owners()
        exits, names = [], []
        for a, ann in enumerate(self.anns):
            mine = [e for e, (owner, _) in enumerate(owners) if owner == a and e in kept]
            if not mine:
                continue
            last = owners[mine[-1]][1]
            builder.step(f"ann{a}_stem", f"ann{a}_stem", ann.stem, {"x": "image"}, {"y": f"ann{a}_f0"})
            for g in range(last + 1):
                builder.step(f"ann{a}_grp{g}", f"ann{a}_grp{g}", ann.groups[g], {"x": f"ann{a}_f{g}"},
                             {"y": f"ann{a}_f{g + 1}"})
                if owners.index((a, g)) in kept:
                    builder.step(f"ann{a}_head{g}", f"ann{a}_head{g}", ann.heads[g], {"x": f"ann{a}_f{g + 1}"},
                                 {"logits": f"ann{a}_logits{g}"})
                    exits.append(f"ann{a}_logits{g}")
                    names.append(f"ann{a}_exit{g}")
        staged = builder.build(exit_tensors=exits)
        program = replace(staged.program, exits=tuple(replace(e, name=n) for e, n in zip(staged.program.exits, names)))
        return StagedModel(program, staged.graph_modules)
