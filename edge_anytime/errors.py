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


# What each extra of pyproject.toml installs, as commands that work from the package registry
# (edge-anytime itself is installed from a wheel or a checkout, not from the registry).
EXTRA_PACKAGES = {"serial": "pyserial", "tflite": "tflite-runtime", "base": "ai-edge-litert",
                  "litert": "ai-edge-litert", "video": "opencv-python-headless", "sim": "pillow matplotlib",
                  "train": "torch pillow tqdm", "convert": "-r requirements/convert.txt", "dev": "pytest"}
EXTRAS = ("tflite", "serial", "video", "train", "convert", "sim", "dev")   # [project.optional-dependencies]


def require(module: str, extra: str):
    """Import an optional module lazily, or raise an error that names the install command.

    >>> require("json", "dev").__name__
    'json'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        packages = EXTRA_PACKAGES.get(extra, extra)
        checkout = f" (from a source checkout: pip install '.[{extra}]')" if extra in EXTRAS else ""
        raise MissingDependencyError(f"{module!r} is not installed; install it with: pip install {packages}{checkout}"
                                     ) from exc
