"""Losses, learning-rate schedule, optimizer choice, fold lock and time budget (no model needed)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from samunet.core.adapter_defaults import default_adapter_config
from samunet.core.plans import PlansError
from samunet.training.fold_lock import LOCK_NAME, FoldLock, FoldLockedError
from samunet.training.losses import DiceCELoss, DiceFocalLoss, build_loss, focal_loss_with_logits, soft_dice_loss
from samunet.training.lr_schedule import CLOCK_GRACE, TimeBudget, learning_rate_at
from samunet.training.optimizers import build_optimizer


def _seg():
    seg = torch.zeros(2, 8, 8, dtype=torch.long)
    seg[:, 2:5, 2:5] = 1
    seg[1, 5:7, 5:7] = 2
    return seg


def test_focal_loss_uses_logits_and_matches_definition():
    logits = torch.tensor([[-3.0, 0.0, 4.0]])
    target = torch.tensor([[0.0, 1.0, 1.0]])
    p = torch.sigmoid(logits)
    p_t = torch.where(target == 1, p, 1 - p)
    alpha_t = torch.where(target == 1, torch.tensor(0.75), torch.tensor(0.25))
    expected = (-alpha_t * (1 - p_t) ** 3 * torch.log(p_t)).mean()
    assert torch.allclose(focal_loss_with_logits(logits, target, 0.75, 3.0), expected, atol=1e-6)
    # finite even for extreme logits (BCE on sigmoided outputs would give inf/nan here)
    extreme = focal_loss_with_logits(torch.tensor([[-200.0, 200.0]]), torch.tensor([[1.0, 0.0]]), 0.75, 3.0)
    assert torch.isfinite(extreme) and extreme > 10


def test_dice_focal_is_low_for_perfect_logits_and_high_for_wrong_ones():
    seg = _seg()
    loss = DiceFocalLoss(0.5, 0.5, 0.75, 3.0, regions=[(1,), (2,)])
    target = torch.stack([(seg == 1), (seg == 2)], dim=1).float()
    perfect = (target * 2 - 1) * 20
    assert loss(perfect, seg) < 0.01
    assert loss(-perfect, seg) > 0.5


def test_dice_ce_matches_components():
    seg = _seg()
    logits = torch.randn(2, 3, 8, 8)
    loss = DiceCELoss(0.2, 0.8)(logits, seg)
    probs = logits.softmax(1)
    onehot = F.one_hot(seg, 3).permute(0, 3, 1, 2).float()
    expected = 0.2 * F.cross_entropy(logits, seg) + 0.8 * soft_dice_loss(probs[:, 1:], onehot[:, 1:])
    assert torch.allclose(loss, expected, atol=1e-6)


def test_build_loss_follows_the_plans_loss_name_and_checks_the_output(tiny_plans):
    plans = tiny_plans()
    plans.adapters["samed"].loss_weights = [0.3, 0.7]
    assert isinstance(build_loss(plans, "ssam"), DiceFocalLoss)
    loss = build_loss(plans, "samed")
    assert isinstance(loss, DiceCELoss) and (loss.ce_weight, loss.dice_weight) == (0.3, 0.7)
    plans.adapters["samed"].loss = "dice_focal"  # trains sigmoid outputs; samed's are softmax
    with pytest.raises(PlansError, match=r"adapters.samed.loss 'dice_focal' trains sigmoid_per_label outputs"):
        build_loss(plans, "samed")
    plans.adapters["samed"].loss = "dice_tversky"
    with pytest.raises(PlansError,
                       match=r"^adapters.samed.loss 'dice_tversky' is unknown; known: dice_bce, dice_ce, dice_focal"):
        build_loss(plans, "samed")


def _schedule(**changes):
    poly = changes.get("lr_schedule", "poly") == "poly"  # poly_power is null for the other schedules
    return default_adapter_config("samed", **{"learning_rate": 1.0, "warmup_iterations": 0,
                                              "poly_power": 0.9 if poly else None, **changes})


def test_lr_warmup_then_poly():
    lrs = [learning_rate_at(i, _schedule(warmup_iterations=10), 100) for i in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone decay after warm-up
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.05
    assert learning_rate_at(50, _schedule(learning_rate=0.5, lr_schedule="constant"), 100) == 0.5
    with pytest.raises(PlansError, match=r"^adapters.samed.lr_schedule 'cosine' is unknown; known: constant, poly$"):
        learning_rate_at(0, _schedule(lr_schedule="cosine"), 10, where="adapters.samed")


def test_optimizer_only_over_trainable_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].requires_grad_(False)
    for name, cls in (("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)):
        betas = None if name == "sgd" else [0.9, 0.999]  # SGD has no betas: null in its entry
        opt = build_optimizer(model.parameters(), default_adapter_config("samed", optimizer=name, betas=betas), lr=0.1)
        assert isinstance(opt, cls)
        assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model[1].parameters()}
    with pytest.raises(PlansError, match=r"^adapters.full.optimizer 'lion' is unknown; known: adam, adamw, sgd$"):
        build_optimizer(model.parameters(), default_adapter_config("full", optimizer="lion"), lr=0.1,
                        field_name="adapters.full.optimizer")


def test_fold_lock_refuses_second_owner_and_takes_over_stale(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename}))
        with pytest.raises(FoldLockedError, match=f"PID {sleeper.pid}"):
            FoldLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the owner is gone: the lock is stale and taken over
    with FoldLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_time_limit_decays_the_learning_rate_with_the_clock():
    budget = TimeBudget(limit_minutes=1.0, start=0.0)
    budget.elapsed = lambda: 45.0
    assert budget.limited and budget.fraction_used() == pytest.approx(0.75)
    budget.elapsed = lambda: 61.0
    assert budget.fraction_used() == 1.0
    assert not TimeBudget(None).limited and TimeBudget(None).fraction_used() == 0.0
    # the final validation's reserve comes out of the training time, at most half of the limit
    reserved = TimeBudget(limit_minutes=1.0, start=0.0, reserve_s=15.0)
    reserved.elapsed = lambda: 45.0
    assert reserved.fraction_used() == 1.0 and reserved.remaining() == pytest.approx(15.0)
    assert TimeBudget(limit_minutes=1.0, reserve_s=600.0).reserve_s == 30.0
    # the decay follows whichever is further along: iterations (10 of 100) or the clock (75 % of the limit,
    # counted from the grace share on: (0.75 - 0.05) / 0.95)
    by_time = learning_rate_at(10, _schedule(poly_power=1.0), 100, time_fraction=0.75)
    assert by_time == pytest.approx(1 - (0.75 - CLOCK_GRACE) / (1 - CLOCK_GRACE))
    assert learning_rate_at(0, _schedule(poly_power=1.0), 100, time_fraction=1.0) == 0.0  # zero when the time is up
    # within the grace share timing jitter never moves the rate: a run on schedule stays reproducible
    assert learning_rate_at(3, _schedule(poly_power=1.0), 100, time_fraction=CLOCK_GRACE * 0.9) == \
        learning_rate_at(3, _schedule(poly_power=1.0), 100)
    assert learning_rate_at(90, _schedule(poly_power=1.0), 100, time_fraction=0.5) == pytest.approx(0.1)
    # warm-up first
    assert learning_rate_at(10, _schedule(warmup_iterations=20), 100, time_fraction=0.9) == pytest.approx(11 / 20)
    assert learning_rate_at(10, _schedule(lr_schedule="constant"), 100, time_fraction=0.9) == 1.0


def test_a_registered_loss_is_chosen_by_its_name_in_the_plans(tiny_plans):
    from samunet.training.losses import LOSSES, register_loss

    @register_loss("test_ce_only", ("softmax",))
    def _ce_only(config, plans):
        return DiceCELoss(1.0, 0.0)

    try:
        plans = tiny_plans()
        plans.adapters["samed"].loss = "test_ce_only"
        loss = build_loss(plans, "samed")
        assert isinstance(loss, DiceCELoss) and (loss.ce_weight, loss.dice_weight) == (1.0, 0.0)
    finally:
        del LOSSES["test_ce_only"]


def test_a_value_nothing_reads_is_refused_and_a_value_needed_must_be_set(tiny_plans):
    """Fields that only some adapters, losses or schedules read are null elsewhere: no edit is silently ignored."""
    from samunet.adapters import build_adapter

    plans = tiny_plans()
    plans.adapters["samed"].focal_alpha = 0.5  # the dice_ce loss has no focal term
    with pytest.raises(PlansError, match=r"^adapters.samed.focal_alpha is 0.5, but loss 'dice_ce' does not use it; "
                                         r"set it to null$"):
        build_loss(plans, "samed")
    plans.adapters["ssam"].focal_gamma = None
    with pytest.raises(PlansError, match=r"^adapters.ssam.focal_gamma is null, but loss 'dice_focal' needs it$"):
        build_loss(plans, "ssam")
    with pytest.raises(PlansError, match=r"^adapters.samed.poly_power is 0.9, but lr_schedule 'constant' does not"):
        learning_rate_at(0, _schedule(lr_schedule="constant", poly_power=0.9), 10, where="adapters.samed")
    with pytest.raises(PlansError, match=r"^adapters.samed.betas is \[0.9, 0.999\], but optimizer 'sgd' does not"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], default_adapter_config("samed", optimizer="sgd"), 0.1,
                        "adapters.samed.optimizer")
    plans.adapters["decoder"].lora_rank = 8  # the decoder adapter has no LoRA layers
    with pytest.raises(PlansError, match=r"^adapters.decoder.lora_rank is 8, but the decoder adapter does not use it"):
        build_adapter("decoder", plans, pretrained=False)
    plans.adapters["loramednet"].head_width = None
    with pytest.raises(PlansError,
                       match=r"^adapters.loramednet.head_width is null, but the loramednet adapter needs it"):
        build_adapter("loramednet", plans, pretrained=False)
