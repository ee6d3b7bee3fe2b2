"""From a camera frame to the model input tensor, as the bundle declares it (numpy only).

The bundle's `model.input` says what the network expects: its size and layout,
its channel order (`color_order`, RGB or BGR), the normalisation
`((x / scale) - mean) / std`, and what to do with a frame of another size
(`resize`: `exact` refuses it, `stretch` resizes it, `center_crop` crops the
largest centred region of the input's aspect ratio first; `interpolation`:
`area`, `bilinear` or `nearest`). v1 bundles mean RGB and `exact`.

What a frame may be: `(H, W)`, `(H, W, C)` or `(1, H, W, C)`, any H and W, C = 1
(grey), 3 or 4 (alpha ignored), uint8 or float in [0, 255]. **Colour order of
the frames you pass**: RGB by default (PIL, most camera SDKs, the controller's
`run`); frames from OpenCV (`cv2.VideoCapture`, `cv2.imread`) are **BGR**: say so
with `PreprocessOptions(frame_order="BGR")` and the swap costs nothing. An
already preprocessed float32 tensor of exactly the model input shape passes
through unchanged.

Cost: the resize, colour swap, crop and alpha drop are one `numpy.take` of a
few samples per output pixel (edge_anytime.resize), so a 1280x720 frame costs
about as much as a 32x32 one (bench/bench_preprocess.py).

>>> from edge_anytime.manifest import InputSpec
>>> spec = InputSpec("image", (1, 3, 2, 2), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
>>> prepare = Preprocessor(spec)
>>> prepare(np.full((2, 2, 3), 255, np.uint8))[0, :, 0, 0]
array([1., 1., 1.], dtype=float32)
>>> prepare(np.zeros((3, 3, 3), np.uint8))
Traceback (most recent call last):
...
edge_anytime.errors.FrameError: frame has shape (3, 3, 3); expected a raw image (2, 2, 3) or (1, 2, 2, 3), or a preprocessed float32 tensor (1, 3, 2, 2); the bundle's resize policy is 'exact': resize frames yourself, or pass PreprocessOptions(resize='stretch') (serve: --resize stretch)
>>> stretch = Preprocessor(spec, PreprocessOptions(resize="stretch", frame_order="BGR"))
>>> bgr = np.zeros((720, 1280, 3), np.uint8); bgr[..., 2] = 255         # pure red, OpenCV order
>>> stretch(bgr)[0, :, 0, 0]                                              # R, G, B channels of the input
array([ 1., -1., -1.], dtype=float32)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FrameError
from .manifest import COLOR_ORDERS, INTERPOLATIONS, RESIZE_POLICIES, InputSpec
from .resize import ChannelMix, TapPlan, plan_resize

FRAME_ORDERS = COLOR_ORDERS
LUMA = {"R": 0.299, "G": 0.587, "B": 0.114}     # ITU-R BT.601, for colour frames into a grey model


@dataclass(frozen=True)
class PreprocessOptions:
    """How frames arrive (`frame_order`) and run-time overrides of the bundle's declaration.

    `resize` / `interpolation`: None keeps the bundle's; `max_taps`: samples per
    axis and output pixel for `area` (4 reads 16 per pixel; higher is closer to
    the full box filter and slower).
    """

    frame_order: str = "RGB"
    resize: str | None = None
    interpolation: str | None = None
    max_taps: int = 4

    def __post_init__(self) -> None:
        if self.frame_order not in FRAME_ORDERS:
            raise FrameError(f"frame_order must be one of {FRAME_ORDERS}, got {self.frame_order!r} "
                             f"(OpenCV frames are BGR, PIL frames RGB)")
        if self.resize is not None and self.resize not in RESIZE_POLICIES:
            raise FrameError(f"resize must be one of {RESIZE_POLICIES}, got {self.resize!r}")
        if self.interpolation is not None and self.interpolation not in INTERPOLATIONS:
            raise FrameError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if not 1 <= int(self.max_taps) <= 16:
            raise FrameError(f"max_taps must be 1..16, got {self.max_taps!r}")


def crop_box(height: int, width: int, out_height: int, out_width: int, policy: str) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the frame region that is resized to the model input.

    >>> crop_box(720, 1280, 32, 32, "center_crop")
    (0, 280, 720, 720)
    >>> crop_box(720, 1280, 32, 32, "stretch")
    (0, 0, 720, 1280)
    """
    if policy != "center_crop":
        return 0, 0, height, width
    if width * out_height > height * out_width:            # frame wider than the input: crop columns
        crop = max(1, round(height * out_width / out_height))
        return 0, (width - crop) // 2, height, crop
    crop = max(1, round(width * out_height / out_width))
    return (height - crop) // 2, 0, crop, width


