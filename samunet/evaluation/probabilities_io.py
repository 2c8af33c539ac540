"""Saved class probabilities: ``CASE.npz`` (array ``probabilities``, (K, z, y, x), float16) plus ``CASE.json``.

The JSON sidecar holds the dataset's labels (dataset.json form: name -> value, or list of values for a
region; with ``regions_class_order`` for region datasets, whose channels are the regions' sigmoids, see
``samunet.core.labels``) and the ``Geometry`` of the original image, so that ``samunet_ensemble`` can write label
maps from the npz alone.
Written by ``samunet_predict --save-probabilities`` and by training validation; read by ensembling and
``samunet_find_best``. Never pickled: ``np.load(allow_pickle=False)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samunet.core.errors import SamunetUserError
from samunet.core.labels import LabelScheme, label_problems
from samunet.dataset.image_io import Geometry
from samunet.utils.atomic import atomic_path, read_json, write_json

PROBABILITIES_KEY = "probabilities"


class ProbabilitiesError(SamunetUserError, ValueError):
    """A saved probabilities file is missing, unreadable or inconsistent; the message names the file."""


@dataclass
class SavedProbabilities:
    probabilities: np.ndarray  # (K, z, y, x) float32
    labels: dict | None  # dataset.json labels; None when no sidecar exists
    geometry: Geometry | None
    regions_class_order: list[int] | None = None

    @property
    def scheme(self) -> LabelScheme | None:
        if self.labels is None:
            return None
        return LabelScheme(self.labels, tuple(self.regions_class_order) if self.regions_class_order else None)


def sidecar_path(npz_path: str | Path) -> Path:
    npz_path = Path(npz_path)
    return npz_path.with_name(npz_path.name[: -len(".npz")] + ".json")


def save_probabilities(probabilities: np.ndarray, geometry: Geometry, labels: dict,
                       npz_path: str | Path, regions_class_order: list[int] | None = None) -> None:
    """Write ``CASE.npz`` (float16) and ``CASE.json``; both atomic."""
    npz_path = Path(npz_path)
    scheme = LabelScheme(labels, tuple(regions_class_order) if regions_class_order else None)
    if probabilities.shape[0] != scheme.num_outputs:
        raise ValueError(f"{npz_path}: {probabilities.shape[0]} probability channels for {scheme.num_outputs} "
                         f"outputs of labels {labels}")
    if tuple(probabilities.shape[1:]) != geometry.shape:
        raise ValueError(f"{npz_path}: probabilities {probabilities.shape[1:]} "
                         f"do not match the geometry {geometry.shape}")
    with atomic_path(npz_path) as tmp:
        with open(tmp, "wb") as f:  # a file object keeps the exact name (np.savez(str) may append .npz)
            np.savez_compressed(f, **{PROBABILITIES_KEY: probabilities.astype(np.float16)})
    meta = {"labels": dict(labels), "geometry": geometry.to_json()}
    if scheme.has_regions:
        meta["regions_class_order"] = [int(v) for v in regions_class_order]
    else:
        meta["labels"] = dict(sorted(labels.items(), key=lambda kv: kv[1]))
    write_json(meta, sidecar_path(npz_path))


def load_probabilities(npz_path: str | Path) -> SavedProbabilities:
    npz_path = Path(npz_path)
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            key = (PROBABILITIES_KEY if PROBABILITIES_KEY in data.files
                   else (data.files[0] if len(data.files) == 1 else None))
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
        raise ProbabilitiesError(f"{npz_path}: expected (classes, z, y, x) probabilities, "
                                 f"got shape {probabilities.shape}")
    labels = geometry = order = None
    sidecar = sidecar_path(npz_path)
    if sidecar.is_file():
        meta = read_json(sidecar)
        labels = {str(k): v for k, v in meta.get("labels", {}).items()} or None
        order = meta.get("regions_class_order")
        geometry = Geometry.from_json(meta["geometry"]) if "geometry" in meta else None
        problems = label_problems(labels, order) if labels is not None else []
        if problems:
            raise ProbabilitiesError(f"{sidecar}: {'; '.join(problems)}")
        if labels is not None and LabelScheme(labels, order and tuple(order)).num_outputs != probabilities.shape[0]:
            raise ProbabilitiesError(f"{npz_path}: {probabilities.shape[0]} channels but {sidecar}'s labels define "
                                     f"{LabelScheme(labels, order and tuple(order)).num_outputs} outputs")
        if geometry is not None and geometry.shape != tuple(probabilities.shape[1:]):
            raise ProbabilitiesError(f"{npz_path}: shape {probabilities.shape[1:]} "
                                     f"differs from {sidecar}'s geometry {geometry.shape}")
    return SavedProbabilities(probabilities, labels, geometry, order)
