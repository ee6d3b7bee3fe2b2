"""training.flops: hand-counted FLOPs (1 multiply-accumulate = 2 FLOPs), training mode left untouched."""

from __future__ import annotations

import torch
from torch import nn

from training.flops import count_flops


def test_conv_by_hand():
    conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
    assert count_flops(conv, (torch.zeros(1, 3, 32, 32),)) == 2 * 16 * 32 * 32 * 3 * 3 * 3
    strided = nn.Conv2d(8, 4, 3, stride=2, padding=1, groups=2)  # 16x16 -> 8x8, 4 inputs per group, + bias
    assert count_flops(strided, (torch.zeros(1, 8, 16, 16),)) == 2 * 4 * 8 * 8 * 4 * 9 + 4 * 8 * 8


def test_linear_batchnorm_pool_and_batch():
    assert count_flops(nn.Linear(10, 5), (torch.zeros(1, 10),)) == 2 * 10 * 5 + 5
    assert count_flops(nn.Linear(10, 5), (torch.zeros(3, 10),)) == 3 * (2 * 10 * 5 + 5)
    assert count_flops(nn.BatchNorm2d(16), (torch.zeros(1, 16, 8, 8),)) == 2 * 16 * 64
    assert count_flops(nn.AdaptiveAvgPool2d(1), (torch.zeros(1, 16, 8, 8),)) == 16 * 64
    assert count_flops(nn.MaxPool2d(2), (torch.zeros(1, 4, 8, 8),)) == 4 * 16 * 4
    head = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    assert count_flops(head, (torch.zeros(1, 4, 4, 4),)) == 2 * 64 + 64 + (2 * 4 * 2 + 2)


def test_counting_keeps_mode_and_running_stats():
    block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    before = block[1].running_mean.clone()
    count_flops(block, (torch.randn(1, 3, 8, 8) + 5,))
    assert block.training and block[1].training
    torch.testing.assert_close(block[1].running_mean, before)
    assert not any(m._forward_hooks for m in block.modules())
