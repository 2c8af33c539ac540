"""Where the windows of a slice larger than the patch start, which mirrored views of them exist and whether a model
mirrors its embeddings for them (prediction tiles and mirrors them; cached training samples them; the training
budget and the planner count them)."""
from __future__ import annotations

import itertools
import math

from samunet.core.plans import Plans

DEFAULT_TILE_STEP = 0.5  # windows overlap by half a patch (nnU-Net's default)


def window_starts(length: int, window: int, step_fraction: float = DEFAULT_TILE_STEP) -> list[int]:
    """Start offsets of windows of ``window`` pixels covering ``length`` (>= window), evenly spaced."""
    if length <= window:
        return [0]
    n = math.ceil((length - window) / (window * step_fraction)) + 1
    stride = (length - window) / (n - 1)
    return [int(round(i * stride)) for i in range(n)]


def windows_per_slice(shape: tuple[float, float], window: tuple[int, int],
                      step_fraction: float = DEFAULT_TILE_STEP) -> int:
    return (len(window_starts(int(round(shape[0])), window[0], step_fraction))
            * len(window_starts(int(round(shape[1])), window[1], step_fraction)))


def mirror_combinations(axes: list[int]) -> list[tuple[int, ...]]:
    """Every subset of the in-plane axes (0: H, 1: W) as dims of a (B, C, H, W) tensor; () is no flip."""
    dims = sorted({2 + a for a in axes if a in (0, 1)})
    return [c for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]


def mirrors_embeddings(model, plans: Plans) -> bool:
    """Whether test-time mirroring flips the embedding instead of the image: for models trained on cached
    embeddings under ``grid`` augmentation, whose decoder learned flipped embeddings, not the embeddings of
    flipped images (the encoder is not equivariant: on Hippocampus, image mirroring took such a model's Dice from
    0.86 to 0.02-0.07 per flip). It also encodes each window once instead of once per flip."""
    name = getattr(model, "name", None)
    return (plans.augmentation.cached_augmentation == "grid" and name in plans.adapters
            and plans.adapters[name].cache_embeddings)
