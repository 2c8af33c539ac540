"""The batched mask decoder equals SAM's own decoder run image by image."""
from __future__ import annotations

import torch

from samunet.modeling import batched_predict_masks, build_sam


def test_batched_decoder_equals_per_image_stock_decoding():
    torch.manual_seed(0)
    sam = build_sam("tiny", 64)
    decoder, prompt_encoder = sam.mask_decoder, sam.prompt_encoder
    batch, sets, tokens, dim = 3, 2, 2, decoder.transformer_dim
    emb = torch.randn(batch, dim, 4, 4)
    sparse = torch.randn(batch, sets, tokens, dim)
    dense = torch.randn(batch, dim, 4, 4)
    pe = prompt_encoder.get_dense_pe()
    with torch.no_grad():
        masks, iou = batched_predict_masks(decoder, emb, pe, sparse, dense)
        for i in range(batch):
            # stock: one image, its T prompt sets (dense prompt broadcast per set)
            ref_masks, ref_iou = decoder.predict_masks(emb[i : i + 1], pe, sparse[i], dense[i : i + 1])
            torch.testing.assert_close(masks[i], ref_masks, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(iou[i], ref_iou, rtol=1e-5, atol=1e-5)
    assert masks.shape == (batch, sets, decoder.num_mask_tokens, 16, 16)


def test_shared_prompts_broadcast_to_every_image():
    torch.manual_seed(1)
    sam = build_sam("tiny", 64)
    dim = sam.mask_decoder.transformer_dim
    emb = torch.randn(2, dim, 4, 4)
    shared = torch.randn(3, 1, dim)
    no_mask = sam.prompt_encoder.no_mask_embed.weight.reshape(1, dim, 1, 1)
    pe = sam.prompt_encoder.get_dense_pe()
    with torch.no_grad():
        masks, _ = batched_predict_masks(sam.mask_decoder, emb, pe, shared, no_mask)
        one, _ = batched_predict_masks(sam.mask_decoder, emb[1:], pe, shared, no_mask)
    torch.testing.assert_close(masks[1:], one, rtol=1e-5, atol=1e-5)  # independent of the other images
