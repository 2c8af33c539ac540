"""``full``: every encoder and decoder parameter trains (the multi-class decoder head of ``decoder``).

The reference point for the parameter-efficient adapters; checkpoints hold the whole model.
BatchNorm statistics (TinyViT) stay frozen; their affine weights train."""
from __future__ import annotations

from samunet.adapters.decoder import DecoderAdapter


class FullAdapter(DecoderAdapter):
    name = "full"

    def _trainable(self):
        return [*self.sam.image_encoder.parameters(), *super()._trainable()]
