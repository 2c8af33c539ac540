"""Where each stage's files live: the path rules of the preprocessed and results folders.

``$SAMUNET_PREPROCESSED/DatasetXXX_Name/<plans_name>.json`` and ``<plans_name>/CASE_image.npy`` ...;
``$SAMUNET_RESULTS/DatasetXXX_Name/<adapter>__<plans_name>/fold_N/checkpoint_{final,best,latest}.safetensors``
"""
from __future__ import annotations

import re
from pathlib import Path

from samunet.core.errors import SamunetUserError
from samunet.core.names import (
    ALL_FOLD, CACHE_IMAGE_SUFFIX, CACHE_PROPERTIES_SUFFIX, CACHE_SEG_SUFFIX, CHECKPOINT_CHOICES, MODEL_FOLDER_SEPARATOR,
    checkpoint_file_name, fold_folder_name,
)
from samunet.core.paths import resolve_dataset_name, results_root

FOLD_RE = re.compile(r"^fold_(\d+|all)$")
Fold = int | str


class TrainedModelError(SamunetUserError, LookupError):
    """No usable trained model; the message names the folder and what is missing."""


def plans_file(preprocessed_dataset_folder: Path, plans_name: str) -> Path:
    """The plans ``samunet_plan`` writes: ``<preprocessed>/<dataset>/<plans_name>.json``."""
    return Path(preprocessed_dataset_folder) / f"{plans_name}.json"


def cache_folder(preprocessed_dataset_folder: Path, plans_name: str) -> Path:
    """The preprocessed 2D cache of one set of plans."""
    return Path(preprocessed_dataset_folder) / plans_name


def cache_files(folder: Path, case_id: str) -> tuple[Path, Path, Path]:
    """(image .npy, segmentation .npy, CaseProperties .json) of one case in a cache folder."""
    folder = Path(folder)
    return (folder / f"{case_id}{CACHE_IMAGE_SUFFIX}", folder / f"{case_id}{CACHE_SEG_SUFFIX}",
            folder / f"{case_id}{CACHE_PROPERTIES_SUFFIX}")


def cached_case_ids(folder: Path) -> list[str]:
    """Case ids with an image in a cache folder, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(CACHE_IMAGE_SUFFIX)] for p in folder.glob(f"*{CACHE_IMAGE_SUFFIX}")
                  if not p.name.startswith("."))


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


def fold_folder(model_folder: Path, fold: Fold) -> Path:
    return Path(model_folder) / fold_folder_name(fold)


def checkpoint_file(fold_folder: Path, checkpoint: str) -> Path:
    return Path(fold_folder) / checkpoint_file_name(checkpoint)


def folds_with_checkpoint(model_folder: Path, checkpoint: str) -> dict[Fold, Path]:
    """fold -> checkpoint file, for the folds that have ``checkpoint_<checkpoint>.safetensors``."""
    return {fold: checkpoint_file(folder, checkpoint) for fold, folder in fold_folders(model_folder).items()
            if checkpoint_file(folder, checkpoint).is_file()}


def describe_checkpoints(model_folder: Path) -> str:
    """"fold_0: best, latest; fold_1: latest" (for error messages saying what exists)."""
    parts = []
    for fold, folder in fold_folders(model_folder).items():
        names = [c for c in CHECKPOINT_CHOICES if checkpoint_file(folder, c).is_file()]
        parts.append(f"{fold_folder_name(fold)}: {', '.join(names) if names else 'no checkpoint'}")
    return "; ".join(parts) if parts else "no fold_N folders"
