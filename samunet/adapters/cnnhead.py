"""``cnnhead`` (Hu, Xu and Shi 2023): frozen SAM encoder, its embedding decoded by a trained CNN head
(``cnn_head.CNNHead``) to logits at 4x the embedding resolution. Embeddings can be cached."""
from __future__ import annotations

import torch

from samunet.adapters.base import Adapter
from samunet.adapters.cnn_head import CNNHead


class CnnHeadAdapter(Adapter):
    name = "cnnhead"
    config_fields = ("head_width",)  # AdapterConfig fields this part reads (registry.adapter_config_fields)

    def __init__(self, sam, num_classes: int, in_channels: int, config) -> None:
        super().__init__(sam, num_classes, in_channels, config, config.output)
        self._adapt_encoder()
        embed_dim = sam.mask_decoder.transformer_dim  # the neck's output width
        self.head = CNNHead(embed_dim, self.num_outputs, config.head_width)
        self.identity["head_width"] = config.head_width
        self._set_trainable(self._trainable())

    def _adapt_encoder(self) -> None:
        """Subclasses wrap encoder layers here (LoRaMedNet: LoRA)."""

    def _trainable(self):
        return list(self.head.parameters())

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.head(embeddings)
