"""``ssam`` (S-SAM, Paranjape et al. 2024): singular-value adaptation of the image encoder plus label prompts.

Trained: a scale and shift of the singular values of every encoder linear layer and neck convolution
(``svd_linear``), every encoder LayerNorm, the (resized) absolute position embedding, the LayerNorms of
the decoder's two-way transformer, and one learned 256-d prompt token per foreground label. Frozen: the
rest, the mask decoder included.

Label prompts: the paper maps a frozen CLIP embedding of each label name through a Linear-ReLU-BatchNorm
"text affine layer" to one sparse prompt token. With CLIP frozen and label names fixed this is one learned
token per label; samunet learns that token directly (CLIP cannot be downloaded here, and BatchNorm over a
mixed-label batch would make outputs depend on the batch). Decoding: each image is encoded once and the
decoder runs once per label (single-mask token), all labels of all images in one batched call. Output
kind is ``sigmoid_per_label``; ``Adapter.probabilities`` applies S-SAM's 0.5-threshold arg-max rule.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from samunet.adapters import svd_cache
from samunet.adapters.base import Adapter
from samunet.adapters.layers import is_layer_norm
from samunet.adapters.svd_linear import apply_svd_adaptation, merge_svd, svd_layers
from samunet.modeling.batched_decoder import batched_predict_masks


class SSamAdapter(Adapter):
    name = "ssam"
    supported_outputs = ("sigmoid_per_label",)

    def __init__(self, sam, num_classes: int, in_channels: int, config, factor_cache=None) -> None:
        super().__init__(sam, num_classes, in_channels, config, config.output)
        encoder = self.sam.image_encoder
        cache_file = svd_cache.cache_path(sam.backbone_info.checkpoint_sha256)
        if factor_cache is None:
            factor_cache = svd_cache.load_factors(cache_file)
        names = apply_svd_adaptation(encoder, factor_cache)
        if cache_file is not None and (factor_cache is None or set(factor_cache) != set(names)):
            svd_cache.save_factors(cache_file, svd_layers(encoder))
        dim = sam.mask_decoder.transformer_dim
        # per-dimension scale of SAM's sin/cos prompt encodings (RMS 1/sqrt(2)): tokens the decoder can read
        self.label_tokens = nn.Parameter(torch.randn(self.num_outputs, 1, dim) / math.sqrt(2))
        trainable = [p for _, m in svd_layers(encoder) for p in (m.scale, m.shift)]
        trainable += [p for m in encoder.modules() if is_layer_norm(m) for p in m.parameters()]
        if getattr(encoder, "pos_embed", None) is not None:
            trainable.append(encoder.pos_embed)
        trainable += [p for m in sam.mask_decoder.transformer.modules() if is_layer_norm(m) for p in m.parameters()]
        self._set_trainable(trainable + [self.label_tokens])

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        prompt_encoder = self.sam.prompt_encoder
        dim = embeddings.shape[1]
        dense = prompt_encoder.no_mask_embed.weight.reshape(1, dim, 1, 1)
        masks, _ = batched_predict_masks(self.sam.mask_decoder, embeddings, prompt_encoder.get_dense_pe(),
                                         self.label_tokens, dense)
        return masks[:, :, 0]  # single-mask token per (image, label): (B, labels, 4h, 4w)

    def _merge_layers(self) -> None:
        merge_svd(self.sam.image_encoder)
