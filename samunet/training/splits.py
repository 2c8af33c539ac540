"""Five folds by case (never by slice), identical to nnU-Net's ``splits_final.json``.

nnU-Net uses sklearn ``KFold(5, shuffle=True, random_state=12345)`` over the sorted case ids. That is
``idx = arange(n); RandomState(12345).shuffle(idx)`` followed by contiguous folds of ``n // 5`` cases, the
first ``n % 5`` folds one larger; each fold's lists come back in sorted order. Reproducing it exactly means
fold N holds the same cases in both tools, so results can be compared fold by fold.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from samunet.core.errors import SamunetUserError
from samunet.core.names import NUM_FOLDS, SPLITS_FILE
from samunet.utils.atomic import write_json
from samunet.utils.logs import get_logger

log = get_logger()

SPLIT_SEED = 12345


class SplitsError(SamunetUserError, ValueError):
    pass


def make_folds(case_ids: list[str], num_folds: int = NUM_FOLDS, seed: int = SPLIT_SEED) -> list[dict[str, list[str]]]:
    """nnU-Net's folds over ``case_ids`` (sorted first): ``[{"train": [...], "val": [...]}, ...]``."""
    keys = sorted(case_ids)
    if len(keys) < num_folds:
        raise SplitsError(f"{len(keys)} training case(s) cannot make {num_folds} folds; use fold 'all'")
    order = np.arange(len(keys))
    np.random.RandomState(seed).shuffle(order)
    sizes = [len(keys) // num_folds + (1 if i < len(keys) % num_folds else 0) for i in range(num_folds)]
    folds, start = [], 0
    for size in sizes:
        val_idx = set(order[start:start + size].tolist())
        start += size
        folds.append({
            "train": [k for i, k in enumerate(keys) if i not in val_idx],
            "val": [k for i, k in enumerate(keys) if i in val_idx],
        })
    return folds


def _validate(splits: object, case_ids: set[str], path: Path) -> list[dict[str, list[str]]]:
    if not isinstance(splits, list) or not splits:
        raise SplitsError(f"{path}: expected a non-empty list of {{'train': [...], 'val': [...]}} objects")
    for n, fold in enumerate(splits):
        if (not isinstance(fold, dict) or not isinstance(fold.get("train"), list)
                or not isinstance(fold.get("val"), list)):
            raise SplitsError(f"{path}: fold {n} must be an object with 'train' and 'val' lists")
        unknown = sorted((set(fold["train"]) | set(fold["val"])) - case_ids)
        if unknown:
            raise SplitsError(f"{path}: fold {n} names case(s) missing from the preprocessed data: {unknown[:5]}")
        overlap = sorted(set(fold["train"]) & set(fold["val"]))
        if overlap:
            raise SplitsError(f"{path}: fold {n} has case(s) in both train and val: {overlap[:5]}")
    return splits


def load_or_create_splits(preprocessed_dataset_folder: Path, case_ids: list[str],
                          write: bool = True) -> list[dict[str, list[str]]]:
    """Read ``splits_final.json``, writing nnU-Net's default folds first when it does not exist (``write``;
    otherwise they are only computed, e.g. on DDP ranks other than 0, which compute the same folds).

    An existing file is never rewritten: a user who edited it (or copied nnU-Net's) keeps those folds.
    """
    path = Path(preprocessed_dataset_folder) / SPLITS_FILE
    if path.is_file():
        try:
            splits = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SplitsError(f"{path}: not valid JSON ({e}); "
                              "fix it or delete it to regenerate the default folds") from None
        log.info("Using the existing folds in %s", path)
        return _validate(splits, set(case_ids), path)
    splits = make_folds(case_ids)
    if not write:
        return splits
    write_json(splits, path)
    log.info("Wrote %d folds over %d cases to %s", len(splits), len(case_ids), path)
    return splits


def fold_cases(splits: list[dict[str, list[str]]], fold: int | str, case_ids: list[str]) -> tuple[list[str], list[str]]:
    """(train, val) case ids of ``fold``. ``"all"`` trains on every case and validates on none (as nnU-Net)."""
    if fold == "all":
        return sorted(case_ids), []
    if not isinstance(fold, int) or not 0 <= fold < len(splits):
        raise SplitsError(f"fold {fold!r} does not exist: the splits have folds 0-{len(splits) - 1} (or use 'all')")
    return list(splits[fold]["train"]), list(splits[fold]["val"])


def parse_fold(text: str) -> int | str:
    """``"0"``..``"4"`` -> int, ``"all"`` -> ``"all"``; anything else is a clear error."""
    if text == "all":
        return "all"
    if text.isdigit():
        return int(text)
    raise SplitsError(f"fold must be a number (0-4) or 'all', got {text!r}")
