"""``loramednet`` (after Li and Rajpurkar 2024; no public code, this is samunet's version): LoRA on the
encoder's q and v projections (as SAMed) plus the CNN head of ``cnnhead``."""
from __future__ import annotations

from samunet.adapters.cnnhead import CnnHeadAdapter
from samunet.adapters.lora import LoRAQVEncoderMixin


class LoRaMedNetAdapter(LoRAQVEncoderMixin, CnnHeadAdapter):
    name = "loramednet"
