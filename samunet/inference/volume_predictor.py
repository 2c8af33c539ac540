"""Predict class probabilities for one preprocessed volume, slice by slice, with a 2D adapter.

Used by training validation and by ``samunet_predict`` so that both see exactly the same inputs:
slices are packed with ``pack_slices`` and scaled with ``to_unit_range`` as in training. Slices smaller
than ``plans.crop.patch_size`` are padded (``padding.pad_in_plane``, as the training loader pads), and
larger ones are covered by overlapping patch-size windows blended with a Gaussian weight (nnU-Net's
sliding window). Mirroring test-time augmentation averages the probabilities of flipped inputs.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import nn

from samunet.core.plans import Plans
from samunet.modeling.runtime import PrecisionPolicy, precision_policy
from samunet.preprocessing.padding import pad_in_plane
from samunet.preprocessing.tiling import DEFAULT_TILE_STEP, mirror_combinations, mirrors_embeddings, window_starts


def gaussian_importance_map(patch_size: tuple[int, int], sigma_scale: float = 1.0 / 8) -> torch.Tensor:
    """(H, W) weights peaking at the window centre; the minimum is kept above zero so every pixel counts."""
    axes = []
    for size in patch_size:
        coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
        axes.append(torch.exp(-0.5 * (coords / (size * sigma_scale)) ** 2))
    weight = axes[0][:, None] * axes[1][None, :]
    weight = weight / weight.max()
    return weight.clamp_min(weight[weight > 0].min().item()).float()



def _model_device(model: nn.Module) -> torch.device:
    for p in itertools.chain(model.parameters(), model.buffers()):
        return p.device
    return torch.device("cpu")


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


@torch.inference_mode()
def _predict_windows(model, windows: torch.Tensor, flips: list[tuple[int, ...]], policy: PrecisionPolicy,
                     flip_embeddings: bool = False) -> torch.Tensor:
    """Mean probabilities over the mirror combinations for a batch of windows (B, Cin, h, w); with
    ``flip_embeddings`` each window is encoded once and its embedding is mirrored (``mirrors_embeddings``)."""
    total = None
    if flip_embeddings:
        with policy.autocast():
            embeddings = model.encode(windows)
    for dims in flips:
        with policy.autocast():
            if flip_embeddings:  # the same axes counted from the end: (B, C, h, w) or a fold ensemble's (M, B, C, h, w)
                flipped = torch.flip(embeddings, [d - windows.dim() for d in dims]) if dims else embeddings
                images = torch.flip(windows, dims) if dims else windows  # what the fusion adapter's U-Net sees
                probs = model.probabilities(model.forward_from_embeddings(flipped, images))
            else:
                probs = model.probabilities(model(torch.flip(windows, dims) if dims else windows))
        probs = probs.float()
        if dims:
            probs = torch.flip(probs, dims)
        total = probs if total is None else total + probs
    return total / len(flips)


def predict_preprocessed_volume(
    adapter: nn.Module,
    image: np.ndarray,
    plans: Plans,
    mirror: bool = True,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    precision: str | None = None,
    progress: bool = False,
    tile_step: float = DEFAULT_TILE_STEP,
) -> np.ndarray:
    """Probabilities ``(num_classes, S, H, W)`` float32 for a preprocessed image ``(C, S, H, W)``.

    ``adapter`` obeys the Adapter interface (``forward`` on [0, 1] inputs -> logits, ``probabilities``).
    ``device`` None keeps the adapter where it is; ``precision`` None follows ``plans.training.precision``.
    The adapter's train/eval mode is restored afterwards (training validation calls this mid-training).
    """
    from samunet.preprocessing.packing import pack_slices, to_unit_range

    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 4:
        raise ValueError(f"expected a preprocessed image (C, S, H, W), got shape {image.shape}")
    if device is not None:
        adapter.to(device)
    run_device = _model_device(adapter)
    batch_size = batch_size or max(1, plans.training.batch_size)
    patch = (int(plans.crop.patch_size[0]), int(plans.crop.patch_size[1]))
    flips = mirror_combinations(plans.augmentation.mirror_axes) if mirror else [()]
    flip_embeddings = len(flips) > 1 and mirrors_embeddings(adapter, plans)
    policy = precision_policy(run_device, plans.training.precision if precision is None else precision)

    _, num_slices, height, width = image.shape
    padded, keep = pad_in_plane(image, patch)
    padded_h, padded_w = padded.shape[2:]
    starts = [(y, x) for y in window_starts(padded_h, patch[0], tile_step)
              for x in window_starts(padded_w, patch[1], tile_step)]
    single_window = len(starts) == 1
    gaussian = torch.ones(patch) if single_window else gaussian_importance_map(patch)
    weight_sum = torch.zeros(padded_h, padded_w)
    for y, x in starts:
        weight_sum[y : y + patch[0], x : x + patch[1]] += gaussian

    probabilities = None  # allocated once the model tells us how many classes it outputs
    slices_per_chunk = max(1, math.ceil(batch_size / len(starts)))
    chunks = range(0, num_slices, slices_per_chunk)
    if progress:
        from samunet.utils.progress import progress as progress_bar

        chunks = progress_bar(chunks, desc="slices", unit="chunk", leave=False, lines=False)

    was_training = adapter.training
    adapter.eval()
    try:
        for first in chunks:
            indices = list(range(first, min(first + slices_per_chunk, num_slices)))
            # scale each whole slice (not each window) so overlapping windows agree on intensities
            packed = to_unit_range(_as_tensor(pack_slices(padded, indices, plans)).float())
            packed = _as_tensor(packed).float()
            items = [(i, y, x) for i in range(len(indices)) for (y, x) in starts]
            for b in range(0, len(items), batch_size):
                batch_items = items[b : b + batch_size]
                windows = torch.stack([packed[i, :, y : y + patch[0], x : x + patch[1]] for i, y, x in batch_items])
                probs = _predict_windows(adapter, windows.to(run_device), flips, policy, flip_embeddings).cpu()
                if probabilities is None:
                    probabilities = torch.zeros((probs.shape[1], num_slices, padded_h, padded_w), dtype=torch.float32)
                for (i, y, x), p in zip(batch_items, probs):
                    probabilities[:, indices[i], y : y + patch[0], x : x + patch[1]] += p * gaussian
    finally:
        adapter.train(was_training)

    probabilities /= weight_sum
    return probabilities[:, :, keep[0], keep[1]].contiguous().numpy()
