"""Planned and preprocessed datasets shared by the training, inference and evaluation tests.

``hippocampus_preprocessed`` (session scope) runs samunet's own fingerprint -> plan -> preprocess on the
8-case ``hippocampus_raw_small`` with backbone ``tiny``, once per test run. It does NOT leave
SAMUNET_* environment variables set (other tests point them elsewhere); a test that calls code reading
them does ``hippocampus_preprocessed.set_env(monkeypatch)``. Treat everything as read-only: copy the folder
(``shutil.copytree``) or ``copy.deepcopy(plans)`` before changing anything.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from samunet.core.names import DEFAULT_PLANS_NAME
from samunet.core.plans import Plans

ENV_VARS = ("SAMUNET_RAW", "SAMUNET_PREPROCESSED", "SAMUNET_RESULTS")


@dataclass(frozen=True)
class PreprocessedDataset:
    raw: Path  # SAMUNET_RAW root (holds dataset_name/)
    preprocessed: Path  # SAMUNET_PREPROCESSED root
    results: Path  # SAMUNET_RESULTS root (empty; point a test's own copy elsewhere if it writes much)
    dataset_name: str
    plans: Plans

    @property
    def dataset_folder(self) -> Path:
        """``$SAMUNET_PREPROCESSED/DatasetXXX``: dataset.json, dataset_fingerprint.json, the plans file."""
        return self.preprocessed / self.dataset_name

    @property
    def plans_path(self) -> Path:
        return self.dataset_folder / f"{self.plans.plans_name}.json"

    @property
    def cache_folder(self) -> Path:
        """``CASE_image.npy``, ``CASE_seg.npy``, ``CASE.json`` of every training case."""
        return self.dataset_folder / self.plans.plans_name

    @property
    def case_ids(self) -> list[str]:
        return sorted(p.name[: -len(".json")] for p in self.cache_folder.glob("*.json"))

    def env(self) -> dict[str, str]:
        return {"SAMUNET_RAW": str(self.raw), "SAMUNET_PREPROCESSED": str(self.preprocessed),
                "SAMUNET_RESULTS": str(self.results)}

    def set_env(self, monkeypatch) -> None:
        """Point the SAMUNET_* variables at these folders for one test (undone after it)."""
        for key, value in self.env().items():
            monkeypatch.setenv(key, value)


@contextmanager
def temporary_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables inside the block and restore the previous values after (session fixtures
    cannot use monkeypatch)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def plan_and_preprocess(raw_dataset_folder: Path, work_root: Path, backbone: str = "tiny",
                        plans_name: str = DEFAULT_PLANS_NAME) -> PreprocessedDataset:
    """Run samunet's plan + preprocess (one process, no progress bars) with fresh preprocessed/results roots."""
    from samunet.planning.cli import plan_dataset

    preprocessed, results = work_root / "preprocessed", work_root / "results"
    preprocessed.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    raw = raw_dataset_folder.parent
    dataset = PreprocessedDataset(raw, preprocessed, results, raw_dataset_folder.name, plans=None)  # type: ignore[arg-type]
    with temporary_env(dataset.env()):
        plans = plan_dataset(raw_dataset_folder.name, plans_name=plans_name, backbone=backbone, num_processes=1,
                             progress=False)
    return PreprocessedDataset(raw, preprocessed, results, raw_dataset_folder.name, plans)


@pytest.fixture(scope="session")
def hippocampus_preprocessed(hippocampus_raw_small, tmp_path_factory) -> PreprocessedDataset:
    """The 8 shipped Hippocampus cases planned (backbone ``tiny``) and preprocessed; see the module docstring."""
    return plan_and_preprocess(hippocampus_raw_small, tmp_path_factory.mktemp("hippocampus_pipeline"))


def write_structured_dataset(folder: Path, num_cases: int = 3, shape: tuple[int, int, int] = (6, 20, 16),
                             spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), channel_names=("MRI",),
                             zero_border: int = 2, seed: int = 0) -> Path:
    """A tiny raw dataset whose content is known: nonzero intensities inside a box ``zero_border`` voxels in
    from every side (zeros outside, so crop-to-nonzero removes the border), label 1 in a box inside it and
    label 2 on one slab. Case i shifts the label boxes by i voxels along x."""
    import json

    import numpy as np

    from samunet.dataset.image_io import Geometry, write_image, write_segmentation

    rng = np.random.default_rng(seed)
    geometry = Geometry(spacing, (0.0, 0.0, 0.0), np.eye(3).ravel(), shape)
    b = zero_border
    for i in range(num_cases):
        case_id = f"case_{i:03d}"
        for c, _ in enumerate(channel_names):
            image = np.zeros(shape, dtype=np.float32)
            image[b:shape[0] - b, b:shape[1] - b, b:shape[2] - b] = rng.uniform(10, 100, size=(
                shape[0] - 2 * b, shape[1] - 2 * b, shape[2] - 2 * b))
            write_image(image, geometry, folder / "imagesTr" / f"{case_id}_{c:04d}.nii.gz")
        seg = np.zeros(shape, dtype=np.uint8)
        seg[b:b + 2, b + 1:b + 6, b + i:b + i + 3] = 1
        seg[b + 1, b + 7:b + 9, b:b + 4] = 2
        write_segmentation(seg, geometry, folder / "labelsTr" / f"{case_id}.nii.gz")
    dataset_json = {"channel_names": {str(c): n for c, n in enumerate(channel_names)},
                    "labels": {"background": 0, "box": 1, "slab": 2}, "numTraining": num_cases,
                    "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder
