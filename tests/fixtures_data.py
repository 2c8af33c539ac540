"""Raw-dataset fixtures shared by every stage's tests.

Session-scoped: each dataset is built once per test run. Treat them as read-only; copy the folder
(``shutil.copytree``) before changing anything in it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from samunet.dataset.convert_msd import convert_msd_task, msd_cases
from samunet.dataset.image_io import Geometry, read_image, read_label, write_image, write_segmentation
from samunet.utils.atomic import read_json, write_json
from tests.conftest import HIPPOCAMPUS_SUBSET

HIPPOCAMPUS_SMALL_CASES = 8  # every case shipped in tests/data/Task04_Hippocampus


def first_hippocampus_case_ids(count: int) -> list[str]:
    """The first ``count`` training case ids of the shipped Hippocampus cases, sorted."""
    training, _ = msd_cases(HIPPOCAMPUS_SUBSET, read_json(HIPPOCAMPUS_SUBSET / "dataset.json"))
    return [case.case_id for case in training[:count]]


@pytest.fixture(scope="session")
def hippocampus_raw_small(tmp_path_factory) -> Path:
    """``Dataset004_Hippocampus`` raw folder with the 8 real Hippocampus cases of tests/data (sorted ids)."""
    root = tmp_path_factory.mktemp("raw_hippocampus")
    case_ids = first_hippocampus_case_ids(HIPPOCAMPUS_SMALL_CASES)
    return convert_msd_task(HIPPOCAMPUS_SUBSET, root, case_ids=case_ids, num_processes=1)


@pytest.fixture(scope="session")
def ct_example_raw(tmp_path_factory, ct_example) -> Path:
    """``Dataset005_ExampleCT`` raw folder: the TotalSegmentator CT as ``example_0000.nii.gz`` + its label.

    The label values present (41 classes among 1..117) are renumbered to consecutive 1..N and named
    ``class_1``..``class_N`` in that order, because labels must be consecutive (as in nnU-Net).
    """
    folder = tmp_path_factory.mktemp("raw_ct") / "Dataset005_ExampleCT"
    image, geometry = read_image(ct_example / "example_ct_sm.nii.gz")
    label, label_geometry = read_label(ct_example / "example_seg.nii.gz")
    present = np.unique(label)
    foreground = present[present != 0]
    lookup = np.zeros(int(present.max()) + 1, dtype=np.uint8)
    lookup[foreground] = np.arange(1, len(foreground) + 1)
    write_image(image, geometry, folder / "imagesTr" / "example_0000.nii.gz")
    write_segmentation(lookup[label], label_geometry, folder / "labelsTr" / "example.nii.gz")
    labels = {"background": 0, **{f"class_{i}": i for i in range(1, len(foreground) + 1)}}
    write_json(
        {
            "channel_names": {"0": "CT"},
            "labels": labels,
            "numTraining": 1,
            "file_ending": ".nii.gz",
            "name": "ExampleCT",
            "description": "TotalSegmentator example CT; labels are model output renumbered to 1..N",
            "licence": "Apache-2.0",
        },
        folder / "dataset.json",
    )
    return folder


def write_synthetic_dataset(
    folder: Path,
    num_cases: int = 2,
    shape: tuple[int, int, int] = (4, 8, 8),
    num_channels: int = 1,
    file_ending: str = ".nii.gz",
    labels: dict[str, int] | None = None,
    seed: int = 0,
) -> Path:
    """A tiny valid raw dataset (random images, labels 0..K-1) for tests that damage one thing at a time."""
    rng = np.random.default_rng(seed)
    labels = labels or {"background": 0, "a": 1, "b": 2}
    two_d = file_ending in (".png", ".jpg", ".jpeg", ".tif", ".tiff")
    spacing = (999.0, 1.0, 1.0) if two_d else (2.0, 0.8, 0.8)
    shape = (1, *shape[1:]) if two_d else shape
    geometry = Geometry(spacing, (0.0, 0.0, 0.0), np.eye(3).ravel(), shape)
    for i in range(num_cases):
        case_id = f"case_{i:03d}"
        for c in range(num_channels):
            image = rng.integers(0, 200, size=shape).astype(np.uint8 if two_d else np.float32)
            write_image(image, geometry, folder / "imagesTr" / f"{case_id}_{c:04d}{file_ending}")
        seg = rng.integers(0, max(labels.values()) + 1, size=shape)
        write_segmentation(seg, geometry, folder / "labelsTr" / f"{case_id}{file_ending}")
    dataset_json = {
        "channel_names": {str(c): f"channel{c}" for c in range(num_channels)},
        "labels": labels,
        "numTraining": num_cases,
        "file_ending": file_ending,
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder
