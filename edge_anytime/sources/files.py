"""Recorded sources: .npz arrays and image folders (numpy only; PNG/JPEG through Pillow if installed)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .frames import SourceError, SourceFrame

FRAME_KEYS = ("frames", "images", "x", "input")
IMAGE_SUFFIXES = (".npy", ".ppm", ".pgm", ".pnm", ".png", ".jpg", ".jpeg", ".bmp")


def _first(data, keys, what: str, path: str, required: bool = True):
    for key in keys:
        if key in data:
            return data[key]
    if required:
        raise SourceError(f"{path}: no {what} array; store one of {list(keys)} (it has {sorted(data)})")
    return None


def npz_source(path: str, loop: int = 1, color_order: str = "RGB",
               clock: Callable[[], float] = time.perf_counter) -> Iterator[SourceFrame]:
    """Frames of an .npz (a recorded stream or a bundle's reference/self_test.npz); `loop` 0 repeats forever.

    Arrays: `frames`/`images`/`x`/`input`, optional per-frame `budget_ms`/`budget_s` and `labels`.
    """
    if not Path(path).is_file():
        raise SourceError(f"npz recording {path!r} does not exist; record one with numpy.savez(path, frames=...)")
    return _npz_frames(path, loop, color_order, clock)


def _npz_frames(path: str, loop: int, color_order: str, clock: Callable[[], float]) -> Iterator[SourceFrame]:
    with np.load(path, allow_pickle=False) as data:
        frames = _first(data, FRAME_KEYS, "frames", path)
        budgets = _first(data, ("budget_ms", "budgets_ms"), "", path, required=False)
        budgets = budgets / 1e3 if budgets is not None else _first(data, ("budget_s", "budgets_s"), "", path, False)
        labels = _first(data, ("labels", "y", "label"), "", path, required=False)
    if frames.ndim == 5 and frames.shape[1] == 1:          # (N, 1, C, H, W) preprocessed reference inputs
        frames = frames.astype(np.float32)
    count = 0
    while loop == 0 or count < loop:
        for i, frame in enumerate(frames):
            yield SourceFrame(frame, None if budgets is None else float(budgets[i]),
                              None if labels is None else int(labels[i]), f"{Path(path).name}[{i}]", clock(),
                              color_order)
        count += 1


def read_pnm(path: Path) -> np.ndarray:
    """A binary PPM (P6) or PGM (P5) image as uint8 HWC (GTSRB ships .ppm)."""
    data = path.read_bytes()
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    magic, width, height, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    if magic not in (b"P6", b"P5") or maxval > 255:
        raise SourceError(f"{path}: only 8-bit binary PPM (P6) / PGM (P5) are read natively")
    channels = 3 if magic == b"P6" else 1
    pixels = np.frombuffer(data, np.uint8, width * height * channels, pos + 1)
    return pixels.reshape(height, width, channels)


def load_image(path: Path) -> np.ndarray:
    """An image file as an RGB (or grey) uint8 array; .npy as stored."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix in (".ppm", ".pgm", ".pnm"):
        return read_pnm(path)
    from ..errors import MissingDependencyError

    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependencyError(f"{path.name}: reading {suffix} needs Pillow; install it with: "
                                     f"pip install pillow (or use .ppm/.pgm/.npy images)") from exc
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize to (height, width), grey -> RGB, alpha dropped (the v1 folder behaviour)."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[:, :, :3]
    if image.shape[:2] != (height, width):
        rows = (np.arange(height) * image.shape[0] // height)
        cols = (np.arange(width) * image.shape[1] // width)
        image = image[rows][:, cols]
    return np.ascontiguousarray(image)


def image_paths(folder: str) -> list[Path]:
    root = Path(folder)
    if root.is_file() and root.suffix.lower() in IMAGE_SUFFIXES:
        return [root]
    if not root.is_dir():
        raise SourceError(f"image folder {folder!r} does not exist")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SourceError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return paths


def folder_source(folder: str, loop: int = 1, clock: Callable[[], float] = time.perf_counter
                  ) -> Iterator[SourceFrame]:
    """Images of a folder (recursively, in name order), as stored: any size, RGB or grey."""
    return _folder_frames(image_paths(folder), loop, clock)


def _folder_frames(paths: list[Path], loop: int, clock: Callable[[], float]) -> Iterator[SourceFrame]:
    count = 0
    while loop == 0 or count < loop:
        for path in paths:
            image = load_image(path)
            yield SourceFrame(image, name=path.name, capture_s=clock())
        count += 1
