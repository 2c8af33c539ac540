"""Build a ``segment_anything.modeling.Sam`` for any backbone and input size, with explicit arguments.

Never uses ``sam_model_registry`` (its loader calls ``torch.load`` without ``weights_only``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from samunet.modeling.checkpoints import (
    CheckpointIntegrityError,
    file_digest,
    load_state_dict_file,
    resolve_checkpoint,
    verify_known_checkpoint,
)
from samunet.core.names import BACKBONE_NAMES as BACKBONES
from samunet.modeling.position import fit_vit_state_dict, size_prompt_encoder
from samunet.modeling.specs import BACKBONE_SPECS, SAM_PIXEL_MEAN, SAM_PIXEL_STD, VIT_SPECS, embedding_stride
from samunet.modeling.tinyvit import build_litemedsam_encoder

log = logging.getLogger("samunet")


@dataclass
class BackboneInfo:
    """What a built model is, recorded on it as ``sam.backbone_info`` (adapter checkpoints store it)."""

    name: str
    input_size: int
    global_attention: bool
    checkpoint_path: str | None  # None: random init
    checkpoint_sha256: str | None
    embedding_stride: int


def _vit_encoder(spec, input_size: int, global_attention: bool) -> ImageEncoderViT:
    return ImageEncoderViT(
        depth=spec.depth, embed_dim=spec.embed_dim, img_size=input_size, mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=spec.num_heads,
        patch_size=spec.patch_size, qkv_bias=True,
        # S-SAM layout: global attention everywhere, no relative positions, no window padding
        use_rel_pos=not global_attention,
        global_attn_indexes=tuple(range(spec.depth)) if global_attention else spec.global_attn_indexes,
        window_size=0 if global_attention else spec.window_size, out_chans=spec.prompt_dim,
    )


def _prompt_and_decoder(dim: int, mlp_dim: int, heads: int, iou_hidden: int, mask_in_chans: int):
    prompt_encoder = PromptEncoder(embed_dim=dim, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                   mask_in_chans=mask_in_chans)
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=mlp_dim, num_heads=heads),
        transformer_dim=dim, iou_head_depth=3, iou_head_hidden_dim=iou_hidden,
    )
    return prompt_encoder, mask_decoder


RANDOM_INIT_SEED = 0


def build_sam_architecture(backbone: str, input_size: int, global_attention: bool = False) -> Sam:
    """The modules only, random init from a fixed seed (global RNG untouched): a random-init backbone (``tiny``
    without a checkpoint, benchmarks) is the same network in the process that trains and the one that predicts."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return _build_modules(backbone, input_size, global_attention)


def _build_modules(backbone: str, input_size: int, global_attention: bool) -> Sam:
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone '{backbone}'; known: {', '.join(BACKBONES)}")
    multiple = BACKBONE_SPECS[backbone].size_multiple
    if input_size % multiple or input_size < 32:
        raise ValueError(f"input size must be a multiple of {multiple} and at least 32, got {input_size}")
    if backbone == "litemedsam":
        if global_attention:
            raise ValueError("global_attention (S-SAM layout) applies to the ViT backbones, not litemedsam")
        encoder = build_litemedsam_encoder(input_size)
        prompt_encoder, mask_decoder = _prompt_and_decoder(256, 2048, 8, 256, 16)
    else:
        spec = VIT_SPECS[backbone]
        encoder = _vit_encoder(spec, input_size, global_attention)
        prompt_encoder, mask_decoder = _prompt_and_decoder(
            spec.prompt_dim, spec.decoder_mlp_dim, spec.decoder_heads, spec.iou_hidden_dim, spec.mask_in_chans)
    size_prompt_encoder(prompt_encoder, input_size, embedding_stride(backbone))
    return Sam(encoder, prompt_encoder, mask_decoder, pixel_mean=list(SAM_PIXEL_MEAN), pixel_std=list(SAM_PIXEL_STD))


def load_base_weights(sam: Sam, path: os.PathLike, backbone: str) -> list[str]:
    """Strict load of an official-layout state dict, position tables fitted to this model's grid."""
    state = load_state_dict_file(path)
    state, notes = fit_vit_state_dict(state, sam.state_dict())
    result = sam.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointIntegrityError(
            f"{path}: does not fit backbone '{backbone}' (missing {len(result.missing_keys)} keys, e.g. "
            f"{result.missing_keys[:3]}; unexpected {len(result.unexpected_keys)}, e.g. {result.unexpected_keys[:3]})"
        )
    return notes


def build_sam(backbone: str, input_size: int, checkpoint: str | os.PathLike | None = None,
              global_attention: bool = False, pretrained: bool = True) -> Sam:
    """A ``Sam`` for ``backbone`` at ``input_size`` (multiple of 16), in eval mode.

    Weights: ``checkpoint`` if given; else, when ``pretrained``, the backbone's official file (see
    ``samunet.modeling.checkpoints``; raises ``CheckpointNotFoundError`` naming the file and where to put it);
    ``pretrained=False`` (and ``tiny`` without a checkpoint) gives random init.
    ``global_attention=True`` is S-SAM's layout: global attention in every block, no relative positions.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone '{backbone}'; known: {', '.join(BACKBONES)}")
    # find and check the weights before spending seconds on building a big model
    path = resolve_checkpoint(backbone, checkpoint) if (pretrained or checkpoint is not None) else None
    if path is not None:
        if path.suffix == ".safetensors":
            raise CheckpointIntegrityError(
                f"{path}: this is an adapter checkpoint, not base weights; load it with "
                "samunet.adapters.checkpoint.load_adapter_checkpoint (or build_adapter(adapter_checkpoint=...))")
        verify_known_checkpoint(backbone, path)
    sam = build_sam_architecture(backbone, input_size, global_attention)
    sha = None
    if path is not None:
        for note in load_base_weights(sam, path, backbone):
            log.debug("%s: %s", path.name, note)
        sha = file_digest(path, "sha256")
    sam.eval()  # also lets TinyViT cache its attention-bias tables from the loaded weights
    sam.backbone_info = BackboneInfo(backbone, input_size, global_attention, str(path) if path else None, sha,
                                     embedding_stride(backbone))
    return sam
