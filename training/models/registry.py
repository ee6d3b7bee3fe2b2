"""Model registry: every anytime architecture is registered by name and built by `create_model`.

>>> from training.models import create_model, list_models
>>> model = create_model("resann", num_classes=43)                 # doctest: +SKIP
>>> len(model(torch.zeros(2, 3, 32, 32)))                          # doctest: +SKIP
3
"""

from __future__ import annotations

import difflib
from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Class/function decorator that registers a model factory under `name`."""

    def decorate(factory):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = factory
        return factory

    return decorate


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered architecture; unknown names get an error that suggests the closest one."""
    try:
        factory = _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _MODELS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown architecture {name!r}.{hint} Registered: {', '.join(list_models())}") from None
    return factory(num_classes=num_classes, **kwargs)
