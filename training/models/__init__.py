"""The anytime model zoo. Importing this package registers every architecture."""

from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
from . import resann  # noqa: F401
from . import anytimenet  # noqa: F401
from . import eann  # noqa: F401
from . import resnext  # noqa: F401
