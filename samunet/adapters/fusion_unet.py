"""The trainable network of the ``fusion`` adapter: a small 2D U-Net at the patch's own resolution that takes the
frozen SAM image embedding in at one encoder stage.

nnU-Net's 2D building blocks: two 3x3 conv - InstanceNorm - LeakyReLU per stage, a strided convolution down at the
start of every stage but the first, transposed convolutions up, skip connections by concatenation. The embedding
(B, E, g, g) is projected by a 1x1 convolution, resized bilinearly to the fusion stage's grid and concatenated
there before that stage's second convolution (nnSAM, Li et al. 2023, concatenates at one level too), so every
deeper stage and every skip from there on sees it.

Sides that are not multiples of the deepest stride are zero-padded on the bottom and right, and the logits cut back.

Deep supervision (nnU-Net's): with ``deep_supervision`` on, a 1x1 classifier on each decoder stage of stride 2..2^(n-3)
gives extra logits in training mode, coarsest last; the loss (training/losses.py ``DeepSupervisionLoss``) weighs them
1/2^s. nnU-Net gives the coarsest decoder stage (stride 2^(n-2)) weight 0, so it has no classifier here. In
evaluation mode, and for a U-Net of 3 stages or fewer, the full-resolution logits alone come back.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from samunet.core.adapter_defaults import deeply_supervised_stages


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.01, inplace=True))


class FusionUNet(nn.Module):
    """``forward(images (B, Cin, H, W), embeddings (B, E, g, g)) -> logits (B, K, H, W)``; in training mode with
    deep supervision a list: those logits, then the logits of strides 2, 4, ... (``supervised_strides``)."""

    def __init__(self, in_channels: int, embedding_channels: int, num_outputs: int, widths: list[int],
                 fusion_at: int, deep_supervision: bool = False) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"a U-Net needs at least 2 stages, got widths {widths}")
        if not 0 <= fusion_at < len(widths):
            raise ValueError(f"fusion stage {fusion_at} is outside the {len(widths)} stages")
        self.widths, self.fusion_at = list(widths), fusion_at
        self.first = nn.ModuleList()
        self.second = nn.ModuleList()
        cin = in_channels
        for s, width in enumerate(widths):
            self.first.append(_conv(cin, width, stride=1 if s == 0 else 2))
            extra = width if s == fusion_at else 0
            self.second.append(_conv(width + extra, width))
            cin = width
        fused = widths[fusion_at]
        self.project = nn.Sequential(nn.Conv2d(embedding_channels, fused, 1, bias=False),
                                     nn.InstanceNorm2d(fused, affine=True), nn.LeakyReLU(0.01, inplace=True))
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        for s in range(len(widths) - 1, 0, -1):
            self.up.append(nn.ConvTranspose2d(widths[s], widths[s - 1], 2, stride=2, bias=False))
            self.decode.append(nn.Sequential(_conv(2 * widths[s - 1], widths[s - 1]),
                                             _conv(widths[s - 1], widths[s - 1])))
        self.classifier = nn.Conv2d(widths[0], num_outputs, 1)
        self.supervised_stages = deeply_supervised_stages(len(widths), deep_supervision)
        self.deep_classifiers = nn.ModuleList(nn.Conv2d(widths[s], num_outputs, 1) for s in self.supervised_stages
                                              ) if self.supervised_stages else None

    @property
    def supervised_strides(self) -> list[int]:
        """The stride of each output in training mode, full resolution first."""
        return [1, *(2 ** s for s in self.supervised_stages)]

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.widths) - 1)

    def forward(self, images: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        m = self.size_multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        x = F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images
        skips = []
        for s, (first, second) in enumerate(zip(self.first, self.second)):
            x = first(x)
            if s == self.fusion_at:
                x = torch.cat([x, self._embedding_at(embeddings, (h, w), x.shape[-2:], s)], dim=1)
            x = second(x)
            skips.append(x)
        supervised = self.deep_classifiers is not None and self.training
        coarse = []  # logits of the deeply supervised decoder stages, coarsest first
        stages = range(len(self.widths) - 2, -1, -1)  # the stage each decoder step ends on
        for stage, up, decode, skip in zip(stages, self.up, self.decode, reversed(skips[:-1])):
            x = decode(torch.cat([up(x), skip], dim=1))
            if supervised and stage in self.supervised_stages:
                stride = 2 ** stage
                head = self.deep_classifiers[self.supervised_stages.index(stage)]
                coarse.append(head(x)[..., :math.ceil(h / stride), :math.ceil(w / stride)])
        logits = self.classifier(x)[..., :h, :w]
        return [logits, *reversed(coarse)] if supervised else logits

    def _embedding_at(self, embeddings: torch.Tensor, hw: tuple[int, int], stage_hw, stage: int) -> torch.Tensor:
        """The projected embedding on stage ``stage``'s grid of the unpadded patch, zero-padded like the stage.

        Bilinear resizing with ``align_corners=False`` commutes with flips and (square) transposes, so an embedding
        flipped with its image stays aligned with it."""
        stride = 2 ** stage
        grid = (math.ceil(hw[0] / stride), math.ceil(hw[1] / stride))
        projected = self.project(embeddings.to(self.project[0].weight.dtype))
        if tuple(projected.shape[-2:]) != grid:
            projected = F.interpolate(projected, size=grid, mode="bilinear", align_corners=False)
        pad_h, pad_w = stage_hw[0] - grid[0], stage_hw[1] - grid[1]
        return F.pad(projected, (0, pad_w, 0, pad_h)) if pad_h or pad_w else projected
