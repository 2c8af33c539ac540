"""Where and in which precision a model runs: the one device resolution and the one autocast policy, shared by
``samunet_plan`` (hardware detection, cost measurements), ``samunet_train`` (training steps, embedding cache,
validation) and ``samunet_predict``.

- CPU: bf16 autocast when the plans say ``bf16`` (fast on CPUs with AVX-512 BF16/AMX, no loss scaling needed);
  ``fp16`` is not offered on CPU and runs as bf16.
- CUDA: autocast in fp16 with a ``GradScaler`` when training (fp16 gradients underflow without it), or in bf16
  without one.
- MPS: fp32 (autocast on MPS is still partial).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from samunet.core.errors import SamunetUserError
from samunet.core.plans import PlansError
from samunet.utils.logs import get_logger

log = get_logger()

PRECISIONS = ("bf16", "fp16", "fp32")


class DeviceError(SamunetUserError, ValueError):
    pass


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def auto_device() -> torch.device:
    """CUDA, else Apple MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps") if _mps_available() else torch.device("cpu")


def resolve_device(requested: str | None, source: str = "--device") -> torch.device:
    """``None`` or ``auto``: ``auto_device()``. An explicit device (``cpu``, ``cuda``, ``cuda:N``, ``mps``)
    that this machine lacks is a one-line error naming ``source`` (the flag or the plans field it came from)."""
    if requested in (None, "auto"):
        return auto_device()
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"{source} {requested!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{source} {requested}: torch sees no CUDA GPU on this machine (torch.cuda.is_available() "
                          "is False)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"{source} {requested}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not _mps_available():
        raise DeviceError(f"{source} {requested}: MPS is not available in this torch build / machine")
    return device


@dataclass(frozen=True)
class PrecisionPolicy:
    device_type: str
    autocast_dtype: torch.dtype | None  # None: fp32
    use_grad_scaler: bool  # training only: fp16 on CUDA

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]

    def autocast(self):
        """The autocast context for a forward pass (a no-op in fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)


def precision_policy(device: torch.device, precision: str) -> PrecisionPolicy:
    """What ``training.precision`` of the plans means on ``device``."""
    if precision not in PRECISIONS:
        raise PlansError(f"training.precision {precision!r} is unknown; known: {', '.join(PRECISIONS)}")
    if device.type == "cpu" and precision == "fp16":
        log.warning("fp16 is not used on CPU: bf16 instead")
    if device.type == "cuda" and precision == "fp16":
        return PrecisionPolicy("cuda", torch.float16, True)
    if device.type in ("cuda", "cpu") and precision != "fp32":
        return PrecisionPolicy(device.type, torch.bfloat16, False)
    return PrecisionPolicy(device.type, None, False)
