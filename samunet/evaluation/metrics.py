"""Segmentation metrics per case and class, and the nnU-Net style summary of many cases.

Conventions (documentation/evaluation.md states them for users):
- Dice and IoU: NaN when reference and prediction are both empty (nnU-Net); NaN is left out of means.
- HD95 (mm): the larger of the two directed 95th percentiles of surface-to-surface distances (MONAI's
  definition). Both empty: 0. Exactly one empty: the image diagonal in mm (the worst possible distance),
  so that missed or hallucinated structures are penalised in means instead of silently dropped.
- NSD (normalised surface Dice, Nikolov et al. 2021) at ``tolerance_mm``: share of surface voxels of both
  masks lying within the tolerance of the other mask's surface. Both empty: 1. Exactly one empty: 0.
- Surfaces are the mask voxels with a face neighbour outside the mask (the image border counts as
  outside); distances use the voxel spacing, so anisotropic grids are measured in mm.
- Regions (``samunet.core.labels``): a region is the union of its label values and is keyed as nnU-Net
  writes it in summary.json, ``"(1, 2, 3)"``; plain labels keep their integer value as key.
- The ignore label: voxels the reference marks as ignored are left out of every metric (as nnU-Net does),
  whatever the prediction holds there.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from scipy import ndimage

from samunet.core.labels import Region, region_key, region_mask
from samunet.core.names import DEFAULT_NSD_TOLERANCE_MM as DEFAULT_TOLERANCE_MM

METRIC_NAMES = ("Dice", "IoU", "HD95", "NSD", "TP", "FP", "FN", "TN", "n_ref", "n_pred")


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _union_box(ref: np.ndarray, pred: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of both masks plus one voxel: distances between their surfaces stay exact inside it."""
    coords = np.argwhere(ref | pred)
    low = np.maximum(coords.min(axis=0) - 1, 0)
    high = np.minimum(coords.max(axis=0) + 2, ref.shape)
    return tuple(slice(a, b) for a, b in zip(low, high))


def surface_distances(ref: np.ndarray, pred: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """(distances of pred surface voxels to the ref surface, distances of ref surface voxels to the pred surface), mm.

    Both masks must be non-empty."""
    box = _union_box(ref, pred)
    ref, pred = ref[box], pred[box]
    ref_surface, pred_surface = _surface(ref), _surface(pred)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    return to_ref[pred_surface], to_pred[ref_surface]


def image_diagonal_mm(shape, spacing) -> float:
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def binary_metrics(ref: np.ndarray, pred: np.ndarray, spacing, tolerance_mm: float = DEFAULT_TOLERANCE_MM,
                   surface: bool = True, ignored: np.ndarray | None = None) -> dict:
    """All metrics for one pair of boolean masks (same shape), spacing in the arrays' axis order.

    ``surface=False`` skips HD95 and NSD (the distance transforms are most of the cost). ``ignored``: voxels
    left out (the reference's ignore label): in neither mask, not counted as true negatives."""
    ref = np.asarray(ref, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if ref.shape != pred.shape:
        raise ValueError(f"reference shape {ref.shape} differs from prediction shape {pred.shape}")
    counted = ref.size
    if ignored is not None:
        ref, pred = ref & ~ignored, pred & ~ignored
        counted -= int(np.count_nonzero(ignored))
    tp = int(np.count_nonzero(ref & pred))
    fp = int(np.count_nonzero(~ref & pred))
    fn = int(np.count_nonzero(ref & ~pred))
    tn = int(counted - tp - fp - fn)
    n_ref, n_pred = tp + fn, tp + fp
    if n_ref + n_pred == 0:
        dice = iou = float("nan")
    else:
        dice = 2 * tp / (2 * tp + fp + fn)
        iou = tp / (tp + fp + fn)
    counts = {"TP": tp, "FP": fp, "FN": fn, "TN": tn, "n_ref": n_ref, "n_pred": n_pred}
    if not surface:
        return {"Dice": float(dice), "IoU": float(iou), **counts}
    if n_ref == 0 and n_pred == 0:
        hd95, nsd = 0.0, 1.0
    elif n_ref == 0 or n_pred == 0:
        hd95, nsd = image_diagonal_mm(ref.shape, spacing), 0.0
    else:
        pred_to_ref, ref_to_pred = surface_distances(ref, pred, spacing)
        hd95 = float(max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95)))
        within = np.count_nonzero(pred_to_ref <= tolerance_mm) + np.count_nonzero(ref_to_pred <= tolerance_mm)
        nsd = within / (pred_to_ref.size + ref_to_pred.size)
    return {"Dice": float(dice), "IoU": float(iou), "HD95": float(hd95), "NSD": float(nsd), **counts}


def metric_key(region: Region) -> int | str:
    """The key of a label (its value) or region (nnU-Net's ``"(1, 2, 3)"``) in metrics and summaries."""
    return region_key(region) if isinstance(region, tuple) else int(region)


def compute_metrics(ref: np.ndarray, pred: np.ndarray, labels: Iterable[Region], spacing,
                    tolerance_mm: float = DEFAULT_TOLERANCE_MM, surface: bool = True,
                    ignore_label: int | None = None) -> dict[int | str, dict]:
    """Per foreground label or region: ``{key: {"Dice", "IoU", "HD95", "NSD", "TP", "FP", "FN", "TN", "n_ref",
    "n_pred"}}`` (keys from ``metric_key``).

    ``ref`` and ``pred`` are label maps of the same shape; ``spacing`` is in the same axis order; voxels where
    ``ref`` holds ``ignore_label`` are not evaluated."""
    ref = np.asarray(ref)
    pred = np.asarray(pred)
    if ref.shape != pred.shape:
        raise ValueError(f"reference shape {ref.shape} differs from prediction shape {pred.shape}")
    if len(spacing) != ref.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {ref.ndim}-D array")
    ignored = (ref == ignore_label) if ignore_label is not None else None
    return {metric_key(r): binary_metrics(region_mask(ref, r), region_mask(pred, r), spacing, tolerance_mm, surface,
                                          ignored) for r in labels}


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(finite)) if finite else float("nan")


def summarize(per_case: list[dict], labels: Iterable[int] | None = None) -> dict:
    """nnU-Net's summary.json structure from ``[{"reference_file", "prediction_file", "metrics": {label: {...}}}]``.

    ``mean[label][metric]``: mean over cases ignoring NaN; ``foreground_mean[metric]``: mean of the class means.
    Labels are the metric dicts' keys unless given; keys are kept as given (ints here, strings after JSON)."""
    if labels is None:
        labels = []
        for case in per_case:
            labels.extend(k for k in case["metrics"] if k not in labels)
    labels = list(labels)
    mean = {}
    for label in labels:
        rows = [case["metrics"][label] for case in per_case if label in case["metrics"]]
        names = [m for m in METRIC_NAMES if rows and m in rows[0]]
        mean[label] = {m: _nanmean([float(r[m]) for r in rows]) for m in names}
    metric_names = [m for m in METRIC_NAMES if any(m in mean[label] for label in labels)]
    foreground_mean = {m: _nanmean([mean[label][m] for label in labels if m in mean[label]]) for m in metric_names}
    return {"foreground_mean": foreground_mean, "mean": mean, "metric_per_case": list(per_case)}
