"""Exit heads (classifiers on intermediate features), shared by every zoo family.

`ExitHead(channels, num_classes, pool=1, conv_channels=0)`:

    features -> BN-ReLU [-> conv3x3(conv_channels)-BN-ReLU] -> average pool to pool x pool -> flatten -> Linear

- `pool=1, conv_channels=0` is the classic BN-ReLU-global average pool-Linear head
  (ResANN, adaloss App. B; I/IS-ResNeXt App. B; AnytimeNet's OUT block).
- `pool=k > 1` keeps a coarse k x k grid of where things are: the Linear layer sees
  channels * k * k features instead of channels. Early exits sit on features with
  small receptive fields, where global pooling throws away the layout of a sign
  (its class is in the arrangement of parts, not in their presence).
- `conv_channels=c > 0` adds one 3x3 convolution (stride 1, c channels) before the
  pooling: a little more receptive field and mixing for an early exit.

The pool is an `nn.AdaptiveAvgPool2d` module, so `training/flops.py` counts it;
it exports to ONNX as GlobalAveragePool (k = 1) or AveragePool (k divides the
feature size, which `ExitHead` checks on the first call). Flatten is in NCHW order.

With `num_coarse > 0` a second classifier of the same shape (own BN, conv, Linear)
returns coarse logits too: `(fine, coarse)` (IS-ResNeXt Sec. 3.3).

`head_specs(pool, conv, n)` turns a family's `head_pool` / `head_conv` constructor
arguments (one int for every exit, or one per exit) into per-exit values.

>>> head = ExitHead(16, 43, pool=4)
>>> tuple(head(torch.zeros(2, 16, 32, 32)).shape), head.fc.in_features
((2, 43), 256)
>>> head_specs(4, 0, 3)
[(4, 0), (4, 0), (4, 0)]
>>> head_specs([4, 2, 1], [32, 0, 0], 3)
[(4, 32), (2, 0), (1, 0)]
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _per_exit(value: int | Sequence[int], n: int, name: str, minimum: int) -> list[int]:
    values = [int(value)] * n if isinstance(value, (int, float)) else [int(v) for v in value]
    if len(values) != n:
        raise ValueError(f"{name} needs one value per exit ({n} exits), got {list(values)}; "
                         f"pass a single int to use it for every exit")
    if min(values) < minimum:
        raise ValueError(f"{name} values must be >= {minimum}, got {values}")
    return values


def head_specs(pool: int | Sequence[int], conv: int | Sequence[int], num_exits: int) -> list[tuple[int, int]]:
    """(pool, conv_channels) per exit from an int (every exit) or a per-exit list."""
    return list(zip(_per_exit(pool, num_exits, "head_pool", 1), _per_exit(conv, num_exits, "head_conv", 0)))


def boost_flags(boost: bool | Sequence[bool], num_exits: int) -> list[bool]:
    """Which exits are `BoostedHead`s: `True` every exit after the first, or one flag per exit.

    >>> boost_flags(True, 3), boost_flags([0, 0, 1], 3)
    ([False, True, True], [False, False, True])
    """
    if isinstance(boost, (bool, int)):
        return [bool(boost) and k > 0 for k in range(num_exits)]
    flags = [bool(flag) for flag in boost]
    if len(flags) != num_exits:
        raise ValueError(f"head_boost needs one flag per exit ({num_exits} exits), got {list(boost)}; "
                         f"pass True to boost every exit after the first")
    if flags[0]:
        raise ValueError("head_boost: the first exit has no earlier exit to refine; its flag must be 0")
    return flags


def config_value(value: int | Sequence[int]) -> int | list[int]:
    """A head argument as stored in a model's JSON config (int stays int, sequences become lists)."""
    return int(value) if isinstance(value, (int, float)) else [int(v) for v in value]


