"""ResANN: a pre-activation ResNet for 32x32 inputs with anytime exits.

Blocks follow He et al. 2016, "Identity mappings in deep residual networks"
(BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the identity; a 1x1 projection of the
pre-activated input where the shape changes). Three sections of widths
(16, 32, 64) at 32x32, 16x16, 8x8. Each exit head is BN-ReLU-global average
pool-Linear by default, as the ResANNs of adaloss-hu-2019.md, appendix B;
`head_pool=k` pools to a k x k grid instead and `head_conv=c` adds a 3x3 conv of
c channels before the pooling (one int for every exit, or one per exit; see
heads.py), which keeps where things are for early exits. `head_boost=True` makes each
exit after the first refine the previous exit's logits (`BoostedHead`: its own head's logits
plus a learned multiple of the previous exit's), so a later exit starts from the earlier
answer instead of beside it; a list of one flag per exit boosts only those (the first
cannot be). By default there
is one exit at the end of each section; `exit_every=k` puts one after every k-th
block (and always one after the last).

The stage program has one "segment" graph per block group between exits (the
first also holds the input convolution) and one "head" graph per exit, in
anytime order: segment0, head0, segment1, head1, ...

>>> model = create_model("resann", num_classes=43)                       # doctest: +SKIP
>>> [t.shape[1] for t in model(torch.zeros(2, 3, 32, 32))]               # doctest: +SKIP
[43, 43, 43]
>>> staged = model.stage_program(torch.zeros(1, 3, 32, 32))              # doctest: +SKIP
>>> [s.name for s in staged.program.steps]                                # doctest: +SKIP
['segment0', 'head0', 'segment1', 'head1', 'segment2', 'head2']
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..stages import ProgramBuilder, StagedModel
from .base import AnytimeModel
from .blocks import init_weights
from .heads import BoostedHead, ExitHead, boost_flags, config_value, head_specs
from .registry import register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3 + shortcut (identity or 1x1 projection)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, bn_eps: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=bn_eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=bn_eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + identity


@register_model("resann")
class ResANN(AnytimeModel):
    """Pre-activation ResNet with exits; see the module docstring.

    Args:
        num_classes: classes of every exit.
        widths: channels of the three (or more) sections; each later section halves the resolution.
        blocks_per_section: residual blocks per section (an int, or one int per section).
        exit_every: None for one exit per section; k for an exit after every k-th block.
        bn_eps: BatchNorm epsilon (AnytimeNet used 1e-3).
        head_pool: exit heads pool to head_pool x head_pool (int, or one per exit); 1 = global pooling.
        head_conv: channels of a 3x3 conv in each exit head before pooling (int, or one per exit); 0 = none.
        head_boost: each exit after the first adds the previous exit's logits (scaled by a learned scalar) to its
            own (`heads.BoostedHead`); its head graph takes both tensors. A list: one flag per exit.
        head_boost_detach: a boosted exit's loss does not train the exit it refines (no gradient into its logits).
    """

    def __init__(self, num_classes: int, widths: Sequence[int] = (16, 32, 64),
                 blocks_per_section: int | Sequence[int] = 1, exit_every: int | None = None,
                 bn_eps: float = 1e-5, in_channels: int = 3, head_pool: int | Sequence[int] = 1,
                 head_conv: int | Sequence[int] = 0, head_boost: bool | Sequence[bool] = False,
                 head_boost_detach: bool = False) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        blocks = ([int(blocks_per_section)] * len(widths) if isinstance(blocks_per_section, int)
                  else [int(b) for b in blocks_per_section])
        if len(blocks) != len(widths) or min(blocks) < 1 or min(widths) < 1:
            raise ValueError(f"need one block count >= 1 per section: widths={widths}, blocks_per_section={blocks}")
        if exit_every is not None and int(exit_every) < 1:
            raise ValueError(f"exit_every must be >= 1 or None (one exit per section), got {exit_every}")
        self.config = {"num_classes": int(num_classes), "widths": widths,
                       "blocks_per_section": blocks_per_section if isinstance(blocks_per_section, int) else blocks,
                       "exit_every": None if exit_every is None else int(exit_every),
                       "bn_eps": float(bn_eps), "in_channels": int(in_channels),
                       "head_pool": config_value(head_pool), "head_conv": config_value(head_conv)}
        if head_boost:   # only when set: configs (and checkpoints) of unboosted models stay as they were
            self.config["head_boost"] = (True if isinstance(head_boost, bool)
                                         else [bool(flag) for flag in head_boost])
        if head_boost_detach:
            self.config["head_boost_detach"] = True

        layers: list[tuple[nn.Module, int, bool]] = []  # (block, out channels, ends a section)
        channels = widths[0]
        for section, (width, count) in enumerate(zip(widths, blocks)):
            for i in range(count):
                stride = 2 if section > 0 and i == 0 else 1
                layers.append((PreActBlock(channels, width, stride, bn_eps), width, i == count - 1))
                channels = width
        total = len(layers)
        if exit_every is None:
            exit_after = [i for i, (_, _, last) in enumerate(layers) if last]
        else:
            exit_after = sorted({i for i in range(total) if (i + 1) % int(exit_every) == 0} | {total - 1})

        specs = head_specs(head_pool, head_conv, len(exit_after))
        self.boosted = boost_flags(head_boost, len(exit_after))
        if head_boost_detach and not any(self.boosted):
            raise ValueError("head_boost_detach applies to boosted exits, and none is boosted; set head_boost too")
        self.segments = nn.ModuleList()
        self.heads = nn.ModuleList()
        start = 0
        for k, end in enumerate(exit_after):
            modules = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)] if k == 0 else []
            modules += [block for block, _, _ in layers[start:end + 1]]
            self.segments.append(nn.Sequential(*modules))
            pool, conv = specs[k]
            head = ExitHead(layers[end][1], num_classes, bn_eps, pool=pool, conv_channels=conv)
            self.heads.append(BoostedHead(head, head_boost_detach) if self.boosted[k] else head)
            start = end + 1
        init_weights(self)

    @property
    def num_exits(self) -> int:
        return len(self.heads)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = []
        for k, (segment, head) in enumerate(zip(self.segments, self.heads)):
            x = segment(x)
            logits.append(head(x, logits[-1]) if self.boosted[k] else head(x))
        return logits

    def stage_program(self, example: torch.Tensor | None = None) -> StagedModel:
        """Graphs segment<k> (features -> features) and head<k> (features -> logits), in anytime order.

        Traced in eval mode (so BatchNorm statistics are untouched); the model's mode is restored after.
        The graph modules are the model's own submodules (weights shared, not copied).
        """
        if example is None:
            example = torch.zeros(1, self.config["in_channels"], 32, 32)
        was_training = self.training
        self.eval()
        try:
            builder = ProgramBuilder("image", example)
            source = "image"
            for k, (segment, head) in enumerate(zip(self.segments, self.heads)):
                builder.step(f"segment{k}", f"segment{k}", segment, {"x": source}, {"y": f"feat{k}"})
                inputs = {"x": f"feat{k}"}
                if self.boosted[k]:
                    inputs["previous"] = f"logits{k - 1}"
                builder.step(f"head{k}", f"head{k}", head, inputs, {"logits": f"logits{k}"})
                source = f"feat{k}"
            return builder.build(exit_tensors=[f"logits{k}" for k in range(self.num_exits)])
        finally:
            self.train(was_training)
