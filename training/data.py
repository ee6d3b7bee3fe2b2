"""The packed datasets (GTSRB at 32x32, CIFAR-10): loading, validation splits, metadata.

numpy + Pillow only, so the simulator can import it without torch. Images come
back as uint8 NHWC arrays, labels as int64. The on-disk format is the one of
`shared/data/README.md`: vertical PNG mosaics `x_<part>_NNNNNN.png` of 32x32 RGB
images (NNNNNN = index of the chunk's first image) plus `y_<part>.npy`.

>>> x, y = load_split("gtsrb32", "train")                      # doctest: +SKIP
>>> x.shape, x.dtype, y.dtype                                  # doctest: +SKIP
((35219, 32, 32, 3), dtype('uint8'), dtype('int64'))
>>> start, stop, label = gtsrb_val_tracks()[0]                 # doctest: +SKIP

Splits: `train` and `val` partition the official training file (val = 10% by
default, held out by whole GTSRB tracks, or stratified and seeded for CIFAR-10),
`trainval` is the whole official training file, `test` the official test set.
Returned arrays are cached and read-only; copy them before changing them.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "trainval", "test")
IMAGE_SIZE = 32
TRACK_LENGTH = 30  # GTSRB: frames per physical sign track in the training file

GTSRB_CLASSES = (
    "speed limit 20", "speed limit 30", "speed limit 50", "speed limit 60", "speed limit 70",
    "speed limit 80", "end of speed limit 80", "speed limit 100", "speed limit 120", "no passing",
    "no passing for vehicles over 3.5 t", "right-of-way at the next intersection", "priority road",
    "yield", "stop", "no vehicles", "vehicles over 3.5 t prohibited", "no entry", "general caution",
    "dangerous curve left", "dangerous curve right", "double curve", "bumpy road", "slippery road",
    "road narrows on the right", "road work", "traffic signals", "pedestrians", "children crossing",
    "bicycles crossing", "beware of ice/snow", "wild animals crossing",
    "end of all speed and passing limits", "turn right ahead", "turn left ahead", "ahead only",
    "go straight or right", "go straight or left", "keep right", "keep left", "roundabout mandatory",
    "end of no passing", "end of no passing by vehicles over 3.5 t",
)

# The six natural GTSRB superclasses (Stallkamp et al. 2012, Fig. 1), by fine class id:
#   0 speed limits        0 1 2 3 4 5 7 8
#   1 other prohibitory   9 10 15 16
#   2 derestriction       6 32 41 42
#   3 mandatory           33 34 35 36 37 38 39 40
#   4 danger              11 18 19 20 21 22 23 24 25 26 27 28 29 30 31
#   5 unique signs        12 (priority road) 13 (yield) 14 (stop) 17 (no entry)
GTSRB_SUPERCLASSES = ("speed limits", "other prohibitory", "derestriction", "mandatory", "danger", "unique signs")
_GTSRB_GROUPS = ((0, 1, 2, 3, 4, 5, 7, 8), (9, 10, 15, 16), (6, 32, 41, 42), tuple(range(33, 41)),
                 (11,) + tuple(range(18, 32)), (12, 13, 14, 17))
GTSRB_FINE_TO_COARSE = tuple(next(g for g, ids in enumerate(_GTSRB_GROUPS) if c in ids) for c in range(43))

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata of one packed dataset. `mean`/`std` are per RGB channel on [0, 1] pixels."""

    name: str
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    superclass_names: tuple[str, ...] = ()
    fine_to_coarse: tuple[int, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# mean/std: computed by `channel_stats(load_split(name, "train")[0])` on the default
# train split (val_fraction=0.1, seed=0), i.e. without the held-out validation images.
DATASETS = {
    "gtsrb32": DatasetInfo("gtsrb32", GTSRB_CLASSES, (0.3409, 0.3133, 0.3229), (0.2767, 0.2661, 0.2727),
                           GTSRB_SUPERCLASSES, GTSRB_FINE_TO_COARSE),
    "cifar10": DatasetInfo("cifar10", CIFAR10_CLASSES, (0.4915, 0.4824, 0.4468), (0.2471, 0.2435, 0.2616)),
}


class DataError(RuntimeError):
    """The dataset is missing or damaged; the message names the path and the fix."""


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None


def default_data_dir() -> Path:
    """`EDGE_ANYTIME_DATA` if set, else `<repo>/../shared/data`."""
    env = os.environ.get("EDGE_ANYTIME_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    return Path(data_dir) if data_dir is not None else default_data_dir()


def validation_seed(seed: int, split_seed: int | None) -> int:
    """The seed of a run's train/validation split: `split_seed` (`--split-seed`), else the run's `seed`.

    >>> validation_seed(1, None), validation_seed(1, 0)
    (1, 0)
    """
    return int(seed) if split_seed is None else int(split_seed)


def load_split(dataset: str, split: str, data_dir: str | os.PathLike | None = None,
               val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8, N x 32 x 32 x 3) and labels (int64) of one split; cached, read-only."""
    dataset_info(dataset)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    root = str(resolve_data_dir(data_dir).resolve())
    return _load_split_cached(dataset, split, root, float(val_fraction), int(seed))


@functools.lru_cache(maxsize=16)
def _load_split_cached(dataset: str, split: str, root: str, val_fraction: float, seed: int):
    if split in ("test", "trainval"):
        return _load_part(dataset, "test" if split == "test" else "train", root)
    x, y = _load_part(dataset, "train", root)
    val = _val_indices(dataset, root, val_fraction, seed)
    mask = np.zeros(len(y), bool)
    mask[val] = True
    index = np.flatnonzero(mask if split == "val" else ~mask)
    return _readonly(x[index]), _readonly(y[index])


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


_CHUNK = re.compile(r"x_(train|test)_(\d{6})\.png$")


@functools.lru_cache(maxsize=8)
def _load_part(dataset: str, part: str, root: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    folder = Path(root) / dataset
    fix = "pass --data-dir DIR (the folder holding gtsrb32/ and cifar10/) or set EDGE_ANYTIME_DATA"
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} not found; {fix}")
    chunks = sorted(p for p in folder.iterdir() if _CHUNK.match(p.name) and _CHUNK.match(p.name).group(1) == part)
    labels_path = folder / f"y_{part}.npy"
    if not chunks or not labels_path.is_file():
        raise DataError(f"{folder} has no x_{part}_NNNNNN.png chunks or no y_{part}.npy; {fix}")
    images = []
    count = 0
    for path in chunks:
        first = int(_CHUNK.match(path.name).group(2))
        if first != count:
            raise DataError(f"chunk {path} starts at image {first} but the chunks before it hold {count} images "
                            f"(a chunk is missing or misnamed); re-copy {folder}")
        try:
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB") if img.mode != "RGB" else img)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise DataError(f"cannot read PNG chunk {path}: {err}; re-copy {folder}") from err
        if pixels.ndim != 3 or pixels.shape[1] != IMAGE_SIZE or pixels.shape[0] % IMAGE_SIZE:
            raise DataError(f"chunk {path} is {pixels.shape[1] if pixels.ndim > 1 else '?'} wide and "
                            f"{pixels.shape[0]} high; expected width 32 and a height that is a multiple of 32; "
                            f"re-copy {folder}")
        block = pixels.reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 3)
        images.append(block)
        count += len(block)
    try:
        labels = np.load(labels_path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read labels {labels_path}: {err}; re-copy {folder}") from err
    if labels.ndim != 1 or len(labels) != count:
        raise DataError(f"{labels_path} holds {labels.shape} labels but the chunks hold {count} images; "
                        f"re-copy {folder}")
    num_classes = dataset_info(dataset).num_classes
    labels = labels.astype(np.int64)
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{labels_path} has labels outside 0..{num_classes - 1}; re-copy {folder}")
    return _readonly(np.concatenate(images)), _readonly(labels)


def _val_indices(dataset: str, root: str, val_fraction: float, seed: int) -> np.ndarray:
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if dataset == "gtsrb32":
        tracks = _gtsrb_val_tracks(root, val_fraction, seed)
        return np.concatenate([np.arange(a, b) for a, b, _ in tracks] or [np.zeros(0, np.int64)])
    _, y = _load_part(dataset, "train", root)
    rng = np.random.default_rng(seed)
    picked = []
    for label in range(dataset_info(dataset).num_classes):
        members = np.flatnonzero(y == label)
        take = int(round(len(members) * val_fraction))
        picked.append(rng.permutation(members)[:take])
    return np.sort(np.concatenate(picked))


def gtsrb_tracks(data_dir: str | os.PathLike | None = None) -> list[tuple[int, int, int]]:
    """All (start, stop, class) tracks of the GTSRB training file, in file order."""
    return list(_gtsrb_tracks(str(resolve_data_dir(data_dir).resolve())))


def gtsrb_val_tracks(data_dir: str | os.PathLike | None = None, val_fraction: float = 0.1,
                     seed: int = 0) -> list[tuple[int, int, int]]:
    """The (start, stop, class) tracks of the training file held out for validation.

    The model never trains on them, so the simulator can replay them as camera streams.
    """
    return list(_gtsrb_val_tracks(str(resolve_data_dir(data_dir).resolve()), float(val_fraction), int(seed)))


@functools.lru_cache(maxsize=4)
def _gtsrb_tracks(root: str) -> tuple[tuple[int, int, int], ...]:
    x, y = _load_part("gtsrb32", "train", root)
    if np.any(np.diff(y) < 0):
        raise DataError(f"the GTSRB training labels in {root} are not sorted by class; tracks cannot be found")
    tracks = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        start = int(members[0])
        for a, b in split_tracks(x[start:start + len(members)]):
            tracks.append((start + a, start + b, int(label)))
    return tuple(tracks)


def split_tracks(frames: np.ndarray, length: int = TRACK_LENGTH) -> list[tuple[int, int]]:
    """Cut one class's frames into tracks of `length` frames.

    When the count is not a multiple of `length` (GTSRB class 33 has 689 frames: one
    track is 29 frames long), use ceil(n / length) tracks, each `length` or a frame
    shorter, and put the cuts where consecutive frames differ most (a new sign starts),
    found exactly by dynamic programming. Otherwise cut every `length` frames.
    """
    n = len(frames)
    count = -(-n // length)
    shortfall = count * length - n
    if shortfall == 0 or count <= 1:
        return [(i, min(i + length, n)) for i in range(0, n, length)]
    if shortfall > count:
        raise DataError(f"{n} frames cannot be cut into {count} tracks of about {length}")
    f = frames.astype(np.float32)
    jump = np.zeros(n + 1, np.float32)  # jump[i]: change between frame i-1 and frame i
    jump[1:n] = np.abs(f[1:] - f[:-1]).mean(axis=(1, 2, 3))
    # best[k][e]: best score with k tracks covering frames [0, e); track lengths in {length-1, length}
    best = [{0: 0.0}]
    back: list[dict[int, int]] = [{}]
    for k in range(1, count + 1):
        row, prev = {}, {}
        for e_prev, score in best[k - 1].items():
            for size in (length - 1, length):
                e = e_prev + size
                if e > n:
                    continue
                value = score + (jump[e] if e < n else 0.0)
                if e not in row or value > row[e]:
                    row[e], prev[e] = value, e_prev
        best.append(row)
        back.append(prev)
    cuts, e = [n], n
    for k in range(count, 0, -1):
        e = back[k][e]
        cuts.append(e)
    cuts.reverse()
    return list(zip(cuts[:-1], cuts[1:]))


@functools.lru_cache(maxsize=8)
def _gtsrb_val_tracks(root: str, val_fraction: float, seed: int) -> tuple[tuple[int, int, int], ...]:
    rng = np.random.default_rng(seed)
    tracks = _gtsrb_tracks(root)
    held = []
    for label in sorted({t[2] for t in tracks}):
        own = [t for t in tracks if t[2] == label]
        take = min(len(own) - 1, max(1, int(round(len(own) * val_fraction)))) if val_fraction > 0 else 0
        for i in sorted(rng.permutation(len(own))[:take]):
            held.append(own[i])
    return tuple(held)


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 NHWC images on the [0, 1] scale."""
    acc = np.zeros(3)
    acc2 = np.zeros(3)
    for i in range(0, len(x), 4096):
        block = x[i:i + 4096].astype(np.float64) / 255.0
        acc += block.sum(axis=(0, 1, 2))
        acc2 += (block ** 2).sum(axis=(0, 1, 2))
    n = len(x) * x.shape[1] * x.shape[2]
    mean = acc / n
    std = np.sqrt(acc2 / n - mean ** 2)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def write_dataset(folder: str | os.PathLike, part: str, x: np.ndarray, y: np.ndarray, chunk: int = 1000) -> None:
    """Write images/labels in the packed format (for subsets, tests and synthetic data).

    >>> write_dataset(tmp / "gtsrb32", "test", x, y)          # doctest: +SKIP
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x = np.asarray(x, np.uint8)
    for start in range(0, len(x), chunk):
        mosaic = x[start:start + chunk].reshape(-1, IMAGE_SIZE, 3)
        Image.fromarray(mosaic, "RGB").save(folder / f"x_{part}_{start:06d}.png")
    np.save(folder / f"y_{part}.npy", np.asarray(y, np.uint8), allow_pickle=False)


def write_synthetic(root: str | os.PathLike, dataset: str, tracks_per_class: int = 2, test_per_class: int = 4,
                    seed: int = 0) -> Path:
    """A tiny fake dataset in the packed format under `root/dataset` (tests, smoke runs without data).

    Training images come in tracks of 30 frames (one random texture per track plus frame noise),
    sorted by class like GTSRB; each class has its own mean colour, so a net can learn it.
    """
    rng = np.random.default_rng(seed)
    classes = dataset_info(dataset).num_classes
    colours = rng.integers(30, 226, size=(classes, 3))

    def frames(label: int, count: int) -> np.ndarray:
        texture = rng.normal(0, 25, size=(1, IMAGE_SIZE, IMAGE_SIZE, 3))
        noise = rng.normal(0, 5, size=(count, IMAGE_SIZE, IMAGE_SIZE, 3))
        return np.clip(colours[label] + texture + noise, 0, 255).astype(np.uint8)

    x_train = [frames(c, TRACK_LENGTH) for c in range(classes) for _ in range(tracks_per_class)]
    y_train = np.repeat(np.arange(classes), tracks_per_class * TRACK_LENGTH)
    x_test = [frames(c, 1) for c in range(classes) for _ in range(test_per_class)]
    y_test = np.repeat(np.arange(classes), test_per_class)
    folder = Path(root) / dataset
    write_dataset(folder, "train", np.concatenate(x_train), y_train)
    write_dataset(folder, "test", np.concatenate(x_test), y_test)
    return folder


def clear_cache() -> None:
    """Forget every cached array (after the files on disk changed)."""
    for fn in (_load_split_cached, _load_part, _gtsrb_tracks, _gtsrb_val_tracks):
        fn.cache_clear()
