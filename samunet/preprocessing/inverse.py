"""Map predictions in the preprocessed space (S, H, W) back to the original (z, y, x) grid.

Undo in reverse order: resample back to the cropped in-plane shape, undo the transpose, paste into the
crop box (background outside). With no resampling this is exact voxel for voxel.
"""
from __future__ import annotations

import numpy as np

from samunet.preprocessing.case_properties import CaseProperties
from samunet.preprocessing.resampling import resample_slices


def _check_shape(shape, props: CaseProperties, what: str) -> None:
    if list(shape) != list(props.shape_after_resampling):
        raise ValueError(f"{props.case_id}: {what} has shape {tuple(shape)} but the case was preprocessed to "
                         f"{tuple(props.shape_after_resampling)}")


def _crop_slices(props: CaseProperties) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in props.crop_bbox)


def restore_label_volume(seg: np.ndarray, props: CaseProperties) -> np.ndarray:
    """(S, H, W) labels -> (z, y, x) labels in the original geometry (nearest neighbour; dtype kept)."""
    _check_shape(seg.shape, props, "the label map")
    seg = resample_slices(seg, props.shape_before_resampling[1:], order=0)
    seg = np.transpose(seg, np.argsort(props.transpose))
    out = np.zeros(props.original_shape, dtype=seg.dtype)
    out[_crop_slices(props)] = seg
    return out


def restore_probabilities(probs: np.ndarray, props: CaseProperties, regions: bool = False) -> np.ndarray:
    """(K, S, H, W) class probabilities (class 0 = background) -> (K, z, y, x) float32; outside the crop box
    the background has probability 1. Resampling is linear, then renormalised to sum to 1.

    ``regions``: the K channels are independent region sigmoids (no background channel): not renormalised,
    0 outside the crop box."""
    if probs.ndim != 4:
        raise ValueError(f"{props.case_id}: expected probabilities (K, S, H, W), got shape {probs.shape}")
    _check_shape(probs.shape[1:], props, "the probability map")
    restored = resample_slices(probs.astype(np.float32, copy=False), props.shape_before_resampling[1:], order=1)
    if props.resampled:
        np.clip(restored, 0.0, None if not regions else 1.0, out=restored)
        if not regions:
            restored /= np.maximum(restored.sum(axis=0, keepdims=True), 1e-8)
    restored = np.transpose(restored, [0] + [a + 1 for a in np.argsort(props.transpose)])
    out = np.zeros((probs.shape[0], *props.original_shape), dtype=np.float32)
    if not regions:
        out[0] = 1.0
    out[(slice(None), *_crop_slices(props))] = restored
    return out
