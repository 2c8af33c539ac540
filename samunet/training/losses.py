"""Segmentation losses on logits, chosen by name from the plans (``adapters.<name>.loss``) through ``LOSSES``.

- ``dice_focal``, ``sigmoid_per_label`` outputs (S-SAM): one binary mask per foreground label; soft Dice + focal
  loss (alpha 0.75, gamma 3). The focal term is computed from the logits (``binary_cross_entropy_with_logits``): the
  reference applies BCE to already-sigmoided outputs, which is numerically poor and not what the paper says.
- ``dice_ce``, ``softmax`` outputs: weighted cross-entropy + soft Dice over the foreground classes (nnU-Net style
  batch Dice).

- regions (``loss: dice_bce``, planned for region datasets): one sigmoid per region, binary cross-entropy +
  soft Dice over every region (nnU-Net's DC_and_BCE_loss); targets are the union of each region's values.

The ignore label (``samunet.core.labels``) contributes nothing: its pixels (``seg`` holds the scheme's
``ignore_target`` there) are left out of every term. A new loss is one ``register_loss`` call naming the output
kinds it can train; its builder gets the adapter's config and the plans.
All arithmetic is done in float32 even under autocast: Dice sums and log-probabilities lose too much in bf16.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from collections.abc import Callable
from dataclasses import dataclass

from samunet.core.labels import REGION_LOSS
from samunet.core.plans import AdapterConfig, Plans, PlansError, check_optional_fields, named_choice

SMOOTH = 1e-5


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """1 - mean over channels of the batch soft Dice. ``probs``, ``target``: (B, K, H, W) in [0, 1];
    ``valid`` (B, 1, H, W): pixels that count (None: all).

    Sums run over the batch and the pixels (batch Dice), so a slice without a structure does not
    produce a noisy per-image 0/0 term.
    """
    if valid is not None:
        probs, target = probs * valid, target * valid
    dims = (0, 2, 3)
    intersection = (probs * target).sum(dims)
    denominator = probs.sum(dims) + target.sum(dims)
    dice = (2 * intersection + SMOOTH) / (denominator + SMOOTH)
    return 1 - dice.mean()


def masked_mean(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean of (B, K, H, W) ``values`` over the pixels where ``valid`` (B, 1, H, W) is 1 (all when None)."""
    if valid is None:
        return values.mean()
    return (values * valid).sum() / (valid.sum() * values.shape[1]).clamp_min(1.0)


def focal_loss_with_logits(logits: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float,
                           valid: torch.Tensor | None = None) -> torch.Tensor:
    """Binary focal loss (Lin et al.) from logits; ``alpha`` weighs the positive class."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return masked_mean(alpha_t * (1 - p_t) ** gamma * bce, valid)


def valid_pixels(seg: torch.Tensor, ignore_target: int | None) -> torch.Tensor | None:
    """(B, 1, H, W) float mask of the annotated pixels; None when there is no ignore label."""
    return None if ignore_target is None else (seg != ignore_target)[:, None].float()


def region_targets(seg: torch.Tensor, regions: list[tuple[int, ...]]) -> torch.Tensor:
    """(B, K, H, W) binary targets: channel k is 1 where ``seg`` holds one of ``regions[k]``'s values."""
    return torch.stack([torch.isin(seg, torch.as_tensor(r, device=seg.device)) for r in regions], dim=1).float()


class _SigmoidDiceLoss(nn.Module):
    """Soft Dice over sigmoid channels (channel k's target: ``seg`` in ``regions[k]``) plus a per-pixel term
    (``pixel_loss``), weighted; ignored pixels count in neither."""

    def __init__(self, pixel_weight: float, dice_weight: float, regions: list[tuple[int, ...]],
                 ignore_target: int | None):
        super().__init__()
        self.pixel_weight, self.dice_weight = pixel_weight, dice_weight
        self.regions, self.ignore_target = [tuple(r) for r in regions], ignore_target

    def pixel_loss(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        target = region_targets(seg, self.regions)
        valid = valid_pixels(seg, self.ignore_target)
        dice = soft_dice_loss(torch.sigmoid(logits), target, valid)
        return self.pixel_weight * self.pixel_loss(logits, target, valid) + self.dice_weight * dice


class DiceFocalLoss(_SigmoidDiceLoss):
    """For ``sigmoid_per_label`` outputs: logits (B, L, H, W), one channel per foreground label (``regions``:
    the target values of each channel)."""

    def __init__(self, focal_weight: float, dice_weight: float, alpha: float, gamma: float,
                 regions: list[tuple[int, ...]], ignore_target: int | None = None):
        super().__init__(focal_weight, dice_weight, regions, ignore_target)
        self.alpha, self.gamma = alpha, gamma

    def pixel_loss(self, logits, target, valid):
        return focal_loss_with_logits(logits, target, self.alpha, self.gamma, valid)


class DiceBCELoss(_SigmoidDiceLoss):
    """Regions (nnU-Net's DC_and_BCE_loss): logits (B, R, H, W), one sigmoid per region; binary cross-entropy
    plus batch soft Dice over every region (all are foreground structures)."""

    def __init__(self, bce_weight: float, dice_weight: float, regions: list[tuple[int, ...]],
                 ignore_target: int | None = None):
        super().__init__(bce_weight, dice_weight, regions, ignore_target)

    def pixel_loss(self, logits, target, valid):
        return masked_mean(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), valid)


