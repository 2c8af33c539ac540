"""Turn preprocessed volumes (C, S, H, W) into model inputs (N, Cin, H, W); shared by training and inference.

Modes (``plans.packing.mode``):
- ``repeat``: one channel copied three times (SAM expects three).
- ``neighbours``: 2.5D, slices s-1, s, s+1 of the single channel (clamped at the volume edges).
- ``direct``: three channels as they are (e.g. RGB).
- ``mix``: all C channels as they are; the model maps them to three with a learned 1x1 convolution.
Works on numpy arrays (including ``np.load(mmap_mode="r")``) and torch tensors alike.
"""
from __future__ import annotations

import numpy as np

PACKING_MODES = ("repeat", "neighbours", "direct", "mix")


def packed_channel_count(mode: str, num_channels: int) -> int:
    """Cin that :func:`pack_slices` produces for a preprocessed image with ``num_channels`` channels."""
    if mode in ("repeat", "neighbours"):
        return 3
    if mode == "direct":
        return num_channels
    if mode == "mix":
        return num_channels
    raise ValueError(f"unknown channel packing mode '{mode}' (known: {', '.join(PACKING_MODES)})")


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def pack_slices(image, slice_indices, plans):
    """``image`` (C, S, H, W) -> (N, Cin, H, W) for the N slices in ``slice_indices`` (numpy or torch)."""
    mode = plans.packing.mode
    num_channels, num_slices = int(image.shape[0]), int(image.shape[1])
    idx = np.asarray(slice_indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= num_slices):
        raise IndexError(f"slice indices must lie in [0, {num_slices}), got {idx.min()}..{idx.max()}")
    if mode in ("repeat", "neighbours") and num_channels != 1:
        raise ValueError(f"packing '{mode}' needs a 1-channel image, got {num_channels} channels")
    if mode == "direct" and num_channels != 3:
        raise ValueError(f"packing 'direct' needs a 3-channel image, got {num_channels} channels")
    if mode == "repeat":
        rows = np.repeat(idx[:, None], 3, axis=1)
    elif mode == "neighbours":
        rows = np.clip(idx[:, None] + np.array([-1, 0, 1]), 0, num_slices - 1)
    elif mode in ("direct", "mix"):
        if _is_torch(image):
            import torch

            return image[:, torch.as_tensor(idx)].transpose(0, 1).contiguous()
        return np.ascontiguousarray(np.asarray(image[:, idx]).transpose(1, 0, 2, 3))
    else:
        packed_channel_count(mode, num_channels)  # raises the error naming the known modes
    if _is_torch(image):
        import torch

        return image[0][torch.as_tensor(rows)].contiguous()
    return np.ascontiguousarray(image[0][rows])


def to_unit_range(x):
    """Per-sample min-max scaling of (N, ...) to [0, 1] (a constant sample becomes 0); numpy or torch."""
    if _is_torch(x):
        flat = x.reshape(x.shape[0], -1)
        lo = flat.min(dim=1).values.reshape(-1, *([1] * (x.ndim - 1)))
        hi = flat.max(dim=1).values.reshape(-1, *([1] * (x.ndim - 1)))
        return (x - lo) / (hi - lo).clamp_min(1e-8)
    x = np.asarray(x, dtype=np.float32)
    if x.shape[0] == 0:
        return x.copy()
    flat = x.reshape(x.shape[0], -1)
    shape = (-1,) + (1,) * (x.ndim - 1)
    lo = flat.min(axis=1).reshape(shape)
    hi = flat.max(axis=1).reshape(shape)
    return ((x - lo) / np.maximum(hi - lo, 1e-8)).astype(np.float32)
