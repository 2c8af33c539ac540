"""Dataset fingerprint: per-case geometry, per-class slices and extents, sampled intensity statistics."""
from __future__ import annotations

import numpy as np
import pytest

from samunet.dataset.image_io import read_case_images, read_label
from samunet.preprocessing.bounding_box import bbox_of
from samunet.planning.fingerprint import (DatasetFingerprint, FingerprintError, class_statistics,
                                          compute_fingerprint, fingerprint_sha256, runs_of, sample_foreground)
from samunet.core.records import SchemaError
from tests.fixtures_pipeline import write_structured_dataset


@pytest.fixture(scope="module")
def structured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fp") / "Dataset100_Boxes"
    return write_structured_dataset(folder, num_cases=3, spacing=(2.0, 0.5, 0.5))


@pytest.fixture(scope="module")
def fingerprint(structured):
    return compute_fingerprint(structured, num_processes=1, progress=False)


def test_runs_and_bbox():
    assert runs_of(np.array([0, 1, 1, 0, 1, 0, 0, 1], bool)) == [[1, 3], [4, 5], [7, 8]]
    assert runs_of(np.zeros(4, bool)) == []
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3, 2, 0:6] = True
    assert bbox_of(mask) == [[1, 3], [2, 3], [0, 6]]
    assert bbox_of(np.zeros((2, 2), bool)) is None


def test_class_statistics_counts_extents_and_slices_per_axis():
    label = np.zeros((5, 6, 7), np.uint8)
    label[1:3, 2:5, 0:2] = 1
    label[4, 0, 6] = 1  # a second, separate piece of class 1
    label[0, 5, 3:5] = 3  # values need not be consecutive
    stats = class_statistics(label)
    assert set(stats) == {"1", "3"}
    one = stats["1"]
    assert one.voxels == 2 * 3 * 2 + 1
    assert one.extent == [4, 5, 7]  # bounding box spans both pieces
    assert one.slice_runs == [[[1, 3], [4, 5]], [[0, 1], [2, 5]], [[0, 2], [6, 7]]]
    assert one.slice_count(0) == 3
    assert stats["3"].slice_runs == [[[0, 1]], [[5, 6]], [[3, 5]]]


def test_sampling_is_seeded_and_capped():
    image = np.random.default_rng(0).normal(size=(2, 10, 10, 10)).astype(np.float32)
    mask = image[0] > 0
    a = sample_foreground(image, mask, 50, seed=7)
    b = sample_foreground(image, mask, 50, seed=7)
    assert a.shape == (2, 50)
    np.testing.assert_array_equal(a, b)
    everything = sample_foreground(image, mask, 10**6, seed=7)
    assert everything.shape == (2, int(mask.sum()))


def test_case_geometry_and_crop(fingerprint, structured):
    assert [c.case_id for c in fingerprint.cases] == ["case_000", "case_001", "case_002"]
    case = fingerprint.cases[1]
    assert case.shape == [6, 20, 16] and case.spacing == [2.0, 0.5, 0.5]
    assert case.nonzero_bbox == [[2, 4], [2, 18], [2, 14]]
    assert case.shape_after_crop == [2, 16, 12]
    label, _ = read_label(structured / "labelsTr" / "case_001.nii.gz")
    assert case.foreground_bbox == bbox_of(label > 0)
    assert case.classes["1"].voxels == int((label == 1).sum())
    assert case.classes["1"].slice_runs[2] == [[3, 6]]  # shifted by the case index along x
    assert fingerprint.mean_crop_volume_reduction == pytest.approx(1 - (2 * 16 * 12) / (6 * 20 * 16))


def test_intensity_statistics_match_foreground_voxels(fingerprint, structured):
    # fewer foreground voxels than samples per case: every foreground voxel is used, so statistics are exact
    values = []
    for case in fingerprint.cases:
        image, _ = read_case_images([structured / "imagesTr" / f"{case.case_id}_0000.nii.gz"])
        label, _ = read_label(structured / "labelsTr" / f"{case.case_id}.nii.gz")
        values.append(image[0][label > 0])
    values = np.concatenate(values)
    stats = fingerprint.intensities[0]
    assert stats.name == "MRI" and stats.num_samples == values.size
    assert stats.mean == pytest.approx(values.mean(), rel=1e-5)
    assert stats.std == pytest.approx(values.std(), rel=1e-4)
    assert stats.percentile_99_5 == pytest.approx(np.percentile(values, 99.5), rel=1e-5)
    assert stats.min == pytest.approx(values.min()) and stats.max == pytest.approx(values.max())


def test_class_summary(fingerprint):
    assert set(fingerprint.classes) == {"1", "2"}
    box = fingerprint.classes["1"]
    assert box.name == "box" and box.cases == ["case_000", "case_001", "case_002"]
    assert box.median_extent == [2.0, 5.0, 3.0]
    assert box.median_extent_mm == [4.0, 2.5, 1.5]


def test_json_round_trip_and_schema_check(fingerprint, tmp_path):
    path = tmp_path / "dataset_fingerprint.json"
    fingerprint.save(path)
    loaded = DatasetFingerprint.load(path)
    assert loaded == fingerprint
    assert fingerprint_sha256(loaded) == fingerprint_sha256(fingerprint)
    data = fingerprint.to_dict()
    data["schema_version"] = 99
    with pytest.raises(SchemaError, match="schema_version"):
        DatasetFingerprint.from_dict(data)


def test_worker_processes_give_the_same_fingerprint(structured, fingerprint):
    assert compute_fingerprint(structured, num_processes=2, progress=False) == fingerprint


def test_unreadable_case_is_named(structured, tmp_path):
    import shutil

    broken = shutil.copytree(structured, tmp_path / "Dataset101_Broken")
    (broken / "imagesTr" / "case_002_0000.nii.gz").write_bytes(b"not an image")
    with pytest.raises(FingerprintError, match="case_002"):
        compute_fingerprint(broken, num_processes=1, progress=False)
