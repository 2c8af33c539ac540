"""One optimisation step with the planned numeric precision.

- CPU: bf16 autocast when ``precision == "bf16"`` (fast on CPUs with AVX-512 BF16/AMX, and no loss scaling is
  needed); fp16 is not offered on CPU and falls back to fp32 with a warning.
- CUDA: autocast in fp16 with a ``GradScaler`` (fp16 gradients underflow without it) or in bf16 without one.
- MPS: fp32 (autocast on MPS is still partial).
The loss itself is computed in fp32 (see losses.py).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from samunet.core.errors import SamunetUserError
from samunet.utils.logs import get_logger

log = get_logger()


class DeviceError(SamunetUserError, ValueError):
    pass


class DivergedError(SamunetUserError, FloatingPointError):
    """The loss became NaN or infinite: a learning rate or precision the user can change."""


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; an explicit device that is unavailable is a clear error."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was requested but torch sees no CUDA GPU (torch.cuda.is_available() is False)")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("--device mps was requested but MPS is not available in this torch build / machine")
    if requested not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unknown device {requested!r} (use auto, cpu, cuda or mps)")
    return torch.device(requested)


@dataclass
class PrecisionPolicy:
    autocast_dtype: torch.dtype | None  # None: fp32
    use_grad_scaler: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]


def precision_policy(device: torch.device, precision: str) -> PrecisionPolicy:
    if precision not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"unknown precision {precision!r} (expected bf16, fp16 or fp32)")
    if device.type == "cuda":
        if precision == "fp16":
            return PrecisionPolicy(torch.float16, True)
        if precision == "bf16":
            return PrecisionPolicy(torch.bfloat16, False)
    if device.type == "cpu" and precision in ("bf16", "fp16"):
        if precision == "fp16":
            log.warning("fp16 is not used on CPU: training in bf16 instead")
        return PrecisionPolicy(torch.bfloat16, False)
    return PrecisionPolicy(None, False)


class StepRunner:
    """forward -> loss -> backward -> optimizer step, with autocast and (fp16) gradient scaling."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device, policy: PrecisionPolicy, grad_clip: float | None = 12.0):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.device, self.policy, self.grad_clip = device, policy, grad_clip
        self.scaler = torch.amp.GradScaler("cuda") if policy.use_grad_scaler else None

    def autocast(self):
        if self.policy.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.policy.autocast_dtype)

    def step(self, images: torch.Tensor, seg: torch.Tensor) -> float:
        images = images.to(self.device, non_blocking=True)
        seg = seg.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.model(images)
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
