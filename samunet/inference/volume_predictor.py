"""Predict class probabilities for one preprocessed volume, slice by slice, with a 2D adapter.

Used by training validation and by ``samunet_predict`` so that both see exactly the same inputs:
slices are packed with ``pack_slices`` and scaled with ``to_unit_range`` as in training. Slices smaller
than ``plans.crop.patch_size`` are padded (zeros in normalised space, as the training loader pads), and
larger ones are covered by overlapping patch-size windows blended with a Gaussian weight (nnU-Net's
sliding window). Mirroring test-time augmentation averages the probabilities of flipped inputs.
"""
from __future__ import annotations

import contextlib
import itertools
import math

import numpy as np
import torch
from torch import nn

from samunet.core.plans import Plans
from samunet.preprocessing.tiling import DEFAULT_TILE_STEP, window_starts



def gaussian_importance_map(patch_size: tuple[int, int], sigma_scale: float = 1.0 / 8) -> torch.Tensor:
    """(H, W) weights peaking at the window centre; the minimum is kept above zero so every pixel counts."""
    axes = []
    for size in patch_size:
        coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
        axes.append(torch.exp(-0.5 * (coords / (size * sigma_scale)) ** 2))
    weight = axes[0][:, None] * axes[1][None, :]
    weight = weight / weight.max()
    return weight.clamp_min(weight[weight > 0].min().item()).float()



def mirror_combinations(axes: list[int]) -> list[tuple[int, ...]]:
    """Every subset of the in-plane axes (0: H, 1: W) as dims of a (B, C, H, W) tensor; () is no flip."""
    dims = sorted({2 + a for a in axes if a in (0, 1)})
    return [c for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]


def _autocast(device: torch.device, precision: str, amp: bool | None):
    """bf16 autocast on CPU when the plans train in bf16; AMP (fp16 or bf16) on CUDA."""
    use = precision in ("bf16", "fp16") if amp is None else amp
    if not use:
        return contextlib.nullcontext()
    if device.type == "cuda":
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _model_device(model: nn.Module) -> torch.device:
    for p in itertools.chain(model.parameters(), model.buffers()):
        return p.device
    return torch.device("cpu")


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _pad_in_plane(image: np.ndarray, patch_size: tuple[int, int]) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Pad H and W symmetrically up to the patch size; returns the padded image and the slices undoing it."""
    _, _, h, w = image.shape
    pads = []
    keep = []
    for size, patch in ((h, patch_size[0]), (w, patch_size[1])):
        extra = max(patch - size, 0)
        before = extra // 2
        pads.append((before, extra - before))
        keep.append(slice(before, before + size))
    if any(p != (0, 0) for p in pads):
        image = np.pad(image, [(0, 0), (0, 0), pads[0], pads[1]], mode="constant", constant_values=0)
    return image, (keep[0], keep[1])


@torch.inference_mode()
def _predict_windows(model, windows: torch.Tensor, flips: list[tuple[int, ...]], autocast_ctx) -> torch.Tensor:
    """Mean probabilities over the mirror combinations for a batch of windows (B, Cin, h, w)."""
    total = None
    for dims in flips:
        x = torch.flip(windows, dims) if dims else windows
        with autocast_ctx():
            probs = model.probabilities(model(x))
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
    amp: bool | None = None,
    progress: bool = False,
    tile_step: float = DEFAULT_TILE_STEP,
) -> np.ndarray:
    """Probabilities ``(num_classes, S, H, W)`` float32 for a preprocessed image ``(C, S, H, W)``.

    ``adapter`` obeys the Adapter interface (``forward`` on [0, 1] inputs -> logits, ``probabilities``).
    ``device`` None keeps the adapter where it is; ``amp`` None follows ``plans.training.precision``.
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
    autocast_ctx = lambda: _autocast(run_device, plans.training.precision, amp)  # noqa: E731

    _, num_slices, height, width = image.shape
    padded, keep = _pad_in_plane(image, patch)
    padded_h, padded_w = padded.shape[2:]
    starts = [(y, x) for y in window_starts(padded_h, patch[0], tile_step) for x in window_starts(padded_w, patch[1], tile_step)]
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
                probs = _predict_windows(adapter, windows.to(run_device), flips, autocast_ctx).cpu()
                if probabilities is None:
                    probabilities = torch.zeros((probs.shape[1], num_slices, padded_h, padded_w), dtype=torch.float32)
                for (i, y, x), p in zip(batch_items, probs):
                    probabilities[:, indices[i], y : y + patch[0], x : x + patch[1]] += p * gaussian
    finally:
        adapter.train(was_training)

    probabilities /= weight_sum
    return probabilities[:, :, keep[0], keep[1]].contiguous().numpy()
