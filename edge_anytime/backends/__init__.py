"""Backends that run the graphs of a stage program; see base.py for the protocol."""

from .base import (Backend, GraphLoadSpec, GraphRunner, available_backends, check_outputs, create_backend,
                   register_backend)

__all__ = ["Backend", "GraphLoadSpec", "GraphRunner", "available_backends", "check_outputs", "create_backend",
           "register_backend"]
