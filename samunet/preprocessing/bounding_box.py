"""Bounding boxes of masks (cropping to nonzero, foreground extents in the fingerprint)."""
from __future__ import annotations

import numpy as np

def bbox_of(mask: np.ndarray) -> list[list[int]] | None:
    """[start, stop) per axis of the True voxels; None when there are none."""
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append([int(present[0]), int(present[-1]) + 1])
    return box
