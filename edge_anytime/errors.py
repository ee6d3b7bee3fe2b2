"""Exceptions of the runtime. Each message names the problem and, where there is one, the fix."""


class EdgeAnytimeError(Exception):
    """Base class of every error this package raises on purpose."""


class ProgramError(EdgeAnytimeError, ValueError):
    """The stage program is inconsistent (unknown tensor, shape mismatch, bad exit order)."""


class BundleError(EdgeAnytimeError, ValueError):
    """A bundle cannot be loaded: missing file, hash mismatch, bad manifest, unsupported version."""


class BackendError(EdgeAnytimeError, RuntimeError):
    """A backend failed to load or run a graph."""


class FrameError(EdgeAnytimeError, ValueError):
    """A frame or its budget is unusable (wrong shape or dtype, NaN, negative budget)."""


class MissingDependencyError(EdgeAnytimeError, ImportError):
    """An optional dependency is not installed; the message gives the install command."""


def require(module: str, extra: str):
    """Import an optional module lazily, or raise an error that names the install command.

    >>> require("json", "dev").__name__
    'json'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module!r} is not installed; install it with: pip install 'edge-anytime[{extra}]'"
        ) from exc
