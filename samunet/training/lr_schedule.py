"""Learning rate: linear warm-up, then poly decay (nnU-Net, SAMed) or constant; plus the optimizer.

Without a time limit the schedule is a pure function of the iteration, so resuming only needs the iteration
count, and a ``--continue`` that extends ``--epochs`` simply stretches the decay over the new total. With
``--time-limit-min`` the decay also follows the clock (``time_budget``).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from samunet.core.plans import AdapterConfig

OPTIMIZERS = ("adamw", "adam", "sgd")


def learning_rate_at(iteration: int, base_lr: float, total_iterations: int, warmup_iterations: int = 0,
                     schedule: str = "poly", power: float = 0.9, time_fraction: float = 0.0) -> float:
    """Learning rate for 0-based ``iteration``: linear warm-up from base_lr / warmup to base_lr, then decay.

    ``time_fraction``: share of a time limit already used (``time_budget``); the decay is at least that far."""
    if warmup_iterations > 0 and iteration < warmup_iterations:
        return base_lr * (iteration + 1) / warmup_iterations
    if schedule == "constant":
        return base_lr
    if schedule != "poly":
        raise ValueError(f"unknown lr_schedule {schedule!r} (expected 'poly' or 'constant')")
    decay_span = max(1, total_iterations - warmup_iterations)
    progress = min(1.0, max((iteration - warmup_iterations) / decay_span, time_fraction))
    return base_lr * (1 - progress) ** power


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def build_optimizer(parameters: Iterable[torch.nn.Parameter], config: AdapterConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD (Nesterov, momentum 0.99 like nnU-Net) over the adapter's trainable parameters only."""
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("the adapter reports no trainable parameters")
    name = config.optimizer.lower()
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.99, nesterov=True, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
