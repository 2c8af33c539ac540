"""Losses with regions (nnU-Net's Dice + BCE) and with the ignore label (ignored pixels change nothing)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from samunet.core.adapter_defaults import default_adapter_config
from samunet.core.labels import LabelScheme
from samunet.training.losses import DiceBCELoss, DiceCELoss, DiceFocalLoss, build_loss, soft_dice_loss
from tests.fixtures_models import make_tiny_plans

BRATS_LABELS, BRATS_ORDER = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}, [1, 2, 3]
# the loss each output trains (the planner's choice): regions get dice_bce
LOSS_FOR = {"softmax": "dice_ce", "sigmoid_per_label": "dice_focal"}


def _build(labels: dict, order: list[int] | None, output: str, loss: str, weights=(0.5, 0.5)):
    """The loss ``build_loss`` makes from plans with these labels and one adapter entry."""
    plans = make_tiny_plans()
    plans.labels, plans.regions_class_order = dict(labels), order
    focal = {"focal_alpha": 0.75, "focal_gamma": 3.0} if loss == "dice_focal" else {}  # read by dice_focal only
    plans.adapters["samed"] = default_adapter_config("samed", output=output, loss=loss, loss_weights=list(weights),
                                                     **focal)
    return build_loss(plans, "samed")


def _seg(ignore: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    seg = torch.randint(0, 4, (2, 8, 8), generator=g)
    if ignore is not None:
        seg[:, :3] = ignore  # three unannotated rows per image
    return seg


def test_region_loss_is_bce_plus_dice_on_nested_region_targets():
    seg = _seg()
    loss = _build(BRATS_LABELS, BRATS_ORDER, "sigmoid_per_label", "dice_bce", (1.0, 1.0))
    assert isinstance(loss, DiceBCELoss)
    target = torch.stack([(seg >= 1), (seg >= 2), (seg == 3)], dim=1).float()  # whole, core, enhancing
    logits = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = F.binary_cross_entropy_with_logits(logits, target) + soft_dice_loss(torch.sigmoid(logits), target)
    assert torch.allclose(loss(logits, seg), expected, atol=1e-6)
    perfect = (target * 2 - 1) * 20
    assert loss(perfect, seg) < 0.01 and loss(-perfect, seg) > 1.0


def _ignored_change(loss, seg, ignore, channels):
    """(loss, loss with the logits of ignored pixels replaced by garbage)."""
    logits = torch.randn(2, channels, 8, 8, generator=torch.Generator().manual_seed(2))
    changed = logits.clone()
    changed[:, 0][seg == ignore] = 100.0  # a confident, wrong-looking first channel on every ignored pixel
    return loss(logits, seg), loss(changed, seg)


def test_ignored_pixels_do_not_change_any_loss():
    plain_labels = {"background": 0, "a": 1, "b": 2, "ignore": 3}
    plain = LabelScheme(plain_labels)
    seg = _seg(ignore=3)  # values 0..2 annotated, 3 ignored
    for output, channels in (("softmax", 3), ("sigmoid_per_label", 2)):
        loss = _build(plain_labels, None, output, LOSS_FOR[output])
        before, after = _ignored_change(loss, seg, plain.ignore_target, channels)
        assert torch.allclose(before, after), output
    region_labels = {"background": 0, "whole": [1, 2], "core": 2, "ignore": 3}
    regions = LabelScheme(region_labels, (1, 2))
    loss = _build(region_labels, [1, 2], "sigmoid_per_label", "dice_bce")
    before, after = _ignored_change(loss, seg, regions.ignore_target, 2)
    assert torch.allclose(before, after)
    # the same change on pixels that count does move the loss (so the test can fail)
    labelled = seg.masked_fill(seg == 3, 0)
    changed = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    before = DiceCELoss(0.5, 0.5)(changed, labelled)
    changed[:, 0][seg == 3] = 100.0
    assert not torch.allclose(before, DiceCELoss(0.5, 0.5)(changed, labelled))


def test_all_ignored_batch_gives_a_finite_loss():
    seg = torch.full((1, 4, 4), 3)
    for loss in (DiceCELoss(0.5, 0.5, ignore_target=3), DiceFocalLoss(0.5, 0.5, 0.75, 3.0, [(1,), (2,)], 3),
                 DiceBCELoss(0.5, 0.5, [(1, 2), (2,)], 3)):
        assert torch.isfinite(loss(torch.randn(1, 3 if isinstance(loss, DiceCELoss) else 2, 4, 4), seg))
