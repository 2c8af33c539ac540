"""Fit SAM's position tables to another input size (S-SAM / SAMed practice) and size the prompt encoder.

A checkpoint trained at 1024 px has a 64 x 64 absolute position embedding and, in the global-attention
blocks, relative-position tables of length 2 * 64 - 1. At input S the token grid is S / 16.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_abs_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], method: str = "auto") -> torch.Tensor:
    """(1, Gh, Gw, C) -> (1, gh, gw, C).

    ``avgpool``: adaptive average pooling (S-SAM, shrinking); ``bilinear``: interpolation (SAMed);
    ``auto``: pooling when shrinking, bilinear otherwise."""
    if tuple(pos_embed.shape[1:3]) == tuple(grid):
        return pos_embed
    shrinking = grid[0] <= pos_embed.shape[1] and grid[1] <= pos_embed.shape[2]
    if method == "auto":
        method = "avgpool" if shrinking else "bilinear"
    x = pos_embed.permute(0, 3, 1, 2).float()
    if method == "avgpool":
        x = F.adaptive_avg_pool2d(x, grid)
    elif method == "bilinear":
        x = F.interpolate(x, size=grid, mode="bilinear", align_corners=False)
    else:
        raise ValueError(f"unknown pos-embed resize method '{method}' (avgpool | bilinear | auto)")
    return x.permute(0, 2, 3, 1).to(pos_embed.dtype).contiguous()


def resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """(L, C) -> (length, C), linear interpolation as SAM's own ``get_rel_pos`` does on the fly."""
    if table.shape[0] == length:
        return table
    x = table.float().t().unsqueeze(0)  # (1, C, L)
    x = F.interpolate(x, size=length, mode="linear", align_corners=False)
    return x.squeeze(0).t().to(table.dtype).contiguous()


def fit_vit_state_dict(state: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor],
                       pos_method: str = "auto") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Resize position tables in ``state`` to the shapes of ``model_state``; drop rel-pos tables the model
    lacks (S-SAM layout has none). Returns (new state, notes on what was changed)."""
    out, notes = {}, []
    for key, value in state.items():
        target = model_state.get(key)
        is_pos = key.endswith("pos_embed")
        is_rel = key.endswith(("rel_pos_h", "rel_pos_w"))
        if target is None and is_rel:
            notes.append(f"dropped {key} (this layout has no relative positions)")
            continue
        if target is not None and target.shape != value.shape:
            if is_pos and value.ndim == 4:
                value = resize_abs_pos_embed(value, tuple(target.shape[1:3]), pos_method)
                notes.append(f"resized {key} to {tuple(target.shape)}")
            elif is_rel and value.ndim == 2 and value.shape[1] == target.shape[1]:
                value = resize_rel_pos(value, target.shape[0])
                notes.append(f"resized {key} to {tuple(target.shape)}")
        out[key] = value
    return out, notes


def size_prompt_encoder(prompt_encoder, input_size: int, stride: int) -> None:
    """Point the prompt encoder at an ``input_size`` image whose embedding is ``input_size / stride``."""
    grid = input_size // stride
    prompt_encoder.image_embedding_size = (grid, grid)
    prompt_encoder.input_image_size = (input_size, input_size)
    prompt_encoder.mask_input_size = (4 * grid, 4 * grid)
