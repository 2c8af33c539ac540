"""Shared test fixtures. Real-data fixtures skip (saying why) only when ../shared/datasets is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = (REPO_ROOT / ".." / "shared" / "datasets").resolve()
HIPPOCAMPUS_TASK = SHARED_DATASETS / "Task04_Hippocampus"
CT_EXAMPLE = SHARED_DATASETS / "Example_CT_TotalSegmentator"

# fixtures that build real pipelines live in these modules (one owner each)
pytest_plugins = ["tests.fixtures_data", "tests.fixtures_pipeline", "tests.fixtures_models"]


@pytest.fixture
def hippocampus_task() -> Path:
    if not HIPPOCAMPUS_TASK.is_dir():
        pytest.skip(f"real-data test: {HIPPOCAMPUS_TASK} is absent (only developers and CI have ../shared/datasets)")
    return HIPPOCAMPUS_TASK


@pytest.fixture
def ct_example() -> Path:
    if not CT_EXAMPLE.is_dir():
        pytest.skip(f"real-data test: {CT_EXAMPLE} is absent (only developers and CI have ../shared/datasets)")
    return CT_EXAMPLE


@pytest.fixture
def samunet_dirs(tmp_path, monkeypatch) -> dict[str, Path]:
    """Point SAMUNET_RAW/PREPROCESSED/RESULTS at fresh folders under tmp_path."""
    dirs = {}
    for var, sub in (("SAMUNET_RAW", "raw"), ("SAMUNET_PREPROCESSED", "preprocessed"), ("SAMUNET_RESULTS", "results")):
        d = tmp_path / sub
        d.mkdir()
        monkeypatch.setenv(var, str(d))
        dirs[sub] = d
    return dirs


@pytest.fixture(scope="module")
def single_torch_thread():
    """Tiny test models are made of microsecond-sized ops: a second OpenMP thread only adds barriers, and on a
    busy machine each barrier can wait for a descheduled thread (measured up to 8-13x slower). Modules that run
    tiny models use it with ``pytestmark = pytest.mark.usefixtures("single_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
