"""Saved class probabilities: ``CASE.npz`` (array ``probabilities``, (K, z, y, x), float16) plus ``CASE.json``.

The JSON sidecar holds the label names (name -> value, background included, in channel order) and the
``Geometry`` of the original image, so that ``samunet_ensemble`` can write label maps from the npz alone.
Written by ``samunet_predict --save-probabilities`` and by training validation; read by ensembling and
``samunet_find_best``. Never pickled: ``np.load(allow_pickle=False)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samunet.core.errors import SamunetUserError
from samunet.dataset.image_io import Geometry
from samunet.utils.atomic import atomic_path, read_json, write_json

PROBABILITIES_KEY = "probabilities"


class ProbabilitiesError(SamunetUserError, ValueError):
    """A saved probabilities file is missing, unreadable or inconsistent; the message names the file."""


@dataclass
class SavedProbabilities:
    probabilities: np.ndarray  # (K, z, y, x) float32
    labels: dict[str, int] | None  # name -> value in channel order; None when no sidecar exists
    geometry: Geometry | None


def sidecar_path(npz_path: str | Path) -> Path:
    npz_path = Path(npz_path)
    return npz_path.with_name(npz_path.name[: -len(".npz")] + ".json")


def save_probabilities(probabilities: np.ndarray, geometry: Geometry, labels: dict[str, int],
                       npz_path: str | Path) -> None:
    """Write ``CASE.npz`` (float16) and ``CASE.json``; both atomic."""
    npz_path = Path(npz_path)
    if probabilities.shape[0] != len(labels):
        raise ValueError(f"{npz_path}: {probabilities.shape[0]} probability channels for {len(labels)} labels")
    if tuple(probabilities.shape[1:]) != geometry.shape:
        raise ValueError(f"{npz_path}: probabilities {probabilities.shape[1:]} do not match the geometry {geometry.shape}")
    with atomic_path(npz_path) as tmp:
        with open(tmp, "wb") as f:  # a file object keeps the exact name (np.savez(str) may append .npz)
            np.savez_compressed(f, **{PROBABILITIES_KEY: probabilities.astype(np.float16)})
    ordered = dict(sorted(labels.items(), key=lambda kv: kv[1]))
    write_json({"labels": ordered, "geometry": geometry.to_json()}, sidecar_path(npz_path))


def load_probabilities(npz_path: str | Path) -> SavedProbabilities:
    npz_path = Path(npz_path)
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            key = PROBABILITIES_KEY if PROBABILITIES_KEY in data.files else (data.files[0] if len(data.files) == 1 else None)
            if key is None:
                raise ProbabilitiesError(f"{npz_path}: no '{PROBABILITIES_KEY}' array (found {data.files})")
            probabilities = data[key].astype(np.float32)
    except FileNotFoundError:
        raise ProbabilitiesError(f"{npz_path}: file does not exist") from None
    except (OSError, ValueError) as e:
        if isinstance(e, ProbabilitiesError):
            raise
        raise ProbabilitiesError(f"{npz_path}: cannot be read as a probabilities .npz ({e})") from None
    if probabilities.ndim != 4:
        raise ProbabilitiesError(f"{npz_path}: expected (classes, z, y, x) probabilities, got shape {probabilities.shape}")
    labels = geometry = None
    sidecar = sidecar_path(npz_path)
    if sidecar.is_file():
        meta = read_json(sidecar)
        labels = {str(k): int(v) for k, v in meta.get("labels", {}).items()} or None
        geometry = Geometry.from_json(meta["geometry"]) if "geometry" in meta else None
        if labels is not None and len(labels) != probabilities.shape[0]:
            raise ProbabilitiesError(f"{npz_path}: {probabilities.shape[0]} channels but {sidecar} names {len(labels)} labels")
        if geometry is not None and geometry.shape != tuple(probabilities.shape[1:]):
            raise ProbabilitiesError(f"{npz_path}: shape {probabilities.shape[1:]} differs from {sidecar}'s geometry {geometry.shape}")
    return SavedProbabilities(probabilities, labels, geometry)


def label_map_from_probabilities(probabilities: np.ndarray, label_values: list[int]) -> np.ndarray:
    """Arg-max over classes, mapped to the label values of the channels (channel k -> label_values[k])."""
    index = np.argmax(probabilities, axis=0)
    lookup = np.asarray(label_values)
    dtype = np.uint8 if lookup.max() <= 255 else np.uint16
    return lookup.astype(dtype)[index]
