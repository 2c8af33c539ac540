"""Per-adapter default hyper-parameters: the one table the planner writes into the plans and tests build from.

Values follow each adapter's paper; ``reason`` cites where they come from. AdamW with weight decay 0 is Adam.
"""
from __future__ import annotations

import copy

from samunet.core.names import ADAPTER_NAMES
from samunet.core.plans import AdapterConfig, PlansError

# shared by every adapter unless its row below says otherwise (each row gives its own learning rate); null: not
# read by this adapter, loss or schedule
_COMMON = dict(optimizer="adamw", weight_decay=1e-2, betas=[0.9, 0.999], lr_schedule="poly",
               warmup_iterations=0, poly_power=0.9, loss="dice_ce", loss_weights=[0.5, 0.5], focal_alpha=None,
               focal_gamma=None, lora_rank=None, head_width=None, cache_embeddings=False, output="softmax")
# the fusion adapter's U-Net widths for tests and hand-built plans; the planner sizes them per dataset
DEFAULT_UNET_WIDTHS = (32, 64, 128, 256)


def deeply_supervised_stages(num_stages: int, deep_supervision: bool) -> list[int]:
    """The fusion U-Net's decoder stages with a classifier of their own besides full resolution (stage s has stride
    2^s): 1 .. n-3, as nnU-Net, which gives the coarsest decoder stage (n-2) weight 0; none with 3 stages or fewer."""
    return list(range(1, num_stages - 2)) if deep_supervision else []

ADAPTER_DEFAULTS: dict[str, AdapterConfig] = {
    "ssam": AdapterConfig(**{**_COMMON, "learning_rate": 1e-3, "lr_schedule": "constant", "poly_power": None,
                             "loss": "dice_focal", "focal_alpha": 0.75, "focal_gamma": 3.0,
                             "output": "sigmoid_per_label"},
        reason="S-SAM: Dice + focal (alpha 0.75, gamma 3, on logits), constant lr, weight decay 1e-2, one sigmoid "
               "mask per label; AdamW lr 1e-3, not the paper's 1e-4, which learned too slowly for a 30-min budget "
               "(Hippocampus fold 0 on a CPU: 0.846 after 2,049 steps against 0.777 after 2,416; adapters.md)"),
    "samed": AdapterConfig(**{**_COMMON, "learning_rate": 0.005, "weight_decay": 0.1, "warmup_iterations": 250,
                              "loss_weights": [0.2, 0.8], "lora_rank": 4},
        reason="SAMed: 0.2 CE + 0.8 Dice, AdamW lr 0.005, weight decay 0.1, 250 warm-up iterations then "
               "poly 0.9, LoRA rank 4 on q and v"),
    "loramednet": AdapterConfig(**{**_COMMON, "learning_rate": 5e-4, "lora_rank": 4, "head_width": 256},
        reason="LoRaMedNet: LoRA rank 4 on the encoder + CNN head, CE + Dice, AdamW lr 5e-4"),
    "cnnhead": AdapterConfig(**{**_COMMON, "learning_rate": 5e-4, "weight_decay": 0.0, "head_width": 256,
                                "cache_embeddings": True},
        reason="Hu et al.: frozen encoder + CNN head, CE + Dice, Adam lr 5e-4 (AdamW, weight decay 0), "
               "cached embeddings"),
    "decoder": AdapterConfig(**{**_COMMON, "learning_rate": 1e-3, "cache_embeddings": True},
        reason="frozen encoder, mask decoder trained: CE + Dice, AdamW lr 1e-3 (the head starts from "
               "re-initialised class tokens; in 30-min CPU runs 1e-4 learned too slowly and 1e-3 against 5e-4 "
               "gained on DRIVE, tied on Hippocampus and LeftAtrium: planning.md), cached embeddings"),
    "full": AdapterConfig(**{**_COMMON, "learning_rate": 1e-5},
        reason="everything trained: AdamW lr 1e-5 so the pretrained encoder is not wiped out"),
    "fusion": AdapterConfig(**{**_COMMON, "learning_rate": 2e-3, "weight_decay": 1e-4, "cache_embeddings": True,
                               "unet_widths": list(DEFAULT_UNET_WIDTHS), "fusion_stage": 2,
                               "deep_supervision": False},
        reason="frozen encoder (cached embeddings) fused into a U-Net at the patch's resolution (nnSAM-like): "
               "CE + Dice at full resolution only (nnU-Net's deep supervision did not pay at a 30-min CPU budget: "
               "results.md), AdamW lr 2e-3 with poly 0.9, a U-Net's usual Adam rate for short runs; "
               "the planner sets unet_widths and fusion_stage from the patch and the embedding grid"),
}
assert set(ADAPTER_DEFAULTS) == set(ADAPTER_NAMES), "every adapter needs a defaults row"


def default_adapter_config(name: str, **changes) -> AdapterConfig:
    """A fresh copy of ``name``'s defaults, with ``changes`` applied (e.g. ``head_width=32`` in tests)."""
    if name not in ADAPTER_DEFAULTS:
        raise PlansError(f"adapter '{name}' is unknown; known: {', '.join(ADAPTER_NAMES)}")
    config = copy.deepcopy(ADAPTER_DEFAULTS[name])
    for key, value in changes.items():
        if not hasattr(config, key):
            raise TypeError(f"AdapterConfig has no field {key!r}")
        setattr(config, key, value)
    return config


def default_adapter_configs() -> dict[str, AdapterConfig]:
    """Every adapter's defaults (what ``samunet_plan`` writes into ``plans.adapters``)."""
    return {name: default_adapter_config(name) for name in ADAPTER_NAMES}
