"""Choosing layers by type and name (so every adapter works on SAM's ViT and on TinyViT alike)."""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn


def is_layer_norm(module: nn.Module) -> bool:
    """nn.LayerNorm and the channel-first LayerNorm2d classes (SAM's and TinyViT's own copy)."""
    return isinstance(module, nn.LayerNorm) or type(module).__name__ == "LayerNorm2d"


def set_module(root: nn.Module, dotted_name: str, new: nn.Module) -> None:
    parent_name, _, child = dotted_name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def encoder_linears(encoder: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Every nn.Linear inside the image encoder (attention qkv/proj, MLP layers)."""
    return [(n, m) for n, m in encoder.named_modules() if type(m) is nn.Linear]


def neck_convs(encoder: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The neck's (ungrouped) convolutions, 1x1 and 3x3."""
    neck = getattr(encoder, "neck", None)
    if neck is None:
        return []
    return [(f"neck.{n}", m) for n, m in neck.named_modules() if type(m) is nn.Conv2d and m.groups == 1]


def qkv_layers(encoder: nn.Module) -> Iterator[tuple[str, nn.Module, nn.Linear]]:
    """(name of the qkv linear, its attention module, the linear) for every attention block."""
    for name, module in encoder.named_modules():
        qkv = getattr(module, "qkv", None)
        if type(qkv) is nn.Linear:
            yield f"{name}.qkv" if name else "qkv", module, qkv


def qv_rows(attention: nn.Module, qkv: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """Output rows of the fused qkv projection that produce q and v.

    SAM's ViT: [q | k | v] blocks of ``dim``. TinyViT: per head [q (key_dim) | k (key_dim) | v (d)]."""
    if hasattr(attention, "key_dim") and hasattr(attention, "d"):  # TinyViT attention
        kd, d, heads = attention.key_dim, attention.d, attention.num_heads
        block = 2 * kd + d
        q = torch.cat([torch.arange(h * block, h * block + kd) for h in range(heads)])
        v = torch.cat([torch.arange(h * block + 2 * kd, (h + 1) * block) for h in range(heads)])
    else:
        if qkv.out_features % 3:
            raise ValueError(f"qkv layer with {qkv.out_features} outputs is not a [q|k|v] projection")
        dim = qkv.out_features // 3
        q, v = torch.arange(0, dim), torch.arange(2 * dim, 3 * dim)
    return q, v
