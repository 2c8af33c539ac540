"""LoRA on the q and v rows of a fused qkv projection (SAMed): q += B_q A_q x, v += B_v A_v x.

Rank r, A Kaiming-uniform, B zeros (so the adapted layer starts equal to the frozen one), no scaling,
no dropout. The row layout of q and v comes from ``layers.qv_rows`` (SAM's ViT and TinyViT differ).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from samunet.adapters.layers import qkv_layers, qv_rows, set_module


class LoRAQKV(nn.Module):
    def __init__(self, base: nn.Linear, q_rows: torch.Tensor, v_rows: torch.Tensor, rank: int) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.rank = rank
        for p in base.parameters():
            p.requires_grad_(False)
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_a_q = nn.Parameter(torch.empty(rank, base.in_features, device=device, dtype=dtype))
        self.lora_a_v = nn.Parameter(torch.empty(rank, base.in_features, device=device, dtype=dtype))
        self.lora_b_q = nn.Parameter(torch.zeros(len(q_rows), rank, device=device, dtype=dtype))
        self.lora_b_v = nn.Parameter(torch.zeros(len(v_rows), rank, device=device, dtype=dtype))
        for a in (self.lora_a_q, self.lora_a_v):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # nn.Linear's default, as SAMed
        self.register_buffer("q_rows", q_rows.to(device), persistent=False)
        self.register_buffer("v_rows", v_rows.to(device), persistent=False)

    def _b_full(self) -> torch.Tensor:
        """(out, 2r): B_q in the q rows (first r columns), B_v in the v rows (last r), zeros elsewhere."""
        r = self.rank
        b = self.lora_b_q.new_zeros(self.base.out_features, 2 * r)
        b = b.index_copy(0, self.q_rows, F.pad(self.lora_b_q, (0, r)))
        return b.index_copy(0, self.v_rows, F.pad(self.lora_b_v, (r, 0)))

    def delta_weight(self) -> torch.Tensor:
        return self._b_full() @ torch.cat([self.lora_a_q, self.lora_a_v], dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.linear(x, torch.cat([self.lora_a_q, self.lora_a_v], dim=0))  # (..., 2r): cheap
        return self.base(x) + F.linear(low, self._b_full())

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain nn.Linear with W + B A: the same function, no extra cost."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        out.weight.copy_(self.base.weight + self.delta_weight().to(self.base.weight.dtype))
        if self.base.bias is not None:
            out.bias.copy_(self.base.bias)
        return out.requires_grad_(False)


def apply_lora_qv(encoder: nn.Module, rank: int) -> list[str]:
    """Wrap every attention block's qkv projection in ``encoder``; returns the wrapped layer names."""
    targets = list(qkv_layers(encoder))
    if not targets:
        raise ValueError(f"{type(encoder).__name__}: no attention qkv projection found for LoRA")
    for name, attention, qkv in targets:
        q_rows, v_rows = qv_rows(attention, qkv)
        set_module(encoder, name, LoRAQKV(qkv, q_rows, v_rows, rank))
    return [name for name, _, _ in targets]


def merge_lora(root: nn.Module) -> int:
    """Replace every LoRAQKV under ``root`` by its merged nn.Linear; returns how many."""
    names = [n for n, m in root.named_modules() if isinstance(m, LoRAQKV)]
    for name in names:
        set_module(root, name, root.get_submodule(name).merged())
    return len(names)


class LoRAQVEncoderMixin:
    """SAMed's encoder adaptation (LoRA on q and v of every block) for any adapter class that puts it in front of
    its own trainable parts (samed: the mask decoder; loramednet: the CNN head)."""

    config_fields = ("lora_rank",)  # AdapterConfig fields this part reads (registry.adapter_config_fields)

    def _adapt_encoder(self) -> None:
        apply_lora_qv(self.sam.image_encoder, self.config.lora_rank)
        self.identity["lora_rank"] = self.config.lora_rank

    def _trainable(self):
        lora = [p for m in self.sam.image_encoder.modules() if isinstance(m, LoRAQKV)
                for p in (m.lora_a_q, m.lora_b_q, m.lora_a_v, m.lora_b_v)]
        return lora + super()._trainable()

    def _merge_layers(self) -> None:
        merge_lora(self.sam.image_encoder)
