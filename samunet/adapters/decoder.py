"""``decoder``: frozen image encoder; SAM's mask decoder fine-tuned with one output token per class.

The multi-class head follows SAMed: the decoder gets one mask token per output (classes incl. background
for softmax output, foreground labels for sigmoid output) and all of them are used (no separate
single-mask token); the mask tokens, hypernetwork MLPs and IoU head are re-initialised, the two-way
transformer and upscaling keep their pretrained weights.
No prompt: the sparse prompt is empty and the dense prompt is the (trained) "no mask" embedding.
The encoder is frozen, so embeddings can be cached (``supports_embedding_cache``).
"""
from __future__ import annotations

import torch
from segment_anything.modeling.mask_decoder import MLP
from torch import nn

from samunet.adapters.base import Adapter
from samunet.modeling.batched_decoder import batched_predict_masks


def reinit_mask_decoder_for_outputs(decoder: nn.Module, num_outputs: int) -> None:
    """Give ``decoder`` exactly ``num_outputs`` mask tokens (SAMed: every token is an output), fresh init."""
    dim = decoder.transformer_dim
    iou_head = decoder.iou_prediction_head
    device = decoder.iou_token.weight.device
    decoder.num_multimask_outputs = num_outputs - 1  # stock meaning: tokens = multimask outputs + 1
    decoder.num_mask_tokens = num_outputs
    decoder.mask_tokens = nn.Embedding(num_outputs, dim, device=device)
    decoder.output_hypernetworks_mlps = nn.ModuleList(
        [MLP(dim, dim, dim // 8, 3) for _ in range(num_outputs)]).to(device)
    decoder.iou_prediction_head = MLP(dim, iou_head.layers[0].out_features, num_outputs,
                                      iou_head.num_layers).to(device)


class DecoderAdapter(Adapter):
    name = "decoder"

    def __init__(self, sam, num_classes: int, in_channels: int, config) -> None:
        super().__init__(sam, num_classes, in_channels, config, config.output)
        self._adapt_encoder()
        reinit_mask_decoder_for_outputs(self.sam.mask_decoder, self.num_outputs)
        self._set_trainable(self._trainable())

    def _adapt_encoder(self) -> None:
        """Subclasses wrap encoder layers here (SAMed: LoRA)."""

    def _trainable(self) -> list[nn.Parameter]:
        return [*self.sam.mask_decoder.parameters(), self.sam.prompt_encoder.no_mask_embed.weight]

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        prompt_encoder = self.sam.prompt_encoder
        dim = embeddings.shape[1]
        sparse = embeddings.new_zeros(1, 0, dim)  # one empty prompt set shared by every image
        dense = prompt_encoder.no_mask_embed.weight.reshape(1, dim, 1, 1)
        masks, _ = batched_predict_masks(self.sam.mask_decoder, embeddings, prompt_encoder.get_dense_pe(),
                                         sparse, dense)
        return masks[:, 0]  # every mask token is an output: (B, K, 4h, 4w)
