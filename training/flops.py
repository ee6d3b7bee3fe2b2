"""Count the FLOPs of one forward pass with forward hooks.

Convention: one multiply-accumulate = 2 FLOPs; counted per call on the given
inputs (pass batch-1 examples to get per-image FLOPs, as `ProgramBuilder` does).

- Conv2d: 2 * out_elements * (in_channels / groups) * kh * kw, plus out_elements for a bias.
- Linear: 2 * out_elements * in_features, plus out_elements for a bias.
- BatchNorm (inference: a per-channel scale and shift): 2 * elements.
- Pooling (max/avg, adaptive too): one FLOP per window element per output.
- Functional ops (residual additions, ReLU, reshapes) are not modules and are not counted;
  for convolutional nets they are well under 1% of the total.

>>> count_flops(torch.nn.Conv2d(3, 16, 3, padding=1, bias=False), (torch.zeros(1, 3, 32, 32),))
884736
"""

from __future__ import annotations

import math

import torch
from torch import nn

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _conv(module: nn.Conv2d, inputs, output: torch.Tensor) -> int:
    kh, kw = module.kernel_size
    per_output = (module.in_channels // module.groups) * kh * kw
    flops = 2 * output.numel() * per_output
    return flops + (output.numel() if module.bias is not None else 0)


def _linear(module: nn.Linear, inputs, output: torch.Tensor) -> int:
    flops = 2 * output.numel() * module.in_features
    return flops + (output.numel() if module.bias is not None else 0)


def _batchnorm(module, inputs, output: torch.Tensor) -> int:
    return 2 * output.numel()


def _pool(module, inputs, output: torch.Tensor) -> int:
    x = inputs[0]
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        window = math.ceil(x.shape[-2] / output.shape[-2]) * math.ceil(x.shape[-1] / output.shape[-1])
    else:
        k = module.kernel_size
        window = k * k if isinstance(k, int) else k[0] * k[1]
    return output.numel() * window


def _rule(module: nn.Module):
    if isinstance(module, nn.Conv2d):
        return _conv
    if isinstance(module, nn.Linear):
        return _linear
    if isinstance(module, _BATCHNORMS):
        return _batchnorm
    if isinstance(module, _POOLS):
        return _pool
    return None


def count_flops(module: nn.Module, inputs: tuple) -> int:
    """FLOPs of `module(*inputs)`; runs it once in eval mode (running stats untouched)."""
    total = 0

    def hook(rule):
        def record(mod, args, output):
            nonlocal total
            total += int(rule(mod, args, output))
        return record

    handles = []
    modes = {m: m.training for m in module.modules()}
    for sub in module.modules():
        rule = _rule(sub)
        if rule is not None:
            handles.append(sub.register_forward_hook(hook(rule)))
    try:
        module.eval()
        with torch.no_grad():
            module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        for sub, mode in modes.items():
            sub.training = mode
    return total
