"""Preprocessing declared in the bundle (format v2) and applied by the runtime: parity and errors."""

from __future__ import annotations

import doctest
import json
import shutil

import numpy as np
import pytest

import edge_anytime.manifest
import edge_anytime.preprocess
import edge_anytime.resize
from edge_anytime.errors import BundleError, FrameError
from edge_anytime.manifest import InputSpec, example_manifest, manifest_to_json, parse_manifest
from edge_anytime.preprocess import PreprocessOptions, Preprocessor
from edge_anytime.resize import exact_area
from tests.conftest import DEMO_BUNDLE, data_dir

SPEC = InputSpec("image", (1, 3, 32, 32), mean=(0.34, 0.31, 0.32), std=(0.27, 0.26, 0.27))


@pytest.fixture(scope="module")
def gtsrb_frames():
    from training.data import load_split

    x, y = load_split("gtsrb32", "test", data_dir=data_dir())
    return x[:64], y[:64]


def close(a, b, atol=1e-5):
    return np.allclose(a, b, rtol=0, atol=atol)


def upscale(image: np.ndarray, height: int = 720, width: int = 1280) -> np.ndarray:
    """Nearest-neighbour upscale (every output pixel copies one source pixel)."""
    rows = np.arange(height) * image.shape[0] // height
    cols = np.arange(width) * image.shape[1] // width
    return np.ascontiguousarray(image[rows][:, cols])


def reference(image: np.ndarray, spec: InputSpec = SPEC) -> np.ndarray:
    """The v1 code's formula on an RGB image of the input size."""
    mean = np.asarray(spec.mean, np.float32) * spec.scale
    std = np.asarray(spec.std, np.float32) * spec.scale
    scale, offset = (1.0 / std).astype(np.float32), (-mean / std).astype(np.float32)
    return np.ascontiguousarray((image.astype(np.float32) * scale + offset).transpose(2, 0, 1)[None])


@pytest.mark.parametrize("module", [edge_anytime.preprocess, edge_anytime.resize, edge_anytime.manifest])
def test_docstrings_run(module):
    assert doctest.testmod(module).failed == 0


def test_v1_manifest_is_migrated_to_today_behaviour():
    data = example_manifest()
    data["version"] = 1
    manifest = parse_manifest(data)
    spec = manifest.model.input
    assert manifest.version == 2 and (spec.color_order, spec.resize, spec.interpolation) == ("RGB", "exact", "area")
    written = manifest_to_json(manifest)
    assert written["version"] == 2 and written["model"]["input"]["resize"] == "exact"
    assert parse_manifest(written) == manifest


def test_v2_fields_round_trip_and_bad_values_name_the_field():
    data = example_manifest()
    data["model"]["input"].update(color_order="BGR", resize="center_crop", interpolation="bilinear")
    spec = parse_manifest(data).model.input
    assert (spec.color_order, spec.resize, spec.interpolation) == ("BGR", "center_crop", "bilinear")
    assert parse_manifest(manifest_to_json(parse_manifest(data))).model.input == spec
    for key, value in (("color_order", "RGBA"), ("resize", "fit"), ("interpolation", "cubic")):
        bad = example_manifest()
        bad["model"]["input"][key] = value
        with pytest.raises(BundleError, match=f"model.input.{key} must be one of"):
            parse_manifest(bad)


def test_shipped_v1_bundle_loads_as_exact_rgb():
    from edge_anytime.bundle import Bundle

    spec = Bundle.load(DEMO_BUNDLE, verify_hashes=False).model.input
    assert (spec.color_order, spec.resize) == ("RGB", "exact")


def test_exact_size_rgb_frames_are_bit_identical_to_v1(gtsrb_frames):
    x, _ = gtsrb_frames
    prepare = Preprocessor(SPEC)
    for image in x[:8]:
        assert np.array_equal(prepare(image), reference(image))
        assert np.array_equal(prepare(image[None]), reference(image))


def test_bgr_grey_and_rgba_frames_give_the_rgb_tensor(gtsrb_frames):
    image = gtsrb_frames[0][3]
    want = reference(image)
    assert close(Preprocessor(SPEC, PreprocessOptions(frame_order="BGR"))(image[..., ::-1].copy()), want)
    rgba = np.concatenate([image, np.full((32, 32, 1), 7, np.uint8)], axis=2)
    assert close(Preprocessor(SPEC)(rgba), want)
    bgra = np.concatenate([image[..., ::-1], np.zeros((32, 32, 1), np.uint8)], axis=2)
    assert close(Preprocessor(SPEC, PreprocessOptions(frame_order="BGR"))(bgra), want)
    grey = image[..., 1]
    out = Preprocessor(SPEC)(grey)
    assert close(out, reference(np.repeat(grey[:, :, None], 3, axis=2)))
    assert close(Preprocessor(SPEC)(grey[:, :, None]), out)


