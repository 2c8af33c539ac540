"""Flips and quarter turns applied to cached embeddings and their labels together.

With a frozen encoder and cached embeddings, the training inputs must come from a finite set (each is encoded
once), so the interpolating augmentations only come as fixed variants of each window
(``plans.augmentation.cached_variants``, drawn by ``training.data_loader``). ``plans.augmentation.cached_augmentation``
says which flips come on top:

- ``grid``: each window is encoded unflipped; the step flips and (square windows) transposes the embedding grid
  and the label together, the 8 symmetries of a square (4 flips for other windows). Only approximate, since the
  encoder is not equivariant and the decoder's positional encoding stays put, but it costs nothing: the pool of
  inputs to encode stays one per window.
- ``exact_mirrors``: each mirrored window is a separate input, encoded once (exact, but the pool to encode grows
  by the number of mirror combinations).
- ``none``: the plain windows.

A symmetry is a code of three bits: bit 0 flips the rows, bit 1 the columns, bit 2 transposes first. Flipping a
grid of cells maps cell ``i`` to ``n - 1 - i`` exactly because input sides are multiples of the encoder's stride,
and the resize to the encoder's square input commutes with flips (and with transposition of a square window).
"""
from __future__ import annotations

import numpy as np
import torch

TRANSPOSE = 4


def symmetry_count(window: tuple[int, int]) -> int:
    """Symmetries drawn for a window: the 8 of a square, or the 4 flips of a rectangle."""
    return 8 if window[0] == window[1] else 4


def draw_symmetry(rng: np.random.Generator, window: tuple[int, int], mirror_axes: list[int],
                  transpose: bool = True) -> int:
    """A random symmetry code allowed by the plans' mirror axes (a transpose needs both axes and a square)."""
    code = 0
    for axis in mirror_axes:
        if rng.random() < 0.5:
            code |= 1 << axis
    if transpose and sorted(mirror_axes) == [0, 1] and symmetry_count(window) == 8 and rng.random() < 0.5:
        code |= TRANSPOSE
    return code


def apply_symmetry(grid: torch.Tensor, code: int) -> torch.Tensor:
    """``grid`` (..., H, W) under symmetry ``code`` (transpose, then the flips)."""
    if code & TRANSPOSE:
        grid = grid.transpose(-2, -1)
    dims = [d for bit, d in ((1, -2), (2, -1)) if code & bit]
    return grid.flip(dims) if dims else grid


def apply_symmetries(grids: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Each sample of ``grids`` (B, ..., H, W) under its own code from ``codes`` (B,)."""
    if not bool(codes.any()):
        return grids
    return torch.stack([apply_symmetry(g, int(c)) for g, c in zip(grids, codes.tolist())])
