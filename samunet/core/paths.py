"""Where samunet reads and writes: the three folders nnU-Net users know, under samunet's names.

``SAMUNET_RAW``, ``SAMUNET_PREPROCESSED`` and ``SAMUNET_RESULTS`` work like ``nnUNet_raw`` & co.
When one is unset, a default under ``~/samunet_data`` is used and one line says so (never a crash).
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from samunet.core.errors import SamunetUserError

log = logging.getLogger("samunet")

DEFAULT_ROOT = Path.home() / "samunet_data"
_ENV_DEFAULTS = {
    "SAMUNET_RAW": "raw",
    "SAMUNET_PREPROCESSED": "preprocessed",
    "SAMUNET_RESULTS": "results",
}
_warned: set[str] = set()

DATASET_FOLDER_RE = re.compile(r"^Dataset(\d{3})_(.+)$")


def _folder_from_env(var: str) -> Path:
    value = os.environ.get(var)
    if value:
        return Path(value).expanduser()
    default = DEFAULT_ROOT / _ENV_DEFAULTS[var]
    if var not in _warned:
        _warned.add(var)
        log.warning("%s is not set: using %s (set it to choose where data goes)", var, default)
    return default


def raw_root() -> Path:
    return _folder_from_env("SAMUNET_RAW")


def preprocessed_root() -> Path:
    return _folder_from_env("SAMUNET_PREPROCESSED")


def results_root() -> Path:
    return _folder_from_env("SAMUNET_RESULTS")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    return f"Dataset{dataset_id:03d}_{name}"


class UnknownDatasetError(SamunetUserError, LookupError):
    pass


def _existing_dataset_names(roots: list[Path]) -> list[str]:
    names = set()
    for root in roots:
        if root.is_dir():
            names.update(p.name for p in root.iterdir() if p.is_dir() and DATASET_FOLDER_RE.match(p.name))
    return sorted(names)


def resolve_dataset_name(identifier: str | int, roots: list[Path] | None = None) -> str:
    """``4``, ``"004"`` and ``"Dataset004_Hippocampus"`` all give ``"Dataset004_Hippocampus"``.

    Looks in the raw, preprocessed and results folders (in that order). An unknown id raises
    :class:`UnknownDatasetError` listing the datasets that exist.
    """
    if roots is None:
        roots = [raw_root(), preprocessed_root(), results_root()]
    text = str(identifier).strip()
    existing = _existing_dataset_names(roots)
    if DATASET_FOLDER_RE.match(text):
        if text in existing:
            return text
        wanted_id = int(DATASET_FOLDER_RE.match(text).group(1))
    elif text.isdigit():
        wanted_id = int(text)
    else:
        raise UnknownDatasetError(
            f"'{text}' is not a dataset id: use a number (4, 004) or a folder name (Dataset004_Name)"
        )
    matches = [n for n in existing if int(DATASET_FOLDER_RE.match(n).group(1)) == wanted_id]
    if len(matches) == 1:
        return matches[0]
    where = ", ".join(str(r) for r in roots)
    if not matches:
        listing = ", ".join(existing) if existing else "none"
        raise UnknownDatasetError(f"no dataset with id {wanted_id:03d} in {where} (datasets that exist: {listing})")
    raise UnknownDatasetError(f"dataset id {wanted_id:03d} is ambiguous: {', '.join(matches)}")


def dataset_id_of(name: str) -> int:
    m = DATASET_FOLDER_RE.match(name)
    if not m:
        raise ValueError(f"'{name}' is not a DatasetXXX_Name folder name")
    return int(m.group(1))
