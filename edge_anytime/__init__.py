"""edge_anytime: anytime deep neural networks on embedded and edge targets.

A coarse answer early, better answers as time allows, and always an answer by
the deadline. The on-device runtime needs only numpy and one interpreter
(ai-edge-litert); training and conversion live in the separate `training`
package.

>>> import edge_anytime as ea
>>> with ea.Controller.from_bundle("deploy/bundles/gtsrb-resann") as ctrl:   # doctest: +SKIP
...     result = ctrl.run(frame, budget_s=0.003)
"""

from .bundle import Bundle
from .callbacks import Callbacks
from .clock import MonotonicClock, SimulatedClock
from .controller import Controller, load_controller
from .errors import BackendError, BundleError, EdgeAnytimeError, FrameError, MissingDependencyError, ProgramError
from .frame_job import FrameTicket
from .latency import EstimatorOptions
from .options import ControllerOptions, ControllerStats
from .program import Exit, GraphSignature, Port, Program, Step
from .results import ExitResult, FrameResult, Prediction, StopReason

__version__ = "0.1.0"

__all__ = [
    "BackendError", "Bundle", "BundleError", "Callbacks", "Controller", "ControllerOptions", "ControllerStats",
    "EdgeAnytimeError", "EstimatorOptions", "Exit", "ExitResult", "FrameError", "FrameResult", "FrameTicket",
    "GraphSignature", "MissingDependencyError", "MonotonicClock", "Port", "Prediction", "Program", "ProgramError",
    "SimulatedClock", "Step", "StopReason", "load_controller",
]
