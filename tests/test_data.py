"""training.data: packed-format loading, track-wise GTSRB validation split, seeded CIFAR split, errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from training import data
from training.data import DataError, load_split

REAL = Path(os.environ.get("EDGE_ANYTIME_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def fresh_cache():
    data.clear_cache()
    yield
    data.clear_cache()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    data.write_synthetic(root, "gtsrb32", tracks_per_class=3, test_per_class=2)
    data.write_synthetic(root, "cifar10", tracks_per_class=1, test_per_class=2)
    return root


def test_shapes_dtypes_and_partition(synthetic):
    x, y = load_split("gtsrb32", "trainval", synthetic)
    assert x.shape == (43 * 90, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    xt, yt = load_split("gtsrb32", "train", synthetic)
    xv, yv = load_split("gtsrb32", "val", synthetic)
    assert len(yt) + len(yv) == len(y)
    assert load_split("gtsrb32", "test", synthetic)[0].shape == (86, 32, 32, 3)
    assert not x.flags.writeable  # cached arrays are shared: read-only


def test_gtsrb_val_is_whole_tracks_with_no_overlap(synthetic):
    x, y = load_split("gtsrb32", "trainval", synthetic)
    tracks = data.gtsrb_tracks(synthetic)
    held = data.gtsrb_val_tracks(synthetic)
    assert len(tracks) == 43 * 3 and set(held) <= set(tracks)
    assert all(b - a == 30 and (y[a:b] == c).all() for a, b, c in held)
    # round(3 * 0.1) = 0, so at least one track per class is held out, and at least one stays in train
    assert sorted(c for *_, c in held) == list(range(43))
    val_index = np.concatenate([np.arange(a, b) for a, b, _ in held])
    train_index = np.setdiff1d(np.arange(len(y)), val_index)
    np.testing.assert_array_equal(load_split("gtsrb32", "val", synthetic)[0], x[val_index])
    np.testing.assert_array_equal(load_split("gtsrb32", "train", synthetic)[0], x[train_index])


def test_splits_are_deterministic_and_seeded(synthetic):
    first = data.gtsrb_val_tracks(synthetic)
    yc = load_split("cifar10", "val", synthetic)[1]
    data.clear_cache()
    assert data.gtsrb_val_tracks(synthetic) == first
    np.testing.assert_array_equal(load_split("cifar10", "val", synthetic)[1], yc)
    assert data.gtsrb_val_tracks(synthetic, seed=1) != first
    # CIFAR-10: stratified, 10% of each class's 30 images
    assert np.bincount(yc, minlength=10).tolist() == [3] * 10
    a = load_split("cifar10", "val", synthetic, seed=0)[0]
    b = load_split("cifar10", "val", synthetic, seed=1)[0]
    assert not np.array_equal(a, b)


def test_split_tracks_finds_a_short_track_in_the_middle():
    rng = np.random.default_rng(0)
    lengths = [30, 30, 29, 30]
    frames = np.concatenate([np.clip(rng.integers(0, 255, (1, 32, 32, 3)) + rng.normal(0, 3, (n, 32, 32, 3)), 0, 255)
                             for n in lengths]).astype(np.uint8)
    assert data.split_tracks(frames) == [(0, 30), (30, 60), (60, 89), (89, 119)]
    assert data.split_tracks(frames[:90]) == [(0, 30), (30, 60), (60, 90)]


def test_data_dir_resolution(monkeypatch, synthetic):
    monkeypatch.setenv("EDGE_ANYTIME_DATA", str(synthetic))
    assert data.default_data_dir() == synthetic
    assert len(load_split("cifar10", "test")[1]) == 20
    monkeypatch.delenv("EDGE_ANYTIME_DATA")
    assert data.default_data_dir() == Path(data.__file__).resolve().parents[2] / "shared" / "data"


def test_missing_data_names_the_fix(tmp_path):
    with pytest.raises(DataError) as err:
        load_split("gtsrb32", "test", tmp_path / "nowhere")
    message = str(err.value)
    assert "nowhere" in message and "--data-dir" in message and "EDGE_ANYTIME_DATA" in message


def _corrupt(tmp_path: Path, how: str) -> Path:
    root = tmp_path / how
    folder = root / "cifar10"
    x = np.zeros((5, 32, 32, 3), np.uint8)
    data.write_dataset(folder, "test", x, np.arange(5))
    chunk = folder / "x_test_000000.png"
    if how == "height":
        from PIL import Image
        Image.fromarray(np.zeros((40, 32, 3), np.uint8)).save(chunk)
    elif how == "labels":
        np.save(folder / "y_test.npy", np.zeros(7, np.uint8))
    elif how == "png":
        chunk.write_bytes(b"not a png at all")
    elif how == "gap":
        chunk.rename(folder / "x_test_000005.png")
    return root


@pytest.mark.parametrize("how,words", [("height", "multiple of 32"), ("labels", "7"), ("png", "cannot read"),
                                       ("gap", "missing")])
def test_corrupt_data_is_reported(tmp_path, how, words):
    root = _corrupt(tmp_path, how)
    with pytest.raises(DataError, match=words):
        load_split("cifar10", "test", root)


def test_metadata():
    info = data.dataset_info("gtsrb32")
    assert info.num_classes == 43 and info.class_names[14] == "stop"
    assert len(info.fine_to_coarse) == 43 and set(info.fine_to_coarse) == set(range(6))
    assert [info.fine_to_coarse[c] for c in (1, 9, 6, 38, 25, 14)] == [0, 1, 2, 3, 4, 5]
    assert data.dataset_info("cifar10").class_names[-1] == "truck"
    with pytest.raises(ValueError, match="cifar10"):
        data.dataset_info("mnist")


@pytest.mark.skipif(not (REAL / "gtsrb32").is_dir(), reason="real GTSRB not present")
def test_real_gtsrb_tracks_and_normalisation():
    x, y = load_split("gtsrb32", "trainval", REAL)
    assert x.shape == (39209, 32, 32, 3) and len(load_split("gtsrb32", "test", REAL)[1]) == 12630
    tracks = data.gtsrb_tracks(REAL)
    assert len(tracks) == 1307
    assert [t for t in tracks if t[1] - t[0] != 30] == [(33660, 33689, 33)]  # class 33 has 689 frames
    held = data.gtsrb_val_tracks(REAL)
    assert 0.09 < sum(b - a for a, b, _ in held) / len(y) < 0.11
    xt, _ = load_split("gtsrb32", "train", REAL)
    mean, std = data.channel_stats(xt)
    np.testing.assert_allclose(mean, data.DATASETS["gtsrb32"].mean, atol=1e-3)
    np.testing.assert_allclose(std, data.DATASETS["gtsrb32"].std, atol=1e-3)