def test_bgr_model_gets_its_channels_swapped(gtsrb_frames):
    image = gtsrb_frames[0][5]
    bgr_spec = InputSpec("image", (1, 3, 32, 32), color_order="BGR")
    rgb_in = Preprocessor(bgr_spec)(image)
    assert close(rgb_in[0], image[..., ::-1].astype(np.float32).transpose(2, 0, 1) / 255)
    bgr_in = Preprocessor(bgr_spec, PreprocessOptions(frame_order="BGR"))(image[..., ::-1].copy())
    assert np.array_equal(bgr_in, rgb_in)


def test_stretch_area_of_an_upscaled_frame_gives_back_the_original(gtsrb_frames):
    """1280x720 made from a 32x32 image: each output pixel's 4x4 samples all fall in its own source pixel."""
    prepare = Preprocessor(SPEC, PreprocessOptions(resize="stretch", frame_order="BGR"))
    for image in gtsrb_frames[0][:16]:
        big_bgr = upscale(image)[..., ::-1].copy()
        assert close(prepare(big_bgr), reference(image), atol=1e-5)


def test_area_matches_the_full_box_filter_on_camera_like_frames(gtsrb_frames):
    """A 720p frame with detail at every scale (bilinear upscale + noise): the 16-sample area is within a few
    grey levels of the box filter over all ~900 pixels of each cell, and so is OpenCV's INTER_AREA."""
    rng = np.random.default_rng(1)
    spec = InputSpec("image", (1, 3, 32, 32), mean=(0, 0, 0), std=(1, 1, 1), scale=1.0)
    fast = Preprocessor(spec, PreprocessOptions(resize="stretch"))
    exact = Preprocessor(spec, PreprocessOptions(resize="stretch", max_taps=16))
    smooth = Preprocessor(InputSpec("image", (1, 3, 720, 1280), mean=(0, 0, 0), std=(1, 1, 1), scale=1.0,
                                    interpolation="bilinear"), PreprocessOptions(resize="stretch"))
    for image in gtsrb_frames[0][:8]:
        big = smooth(image)[0].transpose(1, 2, 0) + rng.normal(0, 8, (720, 1280, 3))
        big = np.clip(big, 0, 255).astype(np.uint8)
        truth = exact_area(big, (32, 32)).transpose(2, 0, 1)[None]
        assert np.abs(fast(big) - truth).mean() < 2.0 and np.abs(fast(big) - truth).max() < 12
        assert np.abs(exact(big) - truth).mean() < 1.0


def test_area_is_close_to_opencv_inter_area(gtsrb_frames):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (requirements/dev.txt) compares with INTER_AREA")
    spec = InputSpec("image", (1, 3, 32, 32), mean=(0, 0, 0), std=(1, 1, 1), scale=1.0)
    fast = Preprocessor(spec, PreprocessOptions(resize="stretch"))
    rng = np.random.default_rng(2)
    for image in gtsrb_frames[0][:8]:
        big = cv2.resize(image, (1280, 720), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        big = np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)
        ocv = cv2.resize(big, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32).transpose(2, 0, 1)[None]
        assert np.abs(fast(big) - ocv).mean() < 2.0


def test_integer_area_and_bilinear_match_opencv(gtsrb_frames):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (requirements/dev.txt) is the reference")
    spec = InputSpec("image", (1, 3, 32, 32), mean=(0, 0, 0), std=(1, 1, 1), scale=1.0)
    image = np.ascontiguousarray(np.tile(gtsrb_frames[0][7], (4, 3, 1)))        # 128x96: integer factors 4, 3
    area = Preprocessor(spec, PreprocessOptions(resize="stretch"))(image)[0].transpose(1, 2, 0)
    assert np.abs(area - cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)).max() <= 0.5
    linear = Preprocessor(spec, PreprocessOptions(resize="stretch", interpolation="bilinear"))
    big = upscale(gtsrb_frames[0][7], 50, 70)
    out = linear(big)[0].transpose(1, 2, 0)
    assert np.abs(out - cv2.resize(big, (32, 32), interpolation=cv2.INTER_LINEAR)).max() <= 1.0


