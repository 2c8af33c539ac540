"""Segmentation losses on logits, chosen by the adapter's output kind.

- ``sigmoid_per_label`` (S-SAM): one binary mask per foreground label; soft Dice + focal loss (alpha 0.75,
  gamma 3). The focal term is computed from the logits (``binary_cross_entropy_with_logits``): the
  reference applies BCE to already-sigmoided outputs, which is numerically poor and not what the paper says.
- ``softmax``: weighted cross-entropy + soft Dice over the foreground classes (nnU-Net style batch Dice).

All arithmetic is done in float32 even under autocast: Dice sums and log-probabilities lose too much in bf16.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samunet.core.plans import AdapterConfig

SMOOTH = 1e-5


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean over channels of the batch soft Dice. ``probs``, ``target``: (B, K, H, W) in [0, 1].

    Sums run over the batch and the pixels (batch Dice), so a slice without a structure does not
    produce a noisy per-image 0/0 term.
    """
    dims = (0, 2, 3)
    intersection = (probs * target).sum(dims)
    denominator = probs.sum(dims) + target.sum(dims)
    dice = (2 * intersection + SMOOTH) / (denominator + SMOOTH)
    return 1 - dice.mean()


def focal_loss_with_logits(logits: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Binary focal loss (Lin et al.) from logits; ``alpha`` weighs the positive class."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * (1 - p_t) ** gamma * bce).mean()


class DiceFocalLoss(nn.Module):
    """For ``sigmoid_per_label`` outputs: logits (B, L, H, W), one channel per foreground label."""

    def __init__(self, focal_weight: float, dice_weight: float, alpha: float, gamma: float, foreground_values: list[int]):
        super().__init__()
        self.focal_weight, self.dice_weight = focal_weight, dice_weight
        self.alpha, self.gamma = alpha, gamma
        self.foreground_values = list(foreground_values)

    def forward(self, logits: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        values = torch.as_tensor(self.foreground_values, device=seg.device).view(1, -1, 1, 1)
        target = (seg[:, None] == values).float()  # (B, L, H, W) per-label binary masks
        focal = focal_loss_with_logits(logits, target, self.alpha, self.gamma)
        dice = soft_dice_loss(torch.sigmoid(logits), target)
        return self.focal_weight * focal + self.dice_weight * dice


class DiceCELoss(nn.Module):
    """For ``softmax`` outputs: logits (B, K, H, W) over all classes including background.

    ``seg`` holds class indices 0..K-1 (the label values mapped to channel positions by the caller).
    """

    def __init__(self, ce_weight: float, dice_weight: float):
        super().__init__()
        self.ce_weight, self.dice_weight = ce_weight, dice_weight

    def forward(self, logits: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(logits, seg.long())
        probs = torch.softmax(logits, dim=1)
        target = F.one_hot(seg.long(), logits.shape[1]).permute(0, 3, 1, 2).float()
        dice = soft_dice_loss(probs[:, 1:], target[:, 1:]) if logits.shape[1] > 1 else logits.new_zeros(())
        return self.ce_weight * ce + self.dice_weight * dice


def build_loss(config: AdapterConfig, output_kind: str, foreground_values: list[int]) -> nn.Module:
    """The loss for an adapter: its output kind decides the family, the plans' AdapterConfig the weights."""
    if len(config.loss_weights) != 2:
        raise ValueError(f"loss_weights must be [ce_or_focal, dice], got {config.loss_weights}")
    first, dice = config.loss_weights
    if output_kind == "sigmoid_per_label":
        return DiceFocalLoss(first, dice, config.focal_alpha, config.focal_gamma, foreground_values)
    if output_kind == "softmax":
        return DiceCELoss(first, dice)
    raise ValueError(f"unknown adapter output kind {output_kind!r} (expected 'softmax' or 'sigmoid_per_label')")
