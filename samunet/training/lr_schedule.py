"""Learning rate: linear warm-up, then the schedule named by ``adapters.<name>.lr_schedule`` (``LR_SCHEDULES``).

A schedule maps the decay progress in [0, 1] to a multiplier of the base learning rate. Without a time limit
the progress is a pure function of the iteration, so resuming only needs the iteration count, and a
``--continue`` that extends ``--epochs`` simply stretches the decay over the new total.

With a time limit (``--time-limit-min``, the plans' ``training.time_budget_min``) the decay follows whichever
runs out first, the planned iterations or the time: its progress is ``max(iteration / planned iterations,
clock)``, where the clock is the share of the training time used (``fold_budget``, the fold's training budget,
keeps that clock and the iteration count), counted from ``CLOCK_GRACE`` of it, so a run that keeps to its
schedule follows the iterations alone and stays reproducible: timing jitter never moves its learning rate. The
learning rate then falls smoothly and reaches zero when the time is up.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from samunet.core.plans import AdapterConfig, check_optional_fields, named_choice
# the fold's clock and epoch fit are the training budget's (fold_budget); importable here as well
from samunet.training.fold_budget import FILL_MARGIN_SHARE, TimeBudget, epochs_that_fit  # noqa: F401

# progress in [0, 1], the adapter's config -> multiplier of the base learning rate
LR_SCHEDULES: dict[str, Callable[[float, AdapterConfig], float]] = {
    "poly": lambda progress, c: (1 - progress) ** c.poly_power,  # nnU-Net, SAMed
    "constant": lambda progress, c: 1.0,
}
# AdapterConfig fields only some schedules read (null for the others)
SCHEDULE_FIELDS = {"poly": ("poly_power",)}
# the share of the training time after which the clock may speed the decay up (before it, iterations alone count)
CLOCK_GRACE = 0.05


def learning_rate_at(iteration: int, config: AdapterConfig, total_iterations: int, time_fraction: float = 0.0,
                     where: str = "adapters.<adapter>") -> float:
    """Learning rate for 0-based ``iteration``: linear warm-up from lr / warmup to ``config.learning_rate``, then
    the schedule. ``time_fraction``: share of a time limit already used (``fold_budget``); the decay is at least
    that far. ``where`` names the adapter's entry in the plans (``adapters.samed``) in errors."""
    schedule = named_choice(LR_SCHEDULES, config.lr_schedule, f"{where}.lr_schedule")
    check_optional_fields(config, ("poly_power",), SCHEDULE_FIELDS.get(config.lr_schedule, ()), where,
                          f"lr_schedule {config.lr_schedule!r}")
    base_lr, warmup = config.learning_rate, config.warmup_iterations
    if warmup > 0 and iteration < warmup:
        return base_lr * (iteration + 1) / warmup
    decay_span = max(1, total_iterations - warmup)
    clock = max(0.0, (time_fraction - CLOCK_GRACE) / (1.0 - CLOCK_GRACE))
    progress = min(1.0, max((iteration - warmup) / decay_span, clock))
    return base_lr * schedule(progress, config)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
