"""Learning rate: linear warm-up, then the schedule named by ``adapters.<name>.lr_schedule`` (``LR_SCHEDULES``).

A schedule maps the decay progress in [0, 1] to a multiplier of the base learning rate. Without a time limit
the progress is a pure function of the iteration, so resuming only needs the iteration count, and a
``--continue`` that extends ``--epochs`` simply stretches the decay over the new total.

``--time-limit-min`` (``TimeBudget``): a run cut at 30 minutes with the learning rate still high ends on a noisy
model, and the number of steps that fit is hard to predict: epochs get faster as an embedding cache fills, and
validations take minutes on a CPU. So with a limit the decay follows whichever runs out first, the planned
iterations or the time: its progress is ``max(iteration / planned iterations, clock)``, where the clock is the
share of the training time used, counted from ``CLOCK_GRACE`` of it (so a run that keeps to its schedule follows
the iterations alone and stays reproducible; timing jitter never moves its learning rate). The learning rate
then falls smoothly and reaches zero when the time is up, where training stops (mid-epoch if need be) and goes
to the final checkpoint and validation. The training time is the limit less the time reserved for the final
validation (``TimeBudget.reserve_s``): the budget covers both. The clock starts when this process starts
training, also after ``--continue``. A run faster than planned gets more epochs instead of ending early
(``epochs_that_fit``) when it is the run the plans sized to the budget (``--epochs`` fixes the count).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

from samunet.core.plans import AdapterConfig, check_optional_fields, named_choice

# progress in [0, 1], the adapter's config -> multiplier of the base learning rate
LR_SCHEDULES: dict[str, Callable[[float, AdapterConfig], float]] = {
    "poly": lambda progress, c: (1 - progress) ** c.poly_power,  # nnU-Net, SAMed
    "constant": lambda progress, c: 1.0,
}
# AdapterConfig fields only some schedules read (null for the others)
SCHEDULE_FIELDS = {"poly": ("poly_power",)}


def learning_rate_at(iteration: int, config: AdapterConfig, total_iterations: int, time_fraction: float = 0.0,
                     where: str = "adapters.<adapter>") -> float:
    """Learning rate for 0-based ``iteration``: linear warm-up from lr / warmup to ``config.learning_rate``, then
    the schedule. ``time_fraction``: share of a time limit already used (``TimeBudget``); the decay is at least
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


CLOCK_GRACE = 0.05


class TimeBudget:
    """The fold's wall-time limit (training and validation), of which ``reserve_s`` is kept for the final
    validation: training stops when the rest is used."""

    def __init__(self, limit_minutes: float | None, start: float | None = None, reserve_s: float = 0.0):
        self.limit_s = None if limit_minutes is None else float(limit_minutes) * 60.0
        self.start = time.monotonic() if start is None else start
        self.set_reserve(reserve_s)

    def set_reserve(self, reserve_s: float) -> None:
        self.reserve_s = 0.0 if self.limit_s is None else min(max(0.0, reserve_s), MAX_RESERVE_SHARE * self.limit_s)

    @property
    def limited(self) -> bool:
        return self.limit_s is not None

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float | None:
        """Seconds left of the whole limit (None without a limit)."""
        return None if self.limit_s is None else self.limit_s - self.elapsed()

    def fraction_used(self) -> float:
        """Share of the training time (the limit less the reserve) spent so far, in [0, 1] (0 without a limit)."""
        if self.limit_s is None:
            return 0.0
        return min(1.0, self.elapsed() / max(self.limit_s - self.reserve_s, 1e-9))


MAX_RESERVE_SHARE = 0.5  # an estimate gone wrong never leaves less than half the budget for training


# of the limit, kept free when a faster run is given more epochs: epochs vary by a few percent, and a run that
# overruns anyway is cut by the clock with its learning rate already decayed
FILL_MARGIN_SHARE = 0.02
# at most this many times the planned epochs when the plans' cost was measured for the adapter trained: the fill
# corrects a cost model that errs by 10-25% on a CPU; a plan off by more was made on another machine or under
# load, and the timing warning says to re-plan. Another adapter's epochs were not predicted, only its budget.
FILL_MAX_FACTOR = 1.5


def epochs_that_fit(budget: TimeBudget, epochs_done: int, total_epochs: int, seconds_per_epoch: float,
                    reserve_s: float, most_epochs: int | None) -> int:
    """The epoch count that trains for the budget: ``total_epochs``, or more (up to ``most_epochs``; None: as
    many as the time holds) when the time left, less ``reserve_s`` for the final validation and a small margin,
    holds more epochs of ``seconds_per_epoch``. Never fewer: a slower run is ended on time by the clock-driven
    decay."""
    if not budget.limited or seconds_per_epoch <= 0:
        return total_epochs
    left = budget.limit_s * (1.0 - FILL_MARGIN_SHARE) - reserve_s - budget.elapsed()
    fitted = epochs_done + int(left // seconds_per_epoch)
    return max(total_epochs, fitted if most_epochs is None else min(most_epochs, fitted))
