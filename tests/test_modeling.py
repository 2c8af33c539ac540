"""Backbone building: official-layout checkpoints at other input sizes, lookup errors, attention layouts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from samunet.modeling import build_sam
from samunet.modeling.checkpoints import (CheckpointIntegrityError, CheckpointNotFoundError, KNOWN_CHECKPOINTS,
                                          backbone_weights_present, load_state_dict_file)
from samunet.modeling.position import resize_abs_pos_embed, resize_rel_pos
from samunet.modeling.specs import VIT_SPECS
from tests.fixtures_models import TINY_PRETRAIN_SIZE


def test_checkpoint_in_official_layout_loads_at_smaller_input(tiny_sam_checkpoint):
    state = load_state_dict_file(tiny_sam_checkpoint)
    assert {k.split(".")[0] for k in state} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    sam = build_sam("tiny", 64, checkpoint=tiny_sam_checkpoint)
    enc = sam.image_encoder
    grid, old_grid = 64 // 16, TINY_PRETRAIN_SIZE // 16
    # absolute position embedding: average-pooled from the 8x8 grid to 4x4 (S-SAM)
    old_pos = state["image_encoder.pos_embed"]
    expected = old_pos.view(1, grid, old_grid // grid, grid, old_grid // grid, -1).mean(dim=(2, 4))
    torch.testing.assert_close(enc.pos_embed.data, expected)
    # the global block's relative-position tables shrink to 2 * grid - 1; windowed blocks keep theirs
    spec = VIT_SPECS["tiny"]
    g = spec.global_attn_indexes[0]
    assert enc.blocks[g].attn.rel_pos_h.shape[0] == 2 * grid - 1
    key = f"image_encoder.blocks.{g}.attn.rel_pos_h"
    torch.testing.assert_close(enc.blocks[g].attn.rel_pos_h.data, resize_rel_pos(state[key], 2 * grid - 1))
    w = next(i for i in range(spec.depth) if i not in spec.global_attn_indexes)
    torch.testing.assert_close(enc.blocks[w].attn.rel_pos_w.data, state[f"image_encoder.blocks.{w}.attn.rel_pos_w"])
    # everything else is copied unchanged
    torch.testing.assert_close(sam.mask_decoder.iou_token.weight.data, state["mask_decoder.iou_token.weight"])
    # prompt encoder sized for the new input; the encoder runs and matches it
    assert sam.prompt_encoder.image_embedding_size == (grid, grid)
    assert sam.prompt_encoder.input_image_size == (64, 64)
    with torch.no_grad():
        emb = enc(torch.rand(2, 3, 64, 64))
    assert emb.shape == (2, spec.prompt_dim, grid, grid)
    assert sam.prompt_encoder.get_dense_pe().shape[-2:] == emb.shape[-2:]
    assert sam.backbone_info.checkpoint_sha256 and len(sam.backbone_info.checkpoint_sha256) == 64


def test_global_attention_layout_drops_relative_positions(tiny_sam_checkpoint):
    sam = build_sam("tiny", 64, checkpoint=tiny_sam_checkpoint, global_attention=True)
    blocks = sam.image_encoder.blocks
    assert all(b.window_size == 0 and not b.attn.use_rel_pos for b in blocks)
    assert not any("rel_pos" in n for n, _ in sam.named_parameters())
    with torch.no_grad():
        assert sam.image_encoder(torch.rand(1, 3, 64, 64)).shape[-2:] == (4, 4)


def test_pos_embed_resize_methods():
    pos = torch.randn(1, 8, 8, 5)
    pooled = resize_abs_pos_embed(pos, (4, 4), "avgpool")
    torch.testing.assert_close(pooled[0, 0, 0], pos[0, :2, :2].mean(dim=(0, 1)))
    bilinear = resize_abs_pos_embed(pos, (16, 16), "auto")  # growing: bilinear
    ref = F.interpolate(pos.permute(0, 3, 1, 2), size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(bilinear, ref.permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="unknown pos-embed resize"):
        resize_abs_pos_embed(pos, (4, 4), "nearest")


def test_missing_official_checkpoint_names_file_url_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMUNET_CHECKPOINTS", str(tmp_path))
    with pytest.raises(CheckpointNotFoundError) as err:
        build_sam("vit_b", 256)
    message = str(err.value)
    known = KNOWN_CHECKPOINTS["vit_b"]
    assert known.filename in message and known.url in message and str(tmp_path) in message
    assert f"{known.size:,}" in message
    assert not backbone_weights_present("vit_b")
    # a truncated download under the official name: present-check says no, loading says why
    (tmp_path / known.filename).write_bytes(b"\0" * 100)
    assert not backbone_weights_present("vit_b")
    with pytest.raises(CheckpointIntegrityError, match="incomplete download"):
        build_sam("vit_b", 256)


def test_weights_present_for_wheel_and_tiny():
    assert backbone_weights_present("litemedsam")
    assert not backbone_weights_present("tiny")  # no pretrained weights exist for the test backbone


def test_bad_files_and_arguments_give_clear_errors(tmp_path, tiny_sam_checkpoint):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointIntegrityError, match="garbage.pth"):
        build_sam("tiny", 64, checkpoint=garbage)
    with pytest.raises(CheckpointNotFoundError, match="nothing_here.pth"):
        build_sam("tiny", 64, checkpoint=tmp_path / "nothing_here.pth")
    other = tmp_path / "other_layout.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, other)
    with pytest.raises(CheckpointIntegrityError, match="does not fit backbone 'tiny'"):
        build_sam("tiny", 64, checkpoint=other)
    with pytest.raises(ValueError, match="multiple of 16"):
        build_sam("tiny", 70)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_sam("vit_q", 64)
    with pytest.raises(ValueError, match="global_attention"):
        build_sam("litemedsam", 128, global_attention=True)


def test_random_init_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_sam("tiny", 64), build_sam("tiny", 64)  # e.g. the training and the prediction process
    assert torch.equal(torch.rand(1), expected_next)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert a.backbone_info.checkpoint_sha256 is None
