"""SAM's mask decoder for B images x T prompt sets in one call.

The stock ``MaskDecoder.predict_masks`` repeat-interleaves the image embeddings by the number of prompt
sets, so a batch of B images with one prompt set each becomes B * B decodes (or fails). Here each image
is paired with its own T prompt sets: B * T decodes, no per-image Python loop. The arithmetic is the
stock one, so results equal decoding each image on its own.
"""
from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder


def batched_predict_masks(
    decoder: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompts: torch.Tensor,
    dense_prompts: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All mask tokens' outputs.

    image_embeddings: (B, C, h, w); image_pe: (1, C, h, w);
    sparse_prompts: (B, T, N, C), or (T, N, C) shared by every image (N may be 0);
    dense_prompts: (B, C, h, w) or (1, C, h, w) (e.g. the "no mask" embedding broadcast).
    Returns masks (B, T, num_mask_tokens, 4h, 4w) and IoU predictions (B, T, num_mask_tokens).
    """
    batch, channels, h, w = image_embeddings.shape
    if sparse_prompts.dim() == 3:
        sparse_prompts = sparse_prompts.unsqueeze(0).expand(batch, -1, -1, -1)
    if sparse_prompts.shape[0] != batch:
        raise ValueError(f"sparse prompts for {sparse_prompts.shape[0]} images, embeddings for {batch}")
    num_sets, num_tokens = sparse_prompts.shape[1], sparse_prompts.shape[2]
    sparse = sparse_prompts.reshape(batch * num_sets, num_tokens, channels)

    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(batch * num_sets, -1, -1)
    tokens = torch.cat((output_tokens, sparse.to(output_tokens.dtype)), dim=1)

    src = image_embeddings + dense_prompts  # broadcast (1, C, h, w) or per image
    if num_sets > 1:
        src = src.repeat_interleave(num_sets, dim=0)  # image i -> rows i*T .. i*T+T-1
    pos_src = image_pe.expand(src.shape[0], -1, -1, -1)

    hs, src = decoder.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]

    src = src.transpose(1, 2).reshape(src.shape[0], channels, h, w)
    upscaled = decoder.output_upscaling(src)
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    b, c, uh, uw = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, uh * uw)).view(b, -1, uh, uw)
    iou_pred = decoder.iou_prediction_head(iou_token_out)
    return masks.view(batch, num_sets, -1, uh, uw), iou_pred.view(batch, num_sets, -1)