def _classify(x: torch.Tensor, bn: nn.Module, conv: nn.Module | None, conv_bn: nn.Module | None,
              pool: nn.AdaptiveAvgPool2d, fc: nn.Linear) -> torch.Tensor:
    """BN-ReLU [conv-BN-ReLU] pool-flatten-Linear; see the module docstring."""
    grid = pool.output_size
    h, w = x.shape[-2:]
    if h % grid or w % grid:
        raise ValueError(f"exit head pool={grid} needs a feature map whose sides it divides, got {h}x{w}; "
                         f"choose a head_pool that divides {h} and {w}")
    x = F.relu(bn(x))
    if conv is not None:
        x = F.relu(conv_bn(conv(x)))
    return fc(torch.flatten(pool(x), 1))


def _layers(channels: int, num_classes: int, bn_eps: float, pool: int, conv_channels: int):
    conv = conv_bn = None
    if conv_channels:
        conv = nn.Conv2d(channels, conv_channels, 3, 1, 1, bias=False)
        conv_bn = nn.BatchNorm2d(conv_channels, eps=bn_eps)
    width = conv_channels or channels
    return (nn.BatchNorm2d(channels, eps=bn_eps), conv, conv_bn, nn.AdaptiveAvgPool2d(int(pool)),
            nn.Linear(width * int(pool) ** 2, num_classes))


class ExitHead(nn.Module):
    """An exit classifier (see the module docstring); parameter names bn/fc match the original
    global-pool head, so checkpoints of pool=1, conv_channels=0 heads load unchanged."""

    def __init__(self, in_channels: int, num_classes: int, bn_eps: float = 1e-5, num_coarse: int = 0,
                 pool: int = 1, conv_channels: int = 0) -> None:
        super().__init__()
        if int(pool) < 1 or int(conv_channels) < 0:
            raise ValueError(f"ExitHead needs pool >= 1 and conv_channels >= 0, got {pool}, {conv_channels}")
        self.bn, self.conv, self.conv_bn, self.pool, self.fc = _layers(in_channels, num_classes, bn_eps, pool,
                                                                      conv_channels)
        self.num_coarse = num_coarse
        if num_coarse:
            (self.coarse_bn, self.coarse_conv, self.coarse_conv_bn, self.coarse_pool,
             self.coarse_fc) = _layers(in_channels, num_coarse, bn_eps, pool, conv_channels)

    def forward(self, x: torch.Tensor):
        fine = _classify(x, self.bn, self.conv, self.conv_bn, self.pool, self.fc)
        if not self.num_coarse:
            return fine
        return fine, _classify(x, self.coarse_bn, self.coarse_conv, self.coarse_conv_bn, self.coarse_pool,
                               self.coarse_fc)

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("logits", "coarse") if self.num_coarse else ("logits",)


class BoostedHead(nn.Module):
    """An exit head that refines the previous exit's answer: `head(x) + scale * previous_logits`, `scale` a learned
    scalar starting at 1 (the later exit begins as the earlier one plus a correction, as in the "inline subnetwork
    collaboration" of Li et al., ICCV 2019). The exit's graph takes two inputs, the features and the previous
    exit's logits, so an a-priori slice to this exit also runs the earlier heads (`Program.apriori_plan`).
    `detach=True`: no gradient flows into `previous` (the earlier exit trains only on its own loss).

    >>> head = BoostedHead(ExitHead(16, 43, pool=4))
    >>> tuple(head(torch.zeros(2, 16, 8, 8), torch.ones(2, 43)).shape), float(head.scale)
    ((2, 43), 1.0)
    """

    def __init__(self, head: ExitHead, detach: bool = False) -> None:
        super().__init__()
        if head.num_coarse:
            raise ValueError("BoostedHead refines fine logits only; coarse exit heads are not boosted")
        self.head = head
        self.scale = nn.Parameter(torch.ones(()))
        self.detach = bool(detach)   # True: this exit's loss does not reach the earlier exit (it trains as unboosted)

    def forward(self, x: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        return self.head(x) + self.scale * (previous.detach() if self.detach else previous)
