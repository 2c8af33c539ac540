"""``loramednet`` (after Li and Rajpurkar 2024; no public code, this is samunet's version): LoRA on the
encoder's q and v projections (as SAMed) plus the CNN head of ``cnnhead``."""
from __future__ import annotations

from samunet.adapters.cnnhead import CnnHeadAdapter
from samunet.adapters.lora import LoRAQKV, apply_lora_qv, merge_lora


class LoRaMedNetAdapter(CnnHeadAdapter):
    name = "loramednet"

    def _adapt_encoder(self) -> None:
        apply_lora_qv(self.sam.image_encoder, self.config.lora_rank)
        self.identity["lora_rank"] = self.config.lora_rank

    def _trainable(self):
        lora = [p for m in self.sam.image_encoder.modules() if isinstance(m, LoRAQKV)
                for p in (m.lora_a_q, m.lora_b_q, m.lora_a_v, m.lora_b_v)]
        return lora + super()._trainable()

    def _merge_layers(self) -> None:
        merge_lora(self.sam.image_encoder)
