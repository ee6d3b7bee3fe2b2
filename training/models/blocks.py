"""Small building blocks shared by the zoo models, and block counting on a stage program.

- `PreActBlock`: the full pre-activation residual unit of He et al. (ECCV 2016,
  "Identity mappings"), BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the input; where the
  shape changes, the shortcut subsamples and zero-pads channels ("type A"), as in
  AnytimeNet Sec. II-A ("the input is zero-padded before the addition").
- `ExitHead` (defined in heads.py, re-exported here): BN-ReLU-average pooling-Linear
  (global pooling by default: ResANN, adaloss App. B; I/IS-ResNeXt App. B; or to a
  k x k grid, optionally after a 3x3 conv), optionally with a second, coarse
  classifier for hierarchical anytime prediction (IS-ResNeXt Sec. 3.3).
- `cumulative_blocks` / `block_table`: how many blocks anytime mode has executed
  by each exit, read from the Program (AnytimeNet Table I).

>>> block = PreActBlock(16, 32, stride=2)
>>> tuple(block(torch.zeros(2, 16, 8, 8)).shape)
(2, 32, 4, 4)
>>> tuple(ExitHead(32, 10)(torch.zeros(2, 32, 4, 4)).shape)
(2, 10)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from edge_anytime.program import Program

from .heads import ExitHead  # noqa: F401  (re-exported: the zoo imports it from here)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False)


def pad_shortcut(x: torch.Tensor, out_channels: int, stride: int) -> torch.Tensor:
    """Type-A shortcut: subsample by `stride`, then append zero channels up to `out_channels`."""
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    extra = out_channels - x.shape[1]
    if extra > 0:
        x = F.pad(x, (0, 0, 0, 0, 0, extra))
    return x


class PreActBlock(nn.Module):
    """Full pre-activation residual unit: x + conv(relu(bn(conv(relu(bn(x)))))), type-A shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.out_channels, self.stride = out_channels, stride
        self.bn1 = nn.BatchNorm2d(in_channels, eps=bn_eps)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=bn_eps)
        self.conv2 = conv3x3(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.bn1(x)))
        h = self.conv2(F.relu(self.bn2(h)))
        return h + pad_shortcut(x, self.out_channels, self.stride)


def init_weights(model: nn.Module) -> None:
    """MSRA (He) normal init of convolutions (fan-out), BN scale 1 and shift 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@contextmanager
def tracing(model: nn.Module, example: torch.Tensor | None, in_channels: int) -> Iterator[torch.Tensor]:
    """For `stage_program`: eval mode while the builder runs the graphs (BN statistics untouched),
    the previous mode restored after; yields `example`, by default a zero 32x32 image."""
    was_training = model.training
    model.eval()
    try:
        yield torch.zeros(1, in_channels, 32, 32) if example is None else example
    finally:
        model.train(was_training)


def block_table(program: Program, graph_blocks: Mapping[str, Mapping[str, int]]) -> list[dict[str, int]]:
    """Blocks executed in anytime mode up to and including each exit, per column.

    `graph_blocks` maps a graph name to {column: blocks in that graph}, e.g.
    {"sec1_grp0": {"SEC 1": 1}}; graphs not listed count as zero blocks. Each
    step counts its graph's blocks again, so re-executed segments count each
    time they run (AnytimeNet Table I). Each row also has a "Total".
    """
    columns: list[str] = []
    for counts in graph_blocks.values():
        columns.extend(c for c in counts if c not in columns)
    running = dict.fromkeys(columns, 0)
    rows = []
    for segment in program.anytime_segments():
        for index in segment.steps:
            for column, n in graph_blocks.get(program.steps[index].graph, {}).items():
                running[column] += n
        rows.append({**running, "Total": sum(running.values())})
    return rows


def cumulative_blocks(program: Program, graph_blocks: Mapping[str, Mapping[str, int]]) -> list[int]:
    """Total blocks executed in anytime mode by each exit (the last column of `block_table`)."""
    return [row["Total"] for row in block_table(program, graph_blocks)]
