"""End to end on real data: plan -> preprocess -> invert gives the original labels voxel for voxel."""
from __future__ import annotations

import numpy as np
import pytest

from samunet.dataset.dataset_json import DatasetInfo
from samunet.dataset.image_io import read_label
from samunet.core.plans import Plans
from samunet.preprocessing.case_properties import CaseProperties
from samunet.preprocessing.inverse import restore_label_volume, restore_probabilities
from tests.fixtures_pipeline import plan_and_preprocess


def _check_cache_inverts_exactly(dataset, raw_folder) -> None:
    cases = DatasetInfo.load(raw_folder).training_cases()
    assert dataset.case_ids == [c.case_id for c in cases]
    for case in cases:
        props = CaseProperties.load(dataset.cache_folder / f"{case.case_id}.json")
        image = np.load(dataset.cache_folder / f"{case.case_id}_image.npy", mmap_mode="r")
        seg = np.load(dataset.cache_folder / f"{case.case_id}_seg.npy")
        assert image.dtype == np.float32 and seg.dtype == np.uint8
        assert image.shape == (len(dataset.plans.normalization), *seg.shape)
        assert list(seg.shape) == props.shape_after_resampling
        original, _ = read_label(case.label_file)
        restored = restore_label_volume(seg, props)
        np.testing.assert_array_equal(restored, original)
        # class_slices lets training find foreground without reading labels: it must match the array
        for value, indices in props.class_slices.items():
            present = np.flatnonzero((seg == int(value)).reshape(seg.shape[0], -1).any(axis=1))
            assert indices == present.tolist()
        assert props.plans_sha256 == dataset.plans.sha256()


def test_hippocampus_plan_preprocess_invert(hippocampus_preprocessed, hippocampus_raw_small):
    dataset = hippocampus_preprocessed
    assert Plans.load(dataset.plans_path) == dataset.plans
    assert dataset.plans.model.backbone == "tiny"
    assert dataset.plans.normalization[0].scheme == "zscore"  # MRI
    assert dataset.plans.packing.mode == "neighbours"  # 1 mm isotropic volumes
    _check_cache_inverts_exactly(dataset, hippocampus_raw_small)


def test_hippocampus_probabilities_restore_to_original_grid(hippocampus_preprocessed, hippocampus_raw_small):
    dataset = hippocampus_preprocessed
    case_id = dataset.case_ids[0]
    props = CaseProperties.load(dataset.cache_folder / f"{case_id}.json")
    seg = np.load(dataset.cache_folder / f"{case_id}_seg.npy")
    one_hot = np.stack([(seg == k).astype(np.float32) for k in range(dataset.plans.num_classes)])
    probs = restore_probabilities(one_hot, props)
    original, _ = read_label(hippocampus_raw_small / "labelsTr" / f"{case_id}.nii.gz")
    assert probs.shape == (dataset.plans.num_classes, *original.shape)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-6)
    np.testing.assert_array_equal(probs.argmax(axis=0), original)


@pytest.mark.slow
def test_ct_example_plan_preprocess_invert(ct_example_raw, tmp_path):
    dataset = plan_and_preprocess(ct_example_raw, tmp_path)
    norm = dataset.plans.normalization[0]
    assert norm.scheme == "ct" and norm.clip_low < norm.clip_high
    assert len(dataset.plans.labels) == 42  # background + 41 classes
    image = np.load(dataset.cache_folder / "example_image.npy")
    # CT normalisation is one global transform: the clipped range maps to fixed bounds
    low, high = (norm.clip_low - norm.mean) / norm.std, (norm.clip_high - norm.mean) / norm.std
    assert image.min() >= low - 1e-4 and image.max() <= high + 1e-4
    props = CaseProperties.load(dataset.cache_folder / "example.json")
    assert len(props.class_slices) == 41
    _check_cache_inverts_exactly(dataset, ct_example_raw)
