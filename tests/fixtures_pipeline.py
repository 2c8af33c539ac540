"""Planned and preprocessed datasets shared by the training, inference and evaluation tests (owner: planning).

``hippocampus_preprocessed`` (session scope) runs samunet's own fingerprint -> plan -> preprocess on the
10-case ``hippocampus_raw_small`` with backbone ``tiny``, once per test run. It does NOT leave
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

from samunet.planning.plans import DEFAULT_PLANS_NAME, Plans

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
    """10 Hippocampus cases planned (backbone ``tiny``) and preprocessed; see the module docstring."""
    return plan_and_preprocess(hippocampus_raw_small, tmp_path_factory.mktemp("hippocampus_pipeline"))
