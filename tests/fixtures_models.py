"""Model fixtures, usable by every test module.

- ``tiny_sam_checkpoint`` (session): a ``.pth`` state dict in the official SAM key layout at the ``tiny``
  backbone's pretraining size (128 px), written by the test run, loaded through the real loading path.
- ``tiny_plans``: factory ``tiny_plans(num_classes=3, input_size=64, ...) -> Plans`` for the ``tiny``
  backbone (every adapter configured, CNN head width 32 so tests stay fast).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_PRETRAIN_SIZE = 128


def write_tiny_sam_checkpoint(path: Path, seed: int = 0) -> Path:
    """A tiny SAM at its pretraining size, random weights made non-trivial (position tables included), saved
    as an official-layout state dict (``image_encoder.* / prompt_encoder.* / mask_decoder.*``)."""
    from samunet.modeling.build import build_sam_architecture

    torch.manual_seed(seed)
    sam = build_sam_architecture("tiny", TINY_PRETRAIN_SIZE)
    with torch.no_grad():
        for name, p in sam.named_parameters():
            if name.endswith(("pos_embed", "rel_pos_h", "rel_pos_w")):
                p.normal_(0, 0.5)  # zero-initialised in SAM: make resizing observable
    torch.save(sam.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_sam_checkpoint(tmp_path_factory.mktemp("tiny_sam") / "sam_tiny.pth")


def make_tiny_plans(num_classes: int = 3, input_size: int = 64, adapter: str = "ssam", packing_mode: str = "repeat",
                    num_channels: int = 1, checkpoint: str | None = None, global_attention: bool = False,
                    backbone: str = "tiny"):
    from samunet.core.adapter_defaults import default_adapter_config
    from samunet.core.names import ADAPTER_NAMES
    from samunet.core.plans import (AugmentationPlan, ChannelNormalization, ChannelPackingPlan, CropPlan, ModelPlan,
                                    Plans, ResamplingPlan, SlicingPlan, TrainingPlan)

    labels = {"background": 0, **{f"label{i}": i for i in range(1, num_classes)}}
    small = {"samed": dict(lora_rank=2), "loramednet": dict(lora_rank=2, head_width=32), "cnnhead": dict(head_width=32),
             "fusion": dict(unet_widths=[8, 16, 32], fusion_stage=1)}
    adapters = {name: default_adapter_config(name, **small.get(name, {})) for name in ADAPTER_NAMES}
    return Plans(
        dataset_name="Dataset999_Tiny", plans_name="samunetPlans", labels=labels, file_ending=".nii.gz",
        slicing=SlicingPlan(transpose=[0, 1, 2], mode="all", background_fraction=1.0),
        crop=CropPlan(crop_to_nonzero=False, patch_size=[input_size, input_size]),
        resampling=ResamplingPlan(target_spacing=[1.0, 1.0, 1.0]),
        normalization=[ChannelNormalization(channel=c, name=f"MRI{c}", scheme="zscore") for c in range(num_channels)],
        packing=ChannelPackingPlan(mode=packing_mode, num_channels=num_channels),
        model=ModelPlan(backbone=backbone, input_size=input_size, adapter=adapter, checkpoint=checkpoint,
                        global_attention=global_attention),
        adapters=adapters, augmentation=AugmentationPlan(),
        training=TrainingPlan(batch_size=2, epochs=1, iterations_per_epoch=2, validate_every=1,
                              foreground_oversample=0.33, num_workers=0, device="cpu", precision="fp32"),
    )


@pytest.fixture
def tiny_plans():
    """Factory: ``tiny_plans(num_classes=3, input_size=64, adapter="ssam", packing_mode="repeat",
    num_channels=1, checkpoint=None, global_attention=False)`` -> Plans for the ``tiny`` backbone."""
    return make_tiny_plans
