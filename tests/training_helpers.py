"""Shared helpers for the training tests (owner: training)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

DATASET = "Dataset004_Hippocampus"


def private_roots(ds, tmp_path: Path) -> dict[str, str]:
    """SAMUNET_* roots for one test: the shared raw data, a private copy of the preprocessed data (training
    writes splits_final.json there) and a fresh results folder."""
    preprocessed = tmp_path / "preprocessed"
    if not preprocessed.exists():
        shutil.copytree(ds.preprocessed, preprocessed)
    (tmp_path / "results").mkdir(exist_ok=True)
    return {"SAMUNET_RAW": str(ds.raw), "SAMUNET_PREPROCESSED": str(preprocessed),
            "SAMUNET_RESULTS": str(tmp_path / "results")}


def fold_folder(roots: dict[str, str], adapter: str, fold: str) -> Path:
    return Path(roots["SAMUNET_RESULTS"]) / DATASET / f"{adapter}__samunetPlans" / f"fold_{fold}"


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(autouse=True)
def single_thread():
    """The tiny test models are made of microsecond-sized ops: a second OpenMP thread only adds barriers, and on a
    busy machine each barrier can wait for a descheduled thread (measured: 0.06 s vs 0.8 s per step)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
