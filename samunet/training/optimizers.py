"""The optimizer, chosen by name from the plans (``adapters.<name>.optimizer``) through ``OPTIMIZERS``.

Only the adapter's trainable parameters are optimised. A new optimizer is one entry:
``OPTIMIZERS["name"] = build(params, config, lr)``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from samunet.core.plans import AdapterConfig, check_optional_fields, named_choice

OptimizerBuilder = Callable[[list[torch.nn.Parameter], AdapterConfig, float], torch.optim.Optimizer]

OPTIMIZERS: dict[str, OptimizerBuilder] = {
    "adamw": lambda params, c, lr: torch.optim.AdamW(params, lr=lr, betas=tuple(c.betas), weight_decay=c.weight_decay),
    "adam": lambda params, c, lr: torch.optim.Adam(params, lr=lr, betas=tuple(c.betas), weight_decay=c.weight_decay),
    # Nesterov, momentum 0.99 like nnU-Net
    "sgd": lambda params, c, lr: torch.optim.SGD(params, lr=lr, momentum=0.99, nesterov=True,
                                                 weight_decay=c.weight_decay),
}
# AdapterConfig fields only some optimizers read (null for the others)
OPTIMIZER_FIELDS = {"adamw": ("betas",), "adam": ("betas",)}


def build_optimizer(parameters: Iterable[torch.nn.Parameter], config: AdapterConfig, lr: float,
                    field_name: str = "optimizer") -> torch.optim.Optimizer:
    """``config.optimizer`` over the parameters that require gradients; ``field_name`` names the plans field in
    the error for an unknown name (``adapters.<adapter>.optimizer``)."""
    name = config.optimizer.lower()
    build = named_choice(OPTIMIZERS, name, field_name)
    check_optional_fields(config, ("betas",), OPTIMIZER_FIELDS.get(name, ()), field_name.rpartition(".")[0] or
                          "adapters.<adapter>", f"optimizer {config.optimizer!r}")
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("the adapter reports no trainable parameters")
    return build(params, config, lr)
