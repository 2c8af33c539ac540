"""Shared helpers for the training tests."""
from __future__ import annotations

import shutil
from pathlib import Path

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


ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
