"""A 30 Hz perception loop with a hard per-frame deadline, written against the public API.

    .venv/bin/python examples/control_loop.py [--bundle deploy/bundles/gtsrb-resann] [--frames 90] [--deadline-ms 1.0]

Replays held-out GTSRB traffic-sign tracks (real camera sequences the model never trained on) as a
camera at 30 frames per second. Each frame must be classified within --deadline-ms of its capture;
the controller refines while time allows, callbacks report every refinement and every final answer
from the delivery thread, and the loop acts on whatever arrived by the deadline.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edge_anytime as ea  # noqa: E402
from training.data import gtsrb_val_tracks, load_split  # noqa: E402  (numpy + PIL: reading the dataset)


class Telemetry(ea.Callbacks):
    """Counts what the delivery thread hands over; never blocks inference."""

    def __init__(self) -> None:
        self.refinements = 0
        self.finals: Counter = Counter()
        self.misses = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def on_result(self, result: ea.ExitResult) -> None:
        with self.lock:
            self.refinements += 1

    def on_final(self, result: ea.FrameResult) -> None:
        with self.lock:
            self.finals[result.status.value] += 1

    def on_miss(self, result: ea.FrameResult) -> None:
        with self.lock:
            self.misses += 1

    def on_error(self, error: BaseException, context: str) -> None:
        with self.lock:
            self.errors.append(f"{context}: {error}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="deploy/bundles/gtsrb-resann")
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--deadline-ms", type=float, default=1.0, help="per-frame deadline after capture")
    args = parser.parse_args(argv)

    x, y = load_split("gtsrb32", "train")          # the held-out tracks live in the train file
    tracks = gtsrb_val_tracks()
    order = [i for start, stop, _ in tracks for i in range(start, stop)][: args.frames]

    telemetry = Telemetry()
    period = 1.0 / args.fps
    correct = coarse_correct = delivered = 0
    with ea.Controller.from_bundle(args.bundle, callbacks=telemetry) as ctrl:
        fine_to_coarse = ctrl.model.fine_to_coarse
        next_capture = ctrl.clock.now()
        for n, index in enumerate(order):
            ctrl.clock.sleep_until(next_capture)            # the camera delivers a frame
            capture = ctrl.clock.now()
            result = ctrl.run(x[index], deadline_s=capture + args.deadline_ms / 1e3)
            if result.best is not None:                      # act on whatever arrived in time
                delivered += 1
                correct += result.label == y[index]
                if fine_to_coarse:
                    coarse_correct += result.best.prediction.coarse_label == fine_to_coarse[y[index]]
            if n % 30 == 0:
                print(f"frame {n:4d} sign {int(y[index]):2d}: {result.status.value:9s} exit {result.exit_index} "
                      f"{result.label_name!r} conf {result.confidence or 0:.2f} "
                      f"(coarse {result.best.prediction.coarse_name if result.best else None!r}) "
                      f"in {(result.delivered_s - capture) * 1e3:.3f} ms")
            next_capture = capture + period
        ctrl.flush()
        stats = ctrl.stats()
    frames = len(order)
    print(f"{frames} frames at {args.fps:g} Hz, deadline {args.deadline_ms} ms after capture: "
          f"{delivered} answered in time, accuracy {correct / frames:.1%} (coarse {coarse_correct / frames:.1%}); "
          f"finals by status {dict(telemetry.finals)}, refinements {telemetry.refinements}, "
          f"misses {telemetry.misses}, callback errors {stats.callback_errors}")
    return 0 if not telemetry.errors else 1


if __name__ == "__main__":
    sys.exit(main())
