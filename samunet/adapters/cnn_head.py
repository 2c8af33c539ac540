"""Convolutional prediction head after Hu, Xu and Shi (2023), used by ``cnnhead`` and ``loramednet``.

Decodes the encoder's C x h x w embedding to class logits at 4h x 4w: 1x1 convs widen, two 3x3 blocks
narrow, two transposed convs upsample x2 each, a 1x1 conv gives the classes. Widths start at
``width`` (plans: ``head_width``). GroupNorm rather than BatchNorm: outputs do not depend on what else
is in the batch, and small CPU batches train stably.
"""
from __future__ import annotations

import math

from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


def _conv_block(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), _norm(cout),
                         nn.ReLU(inplace=True))


def _up_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False), _norm(cout), nn.ReLU(inplace=True))


class CNNHead(nn.Module):
    def __init__(self, in_channels: int, num_outputs: int, width: int = 256) -> None:
        super().__init__()
        if width < 32 or width % 8:
            raise ValueError(f"CNN head width must be a multiple of 8 and at least 32, got {width}")
        self.widen = nn.Sequential(_conv_block(in_channels, width, 1), _conv_block(width, 2 * width, 1))
        self.narrow = nn.Sequential(_conv_block(2 * width, width, 3), _conv_block(width, width // 2, 3))
        self.upsample = nn.Sequential(_up_block(width // 2, width // 4), _up_block(width // 4, width // 8))
        self.classifier = nn.Conv2d(width // 8, num_outputs, 1)

    def forward(self, embeddings):
        return self.classifier(self.upsample(self.narrow(self.widen(embeddings))))
