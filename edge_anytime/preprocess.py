"""Frame checks and preprocessing, from a camera frame to the model input tensor.

Accepted frames: raw images `(H, W, C)` or `(1, H, W, C)` (uint8, or float in
[0, 255]), normalised with the bundle's mean/std; or an already preprocessed
float32 tensor of exactly the model input shape.

>>> from edge_anytime.manifest import InputSpec
>>> spec = InputSpec("image", (1, 3, 2, 2), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
>>> prepare = Preprocessor(spec)
>>> prepare(np.full((2, 2, 3), 255, np.uint8))[0, :, 0, 0]
array([1., 1., 1.], dtype=float32)
>>> prepare(np.zeros((3, 3, 3), np.uint8))
Traceback (most recent call last):
...
edge_anytime.errors.FrameError: frame has shape (3, 3, 3); expected a raw image (2, 2, 3) or (1, 2, 2, 3), or a preprocessed float32 tensor (1, 3, 2, 2)
"""

from __future__ import annotations

import numpy as np

from .errors import FrameError
from .manifest import InputSpec


class Preprocessor:
    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        if spec.layout == "NCHW":
            _, channels, height, width = spec.shape
        else:
            _, height, width, channels = spec.shape
        self.raw_shape = (height, width, channels)
        mean = np.asarray(spec.mean, np.float32) * spec.scale
        std = np.asarray(spec.std, np.float32) * spec.scale
        self._scale = (1.0 / std).astype(np.float32)
        self._offset = (-mean / std).astype(np.float32)

    def __call__(self, frame) -> np.ndarray:
        if not isinstance(frame, np.ndarray):
            raise FrameError(f"frame must be a numpy array, got {type(frame).__name__}")
        spec = self.spec
        if frame.shape == spec.shape and frame.dtype == np.float32:
            if not np.isfinite(frame).all():
                raise FrameError("frame contains NaN or inf; check the sensor/decoder before submitting it")
            return frame
        if frame.shape == self.raw_shape or frame.shape == (1, *self.raw_shape):
            if frame.dtype.kind not in "uif":
                raise FrameError(f"frame dtype {frame.dtype} is not numeric; send uint8 (0..255) or float32")
            image = frame.reshape(self.raw_shape)
            if frame.dtype.kind == "f" and not np.isfinite(image).all():
                raise FrameError("frame contains NaN or inf; check the sensor/decoder before submitting it")
            tensor = image.astype(np.float32) * self._scale + self._offset
            if spec.layout == "NCHW":
                tensor = tensor.transpose(2, 0, 1)
            return np.ascontiguousarray(tensor[None], dtype=np.float32)
        raise FrameError(f"frame has shape {tuple(frame.shape)}; expected a raw image {self.raw_shape} or "
                         f"{(1, *self.raw_shape)}, or a preprocessed float32 tensor {spec.shape}")
