"""Where the windows of a slice larger than the patch start, and which mirrored views of them exist (prediction
tiles and mirrors them; cached training samples them; the planner counts them)."""
from __future__ import annotations

import itertools
import math

DEFAULT_TILE_STEP = 0.5  # windows overlap by half a patch (nnU-Net's default)


def window_starts(length: int, window: int, step_fraction: float = DEFAULT_TILE_STEP) -> list[int]:
    """Start offsets of windows of ``window`` pixels covering ``length`` (>= window), evenly spaced."""
    if length <= window:
        return [0]
    n = math.ceil((length - window) / (window * step_fraction)) + 1
    stride = (length - window) / (n - 1)
    return [int(round(i * stride)) for i in range(n)]


def windows_per_slice(shape: tuple[float, float], window: tuple[int, int], step_fraction: float = DEFAULT_TILE_STEP) -> int:
    return (len(window_starts(int(round(shape[0])), window[0], step_fraction))
            * len(window_starts(int(round(shape[1])), window[1], step_fraction)))


def mirror_combinations(axes: list[int]) -> list[tuple[int, ...]]:
    """Every subset of the in-plane axes (0: H, 1: W) as dims of a (B, C, H, W) tensor; () is no flip."""
    dims = sorted({2 + a for a in axes if a in (0, 1)})
    return [c for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]
