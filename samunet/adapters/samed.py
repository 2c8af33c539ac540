"""``samed`` (Zhang and Liu 2023): LoRA (rank ``lora_rank``) on the q and v projections of every encoder
block, plus the whole mask decoder with one output token per class and the "no mask" prompt embedding."""
from __future__ import annotations

from samunet.adapters.decoder import DecoderAdapter
from samunet.adapters.lora import LoRAQKV, apply_lora_qv, merge_lora


class SamedAdapter(DecoderAdapter):
    name = "samed"

    def _adapt_encoder(self) -> None:
        apply_lora_qv(self.sam.image_encoder, self.config.lora_rank)
        self.identity["lora_rank"] = self.config.lora_rank

    def _trainable(self):
        lora = [p for m in self.sam.image_encoder.modules() if isinstance(m, LoRAQKV)
                for p in (m.lora_a_q, m.lora_b_q, m.lora_a_v, m.lora_b_v)]
        return lora + super()._trainable()

    def _merge_layers(self) -> None:
        merge_lora(self.sam.image_encoder)
