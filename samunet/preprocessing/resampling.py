"""In-plane resampling of slice stacks (S, H, W) or (C, S, H, W); the slicing axis is never resampled.

Slices are resampled one by one in 2D (a 3D spline would also filter across slices). Pixel areas are
aligned (``grid_mode``), so resampling to a shape and back keeps the image in place. Labels use
order 0 (nearest neighbour) and keep their dtype.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

# in-plane spacings closer than this (relative) count as equal: no resampling, so no interpolation error
SPACING_TOLERANCE = 1e-3


def resampled_shape(shape_hw: tuple[int, int] | list[int], spacing_hw, target_spacing_hw) -> list[int]:
    """In-plane shape after resampling from ``spacing_hw`` to ``target_spacing_hw`` (at least 1 pixel)."""
    out = []
    for n, s, t in zip(shape_hw, spacing_hw, target_spacing_hw):
        same = abs(s - t) <= SPACING_TOLERANCE * max(abs(t), 1e-12)
        out.append(int(n) if same else max(1, int(round(n * s / t))))
    return out


def _resize_2d(slice_2d: np.ndarray, shape_hw: list[int], order: int) -> np.ndarray:
    factors = [o / i for o, i in zip(shape_hw, slice_2d.shape)]
    out = np.empty(shape_hw, dtype=slice_2d.dtype if order == 0 else np.float32)
    # grid_mode: pixel centres map with (i + 0.5) * in/out - 0.5, the convention of torch's align_corners=False
    ndimage.zoom(slice_2d if order == 0 else slice_2d.astype(np.float32, copy=False), factors, output=out,
                 order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    return out


def resample_slices(array: np.ndarray, shape_hw: list[int] | tuple[int, int], order: int) -> np.ndarray:
    """Resample the last two axes of (S, H, W) or (C, S, H, W) to ``shape_hw``. Returns the input unchanged
    (not a copy) when the shape already matches."""
    shape_hw = [int(s) for s in shape_hw]
    if list(array.shape[-2:]) == shape_hw:
        return array
    lead = array.shape[:-2]
    flat = array.reshape(-1, *array.shape[-2:])
    dtype = array.dtype if order == 0 else np.float32
    out = np.empty((flat.shape[0], *shape_hw), dtype=dtype)
    for i, s in enumerate(flat):
        out[i] = _resize_2d(s, shape_hw, order)
    return out.reshape(*lead, *shape_hw)
