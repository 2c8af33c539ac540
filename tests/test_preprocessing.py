"""Preprocessing units: normalisation, in-plane resampling, the case preprocessor and its inverse."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from samunet.dataset.image_io import read_case_images, read_label
from samunet.planning.fingerprint import compute_fingerprint
from samunet.planning.hardware import GIB, Hardware
from samunet.core.plans import ChannelNormalization
from samunet.planning.planner import plan
from samunet.preprocessing.case_preprocessor import _case_id_from_file, label_dtype, preprocess_case
from samunet.preprocessing.case_properties import CaseProperties
from samunet.preprocessing.inverse import restore_label_volume, restore_probabilities
from samunet.preprocessing.normalization import NormalizationError, normalize_channel, normalize_image
from samunet.preprocessing.resampling import resample_slices, resampled_shape
from samunet.core.records import SchemaError
from tests.fixtures_pipeline import write_structured_dataset

CPU = Hardware("cpu", 16 * GIB, 16 * GIB, 2, False)


@pytest.fixture(scope="module")
def boxes(tmp_path_factory):
    """A structured raw dataset (zero border, known label boxes; 2 mm slices, 0.5 mm pixels) and its plans."""
    folder = write_structured_dataset(tmp_path_factory.mktemp("pre") / "Dataset100_Boxes", num_cases=2,
                                      spacing=(2.0, 0.5, 0.5))
    plans = plan(compute_fingerprint(folder, progress=False), hardware=CPU, backbone="tiny")
    return folder, plans


def _case_files(folder, case_id="case_001"):
    return [folder / "imagesTr" / f"{case_id}_0000.nii.gz"], folder / "labelsTr" / f"{case_id}.nii.gz"


def test_ct_normalization_clips_then_uses_dataset_statistics():
    x = np.array([-2000.0, 0.0, 100.0, 5000.0], np.float32)
    scheme = ChannelNormalization(0, "CT", "ct", clip_low=-1000.0, clip_high=1000.0, mean=100.0, std=50.0)
    out, mean, std = normalize_channel(x, scheme)
    np.testing.assert_allclose(out, [(-1000 - 100) / 50, -2.0, 0.0, (1000 - 100) / 50])
    with pytest.raises(NormalizationError, match="clip_low"):
        normalize_channel(x, ChannelNormalization(0, "CT", "ct"))


def test_zscore_inside_the_nonzero_mask():
    rng = np.random.default_rng(0)
    x = np.zeros((10, 10), np.float32)
    x[2:8, 2:8] = rng.normal(50, 10, size=(6, 6))
    mask = x != 0
    out, mean, std = normalize_channel(x, ChannelNormalization(0, "MRI", "zscore", use_nonzero_mask=True), mask)
    assert np.all(out[~mask] == 0)
    assert out[mask].mean() == pytest.approx(0, abs=1e-5) and out[mask].std() == pytest.approx(1, rel=1e-4)
    whole, _, _ = normalize_channel(x, ChannelNormalization(0, "MRI", "zscore"), mask)
    assert whole.mean() == pytest.approx(0, abs=1e-5) and whole[~mask].min() < 0


def test_rgb_none_and_errors():
    img = np.array([[[0.0, 255.0]], [[51.0, 510.0]]], np.float32)
    out, _, _ = normalize_image(img, [ChannelNormalization(0, "R", "rgb"), ChannelNormalization(1, "x", "none")])
    np.testing.assert_allclose(out, [[[0.0, 1.0]], [[51.0, 510.0]]])
    with pytest.raises(NormalizationError, match="the image has 2"):
        normalize_image(img, [ChannelNormalization(0, "R", "rgb")])
    with pytest.raises(NormalizationError, match="unknown normalisation"):
        normalize_channel(img[0], ChannelNormalization(0, "x", "minmax"))


def test_resampled_shape_and_identity():
    assert resampled_shape([50, 40], [1.0, 1.0], [1.0, 1.0]) == [50, 40]
    assert resampled_shape([50, 40], [1.0, 0.5], [2.0, 1.0]) == [25, 20]
    assert resampled_shape([50, 40], [1.0, 1.0], [1.0004, 1.0]) == [50, 40]  # within tolerance: untouched
    x = np.zeros((3, 4, 5), np.float32)
    assert resample_slices(x, [4, 5], order=3) is x


def test_label_resampling_keeps_values_and_up_down_is_exact():
    rng = np.random.default_rng(1)
    seg = rng.integers(0, 4, size=(3, 7, 9)).astype(np.uint8)
    up = resample_slices(seg, [14, 18], order=0)
    assert up.dtype == np.uint8 and set(np.unique(up)) <= set(np.unique(seg))
    np.testing.assert_array_equal(resample_slices(up, [7, 9], order=0), seg)
    smooth = np.sin(np.linspace(0, 3, 40))[None, :, None] * np.ones((2, 40, 30), np.float32)
    back = resample_slices(resample_slices(smooth, [80, 60], order=3), [40, 30], order=3)
    np.testing.assert_allclose(back, smooth, atol=1e-2)


def test_preprocess_case_crops_normalises_and_inverts_exactly(boxes):
    folder, plans = boxes
    images, label_file = _case_files(folder)
    image, seg, props = preprocess_case(images, plans, label_file)
    original, _ = read_label(label_file)
    assert props.case_id == "case_001"
    assert props.crop_bbox == [[2, 4], [2, 18], [2, 14]]  # the zero border is cut away
    assert plans.slicing.transpose == [0, 1, 2]  # 2 mm slices on 0.5 mm pixels: z is the slicing axis
    assert image.shape == (1, 2, 16, 12) and image.dtype == np.float32
    assert image.mean() == pytest.approx(0, abs=1e-4)  # per-image z-score
    np.testing.assert_array_equal(seg, original[2:4, 2:18, 2:14])
    np.testing.assert_array_equal(restore_label_volume(seg, props), original)
    assert props.class_slices == {"1": [0, 1], "2": [1]} and props.foreground_slices == [0, 1]
    assert props.largest_foreground_slice in (0, 1)


def test_transposed_plans_invert_exactly(boxes):
    folder, plans = boxes
    plans = copy.deepcopy(plans)
    plans.slicing.transpose = [2, 0, 1]
    plans.resampling.target_spacing = [0.5, 2.0, 0.5]
    images, label_file = _case_files(folder)
    raw, _ = read_case_images(images)
    image, seg, props = preprocess_case(images, plans, label_file)
    original, _ = read_label(label_file)
    np.testing.assert_array_equal(seg, np.transpose(original[2:4, 2:18, 2:14], [2, 0, 1]))
    assert image.shape == (1, 12, 2, 16)
    np.testing.assert_array_equal(restore_label_volume(seg, props), original)
    probs = np.stack([(seg == k).astype(np.float32) for k in range(3)])
    np.testing.assert_array_equal(restore_probabilities(probs, props).argmax(0), original)
    assert raw.shape == (1, *original.shape)


def test_in_plane_resampling_and_its_inverse(boxes):
    folder, plans = boxes
    plans = copy.deepcopy(plans)
    plans.resampling.target_spacing = [2.0, 0.25, 0.25]  # twice the resolution
    images, label_file = _case_files(folder)
    image, seg, props = preprocess_case(images, plans, label_file)
    assert seg.shape == (2, 32, 24) and image.shape == (1, 2, 32, 24)
    assert props.resampled and props.spacing_after_resampling == [2.0, 0.25, 0.25]
    original, _ = read_label(label_file)
    np.testing.assert_array_equal(restore_label_volume(seg, props), original)  # nearest up x2, down x2
    probs = np.stack([(seg == k).astype(np.float32) for k in range(3)])
    restored = restore_probabilities(probs, props)
    assert restored.shape == (3, *original.shape)
    np.testing.assert_allclose(restored.sum(axis=0), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="preprocessed to"):
        restore_label_volume(seg[:, :10], props)


def test_inference_without_label(boxes):
    folder, plans = boxes
    images, _ = _case_files(folder)
    image, seg, props = preprocess_case(images, plans)
    assert seg is None and props.class_slices == {} and props.label_file is None
    assert image.shape == (1, *props.shape_after_resampling)


def test_case_properties_round_trip(boxes, tmp_path):
    folder, plans = boxes
    images, label_file = _case_files(folder)
    _, _, props = preprocess_case(images, plans, label_file)
    props.save(tmp_path / "case.json")
    assert CaseProperties.load(tmp_path / "case.json") == props
    assert props.geometry().shape == tuple(props.original_shape)
    data = props.to_dict()
    data["schema_version"] = 0
    with pytest.raises(SchemaError, match="schema_version"):
        CaseProperties.from_dict(data)


def test_label_dtype_and_case_ids(boxes):
    _, plans = boxes
    assert label_dtype(plans) == np.uint8
    many = copy.deepcopy(plans)
    many.labels = {"background": 0, "high": 300}
    assert label_dtype(many) == np.int16
    assert _case_id_from_file("/x/imagesTs/liver_12_0000.nii.gz", ".nii.gz") == "liver_12"
    assert _case_id_from_file("scan.png", ".png") == "scan"
