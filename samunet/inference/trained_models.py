"""Finding trained models in the results folder (layout written by samunet.training).

``$SAMUNET_RESULTS/DatasetXXX_Name/<adapter>__<plans_name>/fold_N/checkpoint_{final,best,latest}.safetensors``
"""
from __future__ import annotations

import re
from pathlib import Path

from samunet.paths import resolve_dataset_name, results_root

MODEL_FOLDER_SEPARATOR = "__"
FOLD_RE = re.compile(r"^fold_(\d+|all)$")
ALL_FOLD = "all"  # fold_all: trained on every case (nnU-Net's convention), no validation of its own
Fold = int | str
CHECKPOINT_CHOICES = ("final", "best", "latest")


class TrainedModelError(LookupError):
    """No usable trained model; the message names the folder and what is missing."""


def model_folder_name(adapter: str, plans_name: str) -> str:
    return f"{adapter}{MODEL_FOLDER_SEPARATOR}{plans_name}"


def dataset_results_folder(dataset: str | int) -> Path:
    return results_root() / resolve_dataset_name(dataset)


def model_folders(dataset_folder: Path, plans_name: str) -> dict[str, Path]:
    """adapter -> ``<adapter>__<plans_name>`` folder, for every adapter trained with these plans."""
    if not dataset_folder.is_dir():
        return {}
    suffix = MODEL_FOLDER_SEPARATOR + plans_name
    return {p.name[: -len(suffix)]: p for p in sorted(dataset_folder.iterdir())
            if p.is_dir() and p.name.endswith(suffix) and len(p.name) > len(suffix)}


def _fold_key(text: str) -> Fold:
    return ALL_FOLD if text == ALL_FOLD else int(text)


def fold_folders(model_folder: Path, include_all: bool = True) -> dict[Fold, Path]:
    """fold -> ``fold_N`` folder: numbered folds in order, then ``"all"`` for ``fold_all`` (if asked for)."""
    if not model_folder.is_dir():
        return {}
    found = {_fold_key(m.group(1)): p for p in model_folder.iterdir() if p.is_dir() and (m := FOLD_RE.match(p.name))}
    if not include_all:
        found.pop(ALL_FOLD, None)
    return dict(sorted(found.items(), key=lambda kv: (kv[0] == ALL_FOLD, kv[0] if kv[0] != ALL_FOLD else 0)))


def checkpoint_file(fold_folder: Path, checkpoint: str) -> Path:
    return fold_folder / f"checkpoint_{checkpoint}.safetensors"


def folds_with_checkpoint(model_folder: Path, checkpoint: str) -> dict[Fold, Path]:
    """fold -> checkpoint file, for the folds that have ``checkpoint_<checkpoint>.safetensors``."""
    return {fold: checkpoint_file(folder, checkpoint) for fold, folder in fold_folders(model_folder).items()
            if checkpoint_file(folder, checkpoint).is_file()}


def describe_checkpoints(model_folder: Path) -> str:
    """"fold_0: best, latest; fold_1: latest" (for error messages saying what exists)."""
    parts = []
    for fold, folder in fold_folders(model_folder).items():
        names = [c for c in CHECKPOINT_CHOICES if checkpoint_file(folder, c).is_file()]
        parts.append(f"fold_{fold}: {', '.join(names) if names else 'no checkpoint'}")
    return "; ".join(parts) if parts else "no fold_N folders"
