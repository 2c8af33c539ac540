"""The module that normalises a [0, 1] RGB batch the way a backbone's encoder expects
(``specs.input_normalization``)."""
from __future__ import annotations

import torch

from samunet.modeling.specs import input_normalization


class InputNormalizer(torch.nn.Module):
    """[0, 1] RGB -> what the backbone's encoder expects (buffers, not parameters; not saved)."""

    def __init__(self, backbone: str) -> None:
        super().__init__()
        mean, std = input_normalization(backbone)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.identity = all(m == 0 for m in mean) and all(s == 1 for s in std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.identity else (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