class DiceCELoss(nn.Module):
    """For ``softmax`` outputs: logits (B, K, H, W) over all classes including background.

    ``seg`` holds class indices 0..K-1 (the label values mapped to channel positions by the caller).
    """

    def __init__(self, ce_weight: float, dice_weight: float, ignore_target: int | None = None):
        super().__init__()
        self.ce_weight, self.dice_weight = ce_weight, dice_weight
        self.ignore_target = ignore_target

    def forward(self, logits: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        seg = seg.long()
        valid = valid_pixels(seg, self.ignore_target)
        if valid is None:
            ce = F.cross_entropy(logits, seg)
        else:
            # mean over annotated pixels; a batch of ignored pixels only gives 0 (cross_entropy would give NaN)
            ce = (F.cross_entropy(logits, seg, ignore_index=self.ignore_target, reduction="sum")
                  / valid.sum().clamp_min(1.0))
            seg = seg.masked_fill(seg == self.ignore_target, 0)  # any class: those pixels are masked below
        probs = torch.softmax(logits, dim=1)
        target = F.one_hot(seg, logits.shape[1]).permute(0, 3, 1, 2).float()
        dice = soft_dice_loss(probs[:, 1:], target[:, 1:], valid) if logits.shape[1] > 1 else logits.new_zeros(())
        return self.ce_weight * ce + self.dice_weight * dice


class DeepSupervisionLoss(nn.Module):
    """nnU-Net's deep supervision: ``loss`` on each of a list of logits (full resolution first, each next one at
    twice the stride) against the labels sampled onto its grid (nearest: label values, the ignore label included,
    stay as they are), weighted 1/2^s and normalised to sum 1. A plain tensor gets ``loss`` alone (evaluation)."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, logits, seg: torch.Tensor) -> torch.Tensor:
        if not isinstance(logits, (list, tuple)):
            return self.loss(logits, seg)
        weights = [0.5 ** s for s in range(len(logits))]
        total = logits[0].new_zeros((), dtype=torch.float32)
        for weight, output in zip(weights, logits):
            target = seg
            if tuple(output.shape[-2:]) != tuple(seg.shape[-2:]):
                target = F.interpolate(seg[:, None].float(), size=output.shape[-2:], mode="nearest")[:, 0]
                target = target.to(seg.dtype)
            total = total + weight * self.loss(output, target)
        return total / sum(weights)


@dataclass(frozen=True)
class LossEntry:
    build: Callable[[AdapterConfig, Plans], nn.Module]
    outputs: tuple[str, ...]  # adapter output kinds (``adapters.<name>.output``) this loss can train
    fields: tuple[str, ...] = ()  # of LOSS_FIELDS, the ones this loss reads


# AdapterConfig fields only some losses read: null for the others
LOSS_FIELDS = ("focal_alpha", "focal_gamma")


LOSSES: dict[str, LossEntry] = {}


def register_loss(name: str, outputs: tuple[str, ...], fields: tuple[str, ...] = ()):
    """Decorator: ``@register_loss("dice_ce", ("softmax",))`` over ``build(config, plans) -> nn.Module``;
    ``fields``: the ``LOSS_FIELDS`` it reads."""
    def register(build: Callable[[AdapterConfig, Plans], nn.Module]):
        LOSSES[name] = LossEntry(build, tuple(outputs), tuple(fields))
        return build
    return register


def _two_weights(config: AdapterConfig) -> tuple[float, float]:
    if len(config.loss_weights) != 2:
        raise PlansError(f"loss_weights must be [ce_or_focal_or_bce, dice], got {config.loss_weights}")
    return float(config.loss_weights[0]), float(config.loss_weights[1])


@register_loss("dice_ce", ("softmax",))
def _dice_ce(config: AdapterConfig, plans: Plans) -> nn.Module:
    return DiceCELoss(*_two_weights(config), plans.label_scheme.ignore_target)


@register_loss("dice_focal", ("sigmoid_per_label",), fields=("focal_alpha", "focal_gamma"))
def _dice_focal(config: AdapterConfig, plans: Plans) -> nn.Module:
    scheme = plans.label_scheme
    return DiceFocalLoss(*_two_weights(config), config.focal_alpha, config.focal_gamma, scheme.target_regions(),
                         scheme.ignore_target)


@register_loss(REGION_LOSS, ("sigmoid_per_label",))
def _dice_bce(config: AdapterConfig, plans: Plans) -> nn.Module:
    scheme = plans.label_scheme
    return DiceBCELoss(*_two_weights(config), scheme.target_regions(), scheme.ignore_target)


def build_loss(plans: Plans, adapter: str) -> nn.Module:
    """The loss named by ``adapters.<adapter>.loss``, checked against the adapter's output kind."""
    config = plans.adapter_config(adapter)
    entry = named_choice(LOSSES, config.loss, f"adapters.{adapter}.loss")
    if config.output not in entry.outputs:
        raise PlansError(f"adapters.{adapter}.loss {config.loss!r} trains {' or '.join(entry.outputs)} outputs, but "
                         f"adapters.{adapter}.output is {config.output!r}; choose a loss for it "
                         f"({', '.join(n for n, e in sorted(LOSSES.items()) if config.output in e.outputs)})")
    check_optional_fields(config, LOSS_FIELDS, entry.fields, f"adapters.{adapter}", f"loss {config.loss!r}")
    try:
        loss = entry.build(config, plans)
    except PlansError as e:  # a builder names the field within the adapter's entry
        raise PlansError(f"adapters.{adapter}.{e}") from None
    return DeepSupervisionLoss(loss) if config.deep_supervision else loss