class Preprocessor:
    """Callable: frame -> float32 model input tensor (raises FrameError naming the fix).

    Built by the controller as `Preprocessor(model.input)` (RGB frames); pass
    `PreprocessOptions(frame_order="BGR")` for OpenCV frames.
    """

    def __init__(self, spec: InputSpec, options: PreprocessOptions | None = None) -> None:
        self.spec = spec
        self.options = options or PreprocessOptions()
        if spec.layout == "NCHW":
            _, channels, height, width = spec.shape
        else:
            _, height, width, channels = spec.shape
        self.raw_shape = (height, width, channels)
        self.resize = self.options.resize or spec.resize
        self.interpolation = self.options.interpolation or spec.interpolation
        mean = np.asarray(spec.mean, np.float32) * spec.scale
        std = np.asarray(spec.std, np.float32) * spec.scale
        self._scale = (1.0 / std).astype(np.float32)
        self._offset = (-mean / std).astype(np.float32)
        self._same_order = channels == 1 or self.options.frame_order == spec.color_order
        self._plans: dict[tuple[int, ...], TapPlan] = {}
        # uint8 frames of the model's size: one table lookup per value, the same float32 arithmetic done once
        # per (channel, value) ahead of time (2.5x faster than converting and scaling the frame)
        values = np.arange(256, dtype=np.float32)
        self._table = np.concatenate([values * self._scale[c] + self._offset[c] for c in range(channels)])
        offsets = np.arange(channels, dtype=np.uint16) * 256     # the table offset of each value's channel
        self._table_offsets = (np.repeat(offsets, height * width) if spec.layout == "NCHW"
                               else np.tile(offsets, height * width))

    def __call__(self, frame) -> np.ndarray:
        if not isinstance(frame, np.ndarray):
            raise FrameError(f"frame must be a numpy array, got {type(frame).__name__}")
        spec = self.spec
        if frame.shape == spec.shape and frame.dtype == np.float32:
            if not np.isfinite(frame).all():
                raise FrameError("frame contains NaN or inf; check the sensor/decoder before submitting it")
            return frame
        image = self._as_hwc(frame)
        if image.dtype.kind not in "uif":
            raise FrameError(f"frame dtype {frame.dtype} is not numeric; send uint8 (0..255) or float32")
        if image.shape == self.raw_shape and self._same_order:     # v1's path: no resampling at all
            if image.dtype == np.uint8:
                return self._finish_uint8(image)
            if image.dtype.kind == "f" and not np.isfinite(image).all():
                raise FrameError("frame contains NaN or inf; check the sensor/decoder before submitting it")
            return self._finish(image.astype(np.float32))
        if image.shape[:2] != self.raw_shape[:2] and self.resize == "exact":
            raise FrameError(self._shape_message(frame) + "; the bundle's resize policy is 'exact': resize frames "
                             "yourself, or pass PreprocessOptions(resize='stretch') (serve: --resize stretch)")
        plan = self._plans.get(image.shape)
        if plan is None:
            if len(self._plans) >= 8:
                self._plans.clear()
            plan = self._plans[image.shape] = self._plan(image.shape)
        resized = plan.apply(np.ascontiguousarray(image))
        if image.dtype.kind == "f" and not np.isfinite(resized).all():
            raise FrameError("frame contains NaN or inf; check the sensor/decoder before submitting it")
        return self._finish(resized)

    def sample_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """(a mid-grey uint8 camera frame of the model's size, the input tensor it becomes): what the controller's
        warm-up runs, so that the path every camera frame takes is warm too (a first frame paid 30 us more for
        it). A model whose input is not an image gets its neutral tensor (the mean, normalised) twice."""
        neutral = np.zeros(self.spec.shape, np.float32)
        grey = np.full(self.raw_shape, 128, np.uint8)
        try:
            return grey, self(grey)
        except FrameError:
            return neutral, neutral

    # ------------------------------------------------------------------ helpers
    def _as_hwc(self, frame: np.ndarray) -> np.ndarray:
        image = frame[0] if frame.ndim == 4 and frame.shape[0] == 1 else frame
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape:
            raise FrameError(self._shape_message(frame) + "; a frame is (H, W), (H, W, C) or (1, H, W, C) with "
                             "C = 1 (grey), 3 (RGB/BGR) or 4 (alpha ignored)")
        if image.shape[2] != 1 and self.raw_shape[2] not in (1, 3):
            raise FrameError(f"the model input has {self.raw_shape[2]} channels; only grey or colour models take "
                             f"camera frames: pass a preprocessed float32 tensor {self.spec.shape}")
        return image

    def _shape_message(self, frame: np.ndarray) -> str:
        return (f"frame has shape {tuple(frame.shape)}; expected a raw image {self.raw_shape} or "
                f"{(1, *self.raw_shape)}, or a preprocessed float32 tensor {self.spec.shape}")

    def _channel_mix(self, frame_channels: int) -> ChannelMix:
        model_channels = self.raw_shape[2]
        if frame_channels == 1:
            return [[(0, 1.0)]] * model_channels
        order = self.options.frame_order
        if model_channels == 1:
            return [[(order.index(c), LUMA[c]) for c in "RGB"]]
        return [[(order.index(c), 1.0)] for c in self.spec.color_order]

    def _plan(self, shape: tuple[int, ...]) -> TapPlan:
        height, width = self.raw_shape[:2]
        box = crop_box(shape[0], shape[1], height, width, self.resize)
        return plan_resize(shape, box, (height, width), self._channel_mix(shape[2]), self.interpolation,
                           self.options.max_taps)

    def _finish_uint8(self, image: np.ndarray) -> np.ndarray:
        """A uint8 (H, W, C) frame of the model's size through the table: exactly what `_finish` computes."""
        if self.spec.layout == "NCHW":   # values in the tensor's order: channel planes
            planes = image.transpose(2, 0, 1).reshape(-1)
            return self._table.take(planes + self._table_offsets).reshape(self.spec.shape)
        return self._table.take(image.reshape(-1) + self._table_offsets).reshape(self.spec.shape)

    def _finish(self, image: np.ndarray) -> np.ndarray:
        tensor = image * self._scale + self._offset
        if self.spec.layout == "NCHW":
            tensor = tensor.transpose(2, 0, 1)
        return np.ascontiguousarray(tensor[None], dtype=np.float32)
