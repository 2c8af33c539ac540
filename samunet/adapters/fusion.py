"""``fusion``: the frozen SAM encoder's image embedding fused into a small trainable U-Net that sees the patch at its
own resolution (``fusion_unet.FusionUNet``), after nnSAM (Li et al. 2023), SAM-UNet and SAMUS.

Every other adapter decodes from the encoder's tokens (stride 4 for LiteMedSAM, 16 for SAM's ViTs), so no trained
layer sees the image at native resolution and the errors sit at the boundary. Here the U-Net does, and the
embedding brings what the pretraining learned. Nothing before the embedding trains, so embeddings are cached
and a training step runs the U-Net alone. Plans: ``unet_widths`` (one width per stage; stage ``s`` has stride
``2**s``), ``fusion_stage`` (the stage the embedding joins, chosen by the planner to match its grid) and
``deep_supervision`` (training-mode logits of the coarser decoder stages too, nnU-Net's rule: fusion_unet.py).
"""
from __future__ import annotations

import torch

from samunet.adapters.base import Adapter
from samunet.adapters.fusion_unet import FusionUNet


class FusionAdapter(Adapter):
    name = "fusion"
    uses_images_after_encoder = True  # forward_from_embeddings reads the images, not only their size
    config_fields = ("unet_widths", "fusion_stage", "deep_supervision")  # AdapterConfig fields this adapter reads

    def __init__(self, sam, num_classes: int, in_channels: int, config) -> None:
        super().__init__(sam, num_classes, in_channels, config, config.output)
        embedding_channels = sam.mask_decoder.transformer_dim  # the neck's output width
        self.unet = FusionUNet(in_channels, embedding_channels, self.num_outputs, list(config.unet_widths),
                               int(config.fusion_stage), bool(config.deep_supervision))
        self.identity["unet_widths"] = list(config.unet_widths)
        self.identity["fusion_stage"] = int(config.fusion_stage)
        self.identity["deep_supervision"] = bool(config.deep_supervision)
        self._set_trainable(list(self.unet.parameters()))

    def forward_from_embeddings(self, embeddings: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] != self.in_channels:  # one channel under the "repeat" packing (Adapter.prepare)
            images = images.expand(-1, self.in_channels, -1, -1)
        # [0, 1] -> [-1, 1]; the first InstanceNorm takes care of each image's own statistics
        logits = self.unet(images.to(embeddings.dtype) * 2.0 - 1.0, embeddings)
        return [x.float() for x in logits] if isinstance(logits, list) else logits.float()
