"""The contract every anytime model follows.

An `AnytimeModel` is an `nn.Module` whose `forward(x)` returns a list with the
logits of every exit, in anytime order, and which describes itself as a stage
program with `stage_program(example)` (see training/stages.py). Hierarchical
models may also return coarse logits through `forward_coarse`.

>>> logits = model(torch.zeros(2, 3, 32, 32))        # doctest: +SKIP
>>> staged = model.stage_program(torch.zeros(1, 3, 32, 32))   # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import nn

from ..stages import StagedModel


class AnytimeModel(nn.Module):
    #: JSON-serialisable constructor arguments, stored in checkpoints so `create_model` can rebuild the model.
    config: dict

    @property
    def num_exits(self) -> int:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def stage_program(self, example: torch.Tensor) -> StagedModel:
        raise NotImplementedError
