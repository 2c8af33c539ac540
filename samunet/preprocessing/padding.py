"""The one in-plane padding rule shared by training batches and prediction, so both see the same inputs.

Slices smaller than the patch are zero-padded (zero is the mean in the normalised space) symmetrically, the
odd pixel after; the padding is undone on the prediction with the returned slices.
"""
from __future__ import annotations

import numpy as np


def pad_in_plane(array: np.ndarray, patch_size) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Zero-pad the last two axes of ``array`` (any leading axes) symmetrically up to ``patch_size`` (H, W).

    Returns the padded array (``array`` itself when it is large enough) and the (H, W) slices that cut the
    original extent back out of it."""
    pads, keep = [], []
    for size, patch in zip(array.shape[-2:], patch_size):
        extra = max(int(patch) - size, 0)
        before = extra // 2
        pads.append((before, extra - before))
        keep.append(slice(before, before + size))
    if pads != [(0, 0), (0, 0)]:
        array = np.pad(array, [(0, 0)] * (array.ndim - 2) + pads, mode="constant", constant_values=0)
    return array, (keep[0], keep[1])
