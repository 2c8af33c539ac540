"""One optimisation step in the planned numeric precision (``samunet.modeling.runtime.PrecisionPolicy``).

The loss itself is computed in fp32 (see losses.py).
"""
from __future__ import annotations

import torch
from torch import nn

from samunet.core.errors import SamunetUserError
from samunet.modeling.runtime import PrecisionPolicy


class DivergedError(SamunetUserError, FloatingPointError):
    """The loss became NaN or infinite: a learning rate or precision the user can change."""


class StepRunner:
    """forward -> loss -> backward -> optimizer step, with autocast and (fp16) gradient scaling."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device, policy: PrecisionPolicy, grad_clip: float | None = 12.0):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.device, self.policy, self.grad_clip = device, policy, grad_clip
        self.scaler = torch.amp.GradScaler("cuda") if policy.use_grad_scaler else None

    def step(self, inputs: torch.Tensor | tuple[torch.Tensor, ...], seg: torch.Tensor) -> float:
        """One step on the model's ``inputs`` (images, or a tuple of its arguments: cached embeddings and their
        images) and training targets ``seg`` (the ignore label's pixels hold its target)."""
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        inputs = tuple(x.to(self.device, non_blocking=True) for x in inputs)
        seg = seg.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self.policy.autocast():
            logits = self.model(*inputs)
        loss = self.loss_fn(logits, seg)
        if not torch.isfinite(loss):
            raise DivergedError(f"the training loss became {loss.item()}; lower the learning rate (--lr) "
                                     "or train in fp32 (set training.precision in the plans)")
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            self.optimizer.step()
        return float(loss.detach())
