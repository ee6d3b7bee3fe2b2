"""The callback interface: subclass `Callbacks` and override what you need (no-op defaults).

All callbacks of a controller are called from ONE thread, the controller's
delivery thread ("edge-anytime-delivery"), in order; with a SimulatedClock
they are called from the thread that calls `run`/`submit`. An exception raised
by a callback is reported to `on_error` (context "callback:<name>") and
counted in `Controller.stats().callback_errors`; it never stops the controller.

>>> class Print(Callbacks):
...     def on_final(self, result):
...         print(result.frame_id, result.status.value, result.label_name)
"""

from __future__ import annotations

from .results import ExitResult, FrameResult


class Callbacks:
    def on_result(self, result: ExitResult) -> None:
        """Each refinement: an exit of a frame was computed in time."""

    def on_final(self, result: FrameResult) -> None:
        """Once per frame, by its deadline: the best result and why refinement stopped."""

    def on_miss(self, result: FrameResult) -> None:
        """A frame got no result by its deadline, or its result was handed over late."""

    def on_error(self, error: BaseException, context: str) -> None:
        """A problem that did not stop the controller: a rejected frame, a backend fault, a callback error."""


def call_back(callbacks_list, name: str, payload) -> int:
    """Call `name` on every Callbacks in `callbacks_list` (`on_error` takes (error, context)); an exception
    in user code is reported to that object's `on_error` and counted, never raised. Returns how many
    callbacks failed."""
    failed = 0
    for callbacks in callbacks_list:
        try:
            if name == "on_error":
                callbacks.on_error(*payload)
            else:
                getattr(callbacks, name)(payload)
        except Exception as exc:  # user code: report, count, carry on
            failed += 1
            if name != "on_error":
                try:
                    callbacks.on_error(exc, f"callback:{name}")
                except Exception:
                    failed += 1
    return failed
