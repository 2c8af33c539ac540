"""Largest-connected-component postprocessing, and the cross-validated decision whether to use it.

A step keeps, among the voxels whose label is in ``step.labels``, only the largest connected component
(26-connectivity in 3D: diagonal contact joins components, so less is removed); the rest becomes
background. The decision (nnU-Net's): try all foreground as one object first, then each class on top of
whatever was kept; a step is kept only if the mean foreground Dice over the validation cases rises and no
class's mean Dice falls. Region datasets (``samunet.core.labels``) are scored per region, and each region's
values form one candidate object; the reference's ignore label is left out of the scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from samunet.core.labels import Region
from samunet.evaluation.metrics import compute_metrics, metric_key, summarize
from samunet.utils.logs import get_logger

MIN_IMPROVEMENT = 1e-6  # float noise must not count as an improvement


@dataclass
class PostprocessingStep:
    labels: list[int]  # voxels with these labels form one object; several labels: "all foreground"
    dice_before: float = float("nan")  # mean foreground Dice without this step (validation)
    dice_after: float = float("nan")  # ... with it
    kept: bool = True  # False: tried and rejected (recorded so the decision can be read later)


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """Boolean mask holding only the largest connected component of ``mask`` (empty stays empty)."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    components, count = ndimage.label(mask, structure=structure)
    if count <= 1:
        return mask.astype(bool, copy=True)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def apply_step(segmentation: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Copy of ``segmentation`` with everything but the largest component of ``labels`` set to background."""
    mask = np.isin(segmentation, list(labels))
    removed = mask & ~keep_largest_component(mask)
    out = segmentation.copy()
    out[removed] = 0
    return out


def apply_postprocessing(segmentation: np.ndarray, steps: Sequence[PostprocessingStep]) -> np.ndarray:
    for step in steps:
        if step.kept:
            segmentation = apply_step(segmentation, step.labels)
    return segmentation


@dataclass
class ValidationCase:
    """One cross-validation case in memory: reference and predicted label maps on the same grid."""

    name: str
    reference: np.ndarray
    prediction: np.ndarray
    spacing: tuple[float, ...]


def mean_dice(cases: Sequence[ValidationCase], labels: Sequence[Region],
              transform: Callable[[np.ndarray], np.ndarray] = lambda s: s,
              ignore_label: int | None = None) -> tuple[float, dict]:
    """(mean foreground Dice, per-class (or per-region) mean Dice) of the cases after ``transform``
    (nnU-Net NaN rules)."""
    per_case = []
    for case in cases:
        # Dice only: distances are not needed for the decision and cost the most
        metrics = compute_metrics(case.reference, transform(case.prediction), labels, case.spacing, surface=False,
                                  ignore_label=ignore_label)
        per_case.append({"reference_file": case.name, "prediction_file": case.name,
                         "metrics": {k: {"Dice": v["Dice"]} for k, v in metrics.items()}})
    keys = [metric_key(r) for r in labels]
    summary = summarize(per_case, keys)
    return summary["foreground_mean"]["Dice"], {k: summary["mean"][k]["Dice"] for k in keys}


def accept_change(before: tuple[float, dict], after: tuple[float, dict]) -> bool:
    """nnU-Net's rule for a postprocessing change: the mean foreground Dice rises and no class's mean falls."""
    improves = after[0] > before[0] + MIN_IMPROVEMENT
    no_class_worse = all(not (after[1][k] < before[1][k] - MIN_IMPROVEMENT) for k in before[1]
                         if not np.isnan(before[1][k]))
    return improves and no_class_worse


def decide_postprocessing(cases: Sequence[ValidationCase], labels: Sequence[Region],
                          ignore_label: int | None = None) -> list[PostprocessingStep]:
    """Steps tried in order (all foreground, then each class or region), each marked kept or not with its Dice
    figures. ``labels``: the evaluated foreground labels, or regions (tuples of values)."""
    log = get_logger()
    labels = [tuple(int(v) for v in k) if isinstance(k, tuple) else int(k) for k in labels]
    kept: list[PostprocessingStep] = []
    tried: list[PostprocessingStep] = []
    current = mean_dice(cases, labels, ignore_label=ignore_label)
    objects = [sorted(k) if isinstance(k, tuple) else [k] for k in labels]
    everything = sorted({v for o in objects for v in o})
    candidates = ([everything] if len(labels) > 1 else []) + objects
    for step_labels in candidates:
        step = PostprocessingStep(list(step_labels))
        result = mean_dice(cases, labels, lambda s, st=step: apply_step(apply_postprocessing(s, kept), st.labels),
                           ignore_label)
        step.dice_before, step.dice_after = current[0], result[0]
        step.kept = accept_change(current, result)
        what = ("all foreground" if step_labels == everything and len(labels) > 1
                else f"label {step_labels[0]}" if len(step_labels) == 1 else f"region {tuple(step_labels)}")
        # the change is printed too: gains below the 4th decimal are common and would read as "no change"
        log.info("largest component of %s: mean Dice %.4f -> %.4f (%+.5f): %s", what, current[0], result[0],
                 result[0] - current[0], "kept" if step.kept else "not kept")
        if step.kept:
            kept.append(step)
            current = result
        tried.append(step)
    return tried