def test_center_crop_drops_the_side_bars(gtsrb_frames):
    image = gtsrb_frames[0][9]
    square = upscale(image, 720, 720)
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[:, 280:1000] = square
    frame[:, :280] = 255
    cropped = Preprocessor(SPEC, PreprocessOptions(resize="center_crop"))(frame)
    assert close(cropped, reference(image), atol=1e-5)
    portrait = np.ascontiguousarray(frame.transpose(1, 0, 2))             # 1280x720: crops rows instead
    assert close(Preprocessor(SPEC, PreprocessOptions(resize="center_crop"))(portrait),
                       reference(image.transpose(1, 0, 2)), atol=1e-5)


def test_grey_model_takes_colour_frames_by_luma():
    spec = InputSpec("image", (1, 1, 4, 4), mean=(0,), std=(1,), scale=1.0, resize="stretch")
    frame = np.zeros((8, 8, 3), np.uint8)
    frame[..., 0] = 100
    assert close(Preprocessor(spec)(frame), 29.9)
    assert close(Preprocessor(spec, PreprocessOptions(frame_order="BGR"))(frame), 11.4)


@pytest.mark.parametrize("frame, message", [
    (np.zeros((720, 1280, 3), np.uint8), "resize policy is 'exact'.*--resize stretch"),
    (np.zeros((32, 32, 2), np.uint8), "C = 1 \\(grey\\), 3"),
    (np.zeros((2, 32, 32, 3), np.uint8), "shape"),
    (np.zeros((32, 32, 3), bool), "not numeric"),
    (np.full((64, 64, 3), np.nan, np.float32), "NaN"),
    ("frame", "numpy array"),
])
def test_bad_frames_are_refused_with_the_fix(frame, message):
    prepare = Preprocessor(SPEC) if "exact" in message else Preprocessor(SPEC, PreprocessOptions(resize="stretch"))
    with pytest.raises(FrameError, match=message):
        prepare(frame)


def test_bad_options_are_refused():
    with pytest.raises(FrameError, match="OpenCV frames are BGR"):
        PreprocessOptions(frame_order="bgr")
    with pytest.raises(FrameError, match="resize must be one of"):
        PreprocessOptions(resize="fit")


def test_controller_serves_720p_frames_of_a_v2_bundle(tmp_path, gtsrb_frames):
    """The controller's own `Preprocessor(model.input)` follows the manifest: the v1 bundle refuses a 720p frame
    with the fix, the same bundle declared `stretch` (v2) serves it with the label of the 32x32 frame."""
    from edge_anytime import Controller
    from edge_anytime.results import StopReason

    copy = tmp_path / "bundle"
    shutil.copytree(DEMO_BUNDLE, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["version"] = 2
    data["model"]["input"].update(color_order="RGB", resize="stretch", interpolation="area")
    (copy / "manifest.json").write_text(json.dumps(data))
    x, _ = gtsrb_frames
    big = upscale(x[0])
    with Controller.from_bundle(DEMO_BUNDLE) as ctrl:
        refused = ctrl.run(big, 1.0)
    assert refused.status is StopReason.NO_RESULT and "--resize stretch" in refused.error
    with Controller.from_bundle(copy) as ctrl:
        small = [ctrl.run(image, 1.0) for image in x[:10]]
        large = [ctrl.run(upscale(image), 1.0) for image in x[:10]]
    assert all(r.status is StopReason.FINAL for r in large)
    assert [r.label for r in large] == [r.label for r in small]


@pytest.mark.parametrize("shape, layout", [((1, 3, 32, 32), "NCHW"), ((1, 32, 32, 3), "NHWC"),
                                           ((1, 1, 16, 24), "NCHW"), ((1, 16, 24, 1), "NHWC")])
def test_uint8_frames_through_the_table_equal_the_arithmetic(shape, layout):
    channels = shape[1] if layout == "NCHW" else shape[3]
    spec = InputSpec("image", shape, layout=layout, mean=(0.3, 0.4, 0.5)[:channels],
                     std=(0.2, 0.25, 0.3)[:channels])
    pre = Preprocessor(spec)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (40, 40, channels), dtype=np.uint8)[3:3 + pre.raw_shape[0], 5:5 + pre.raw_shape[1]]
    tensor = pre(frame)                                         # a strided view, as a camera crop would be
    assert tensor.shape == shape and tensor.dtype == np.float32 and tensor.flags.c_contiguous
    assert np.array_equal(tensor, pre._finish(frame.astype(np.float32)))   # bit for bit
