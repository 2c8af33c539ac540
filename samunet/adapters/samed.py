"""``samed`` (Zhang and Liu 2023): LoRA (rank ``lora_rank``) on the q and v projections of every encoder
block, plus the whole mask decoder with one output token per class and the "no mask" prompt embedding."""
from __future__ import annotations

from samunet.adapters.decoder import DecoderAdapter
from samunet.adapters.lora import LoRAQVEncoderMixin


class SamedAdapter(LoRAQVEncoderMixin, DecoderAdapter):
    name = "samed"
