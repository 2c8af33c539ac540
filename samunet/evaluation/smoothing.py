"""Probability smoothing: a Gaussian over the predicted probabilities before the arg-max, decided on the
cross-validation like the largest component (``samunet.evaluation.postprocessing``).

Why: a 2D model predicts each slice on its own, so neighbouring slices disagree, and SAM's mask decoder
draws every mask from an embedding grid one token per 4x4 input pixels (LiteMedSAM; 16x16 for the ViTs),
upsampled by two transposed convolutions, so edges come back blocky. Averaging the probabilities over a small
3D neighbourhood reconciles both (decoder, cross-validation: LeftAtrium_LGE_30 +0.012 mean Dice over 30
cases, Hippocampus fold 0 +0.006; documentation/evaluation.md). It can also erase thin structures (vessels),
which is why it is tried and kept only when the cross-validation says so, never applied by default.

Sigma is given in voxels of the case's finest axis; each axis gets ``sigma * finest / spacing``, so slices
far apart (10 mm between slices against 1.5 mm in plane) are hardly blended, and a 2D image's marker axis
(999 mm) not at all. Every channel is filtered the same linear way, so softmax probabilities still sum to 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from samunet.core.labels import Region
from samunet.evaluation.postprocessing import MIN_IMPROVEMENT, ValidationCase, accept_change, mean_dice
from samunet.utils.logs import get_logger

# in finest-axis voxels, ascending; the best sigma follows the structures' size (cross-validation, decoder:
# Hippocampus 0.75, LeftAtrium 2.0), so the ladder spans both and the search stops once the Dice falls
SIGMA_CANDIDATES = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


@dataclass
class SmoothingTrial:
    sigma: float  # Gaussian sigma in voxels of the finest axis
    dice_before: float = float("nan")  # mean foreground Dice without smoothing (validation)
    dice_after: float = float("nan")  # ... with it
    kept: bool = False  # at most one trial is kept: the best of those that pass the acceptance rule


def axis_sigmas(spacing: Sequence[float], sigma: float) -> tuple[float, ...]:
    """Per-axis sigma in voxels: ``sigma`` on the finest axis, proportionally less on coarser ones."""
    finest = min(float(s) for s in spacing)
    return tuple(sigma * finest / float(s) for s in spacing)


def smooth_probabilities(probabilities: np.ndarray, spacing: Sequence[float], sigma: float | None,
                         in_place: bool = False) -> np.ndarray:
    """(K, z, y, x) probabilities, each channel Gaussian-filtered (``spacing``: (z, y, x)); None or 0: unchanged.
    ``in_place`` (float32 input): filter into ``probabilities`` itself, as prediction does when it keeps no
    copy, so a large multi-class volume is not held twice."""
    if not sigma:
        return probabilities
    sigmas = axis_sigmas(spacing, sigma)
    in_place = in_place and probabilities.dtype == np.float32
    out = probabilities if in_place else np.empty(probabilities.shape, np.float32)
    for k in range(probabilities.shape[0]):
        # 'nearest' at the borders: an object touching the image edge is not diluted by a mirrored background
        ndimage.gaussian_filter(probabilities[k].astype(np.float32, copy=False), sigmas, output=out[k], mode="nearest")
    return out


def decide_smoothing(cases_at: Callable[[float | None], list[ValidationCase]], labels: Sequence[Region],
                     ignore_label: int | None = None, candidates: Sequence[float] = SIGMA_CANDIDATES,
                     ) -> tuple[list[SmoothingTrial], list[ValidationCase]]:
    """Try each sigma in ascending order; keep the best one whose mean foreground Dice rises with no class
    falling (the largest component's rule). The search stops at the first sigma that scores below the one
    before it: past its best, more smoothing only blurs more. ``cases_at(sigma)``: the validation cases
    predicted with that smoothing (None: none). Returns the trials made and the cases of the choice, on which
    the component steps are decided next."""
    log = get_logger()
    plain = cases_at(None)
    before = mean_dice(plain, labels, ignore_label=ignore_label)
    trials, best, best_result, best_cases, previous = [], None, before, plain, before[0]
    for sigma in sorted(candidates):
        cases = cases_at(sigma)
        result = mean_dice(cases, labels, ignore_label=ignore_label)
        trial = SmoothingTrial(float(sigma), before[0], result[0])
        log.info("smoothing sigma %.2f voxel(s): mean Dice %.4f -> %.4f (%+.5f)", sigma, before[0], result[0],
                 result[0] - before[0])
        if accept_change(before, result) and result[0] > best_result[0]:
            best, best_result, best_cases = trial, result, cases
        trials.append(trial)
        if result[0] < previous - MIN_IMPROVEMENT:
            break
        previous = result[0]
    if best is not None:
        best.kept = True
    log.info("smoothing: %s", f"sigma {best.sigma:.2f} kept" if best else "none kept")
    return trials, best_cases
