"""nnU-Net v2's flag spellings, one table per command family, applied by ``core.command.add_nnunet_spellings``.

- ``same``: nnU-Net flag -> the samunet flag with the same meaning (accepted as an alias);
- ``values``: samunet flag -> {nnU-Net value: samunet value} (``-chk checkpoint_final.pth`` -> ``final``);
- ``ignored``: nnU-Net flags for what samunet always does (accepted, no effect) -> why;
- ``different``: nnU-Net flags whose meaning differs -> the samunet equivalent (the command stops and says it).

``documentation/for_nnunet_users.md`` shows these tables to users; keep the two in step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from samunet.core.names import ADAPTER_NAMES
from samunet.core.training_flags import nnunet_spellings

# nnU-Net's configurations, sometimes typed where samunet expects an adapter
NNUNET_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")
_ADAPTERS = " | ".join(ADAPTER_NAMES)
_CONFIGURATION = (f"an adapter (-a {_ADAPTERS}); samunet has one configuration per plans: 2D slices through a "
                  f"SAM backbone")


@dataclass(frozen=True)
class FlagTable:
    same: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    different: dict[str, str] = field(default_factory=dict)


def adapter_hint(name: str) -> str:
    """A one-line hint when ``name`` is an nnU-Net configuration given as samunet_train's ADAPTER argument."""
    if name in NNUNET_CONFIGURATIONS:
        return (f"'{name}' is an nnU-Net configuration; samunet equivalent: an adapter ({_ADAPTERS}) as the "
                f"second argument; samunet has one configuration per plans: 2D slices through a SAM backbone")
    return ""


# nnUNetv2_plan_and_preprocess / nnUNetv2_preprocess -> samunet_plan / samunet_preprocess
PLAN = FlagTable(
    same={"-overwrite_plans_name": "--plans", "-plans_name": "--plans", "--no_pp": "--no-preprocess"},
    ignored={"--verify_dataset_integrity": "samunet_plan always verifies (skip with --no-verify)"},
    different={
        "-pl": "--backbone NAME (the planner is fixed; it chooses backbone, adapter and batch from the hardware)",
        "-c": "none: samunet has one configuration per plans (2D slices through a SAM backbone)",
        "-gpu_memory_target": "edit training.batch_size in the plans, or samunet_train --batch-size",
        "-overwrite_target_spacing": "edit resampling in the plans, then samunet_preprocess --overwrite",
        "-preprocessor_name": "none: one preprocessor, configured by the plans",
        "-fpe": "none: one fingerprint extractor",
        "-npfp": "-np N (one worker count for fingerprinting and preprocessing)",
    },
)
PREPROCESS = FlagTable(
    same={"-plans_name": "--plans"},
    different={"-c": PLAN.different["-c"]},
)

# nnUNetv2_train DATASET CONFIGURATION FOLD -> samunet_train DATASET ADAPTER FOLD
TRAIN = FlagTable(
    same=nnunet_spellings(),  # written in core.training_flags, beside each flag
    ignored={"--npz": "the final validation always writes CASE.npz + CASE.json"},
    different={
        "-tr": f"the ADAPTER argument ({_ADAPTERS}); the trainer is fixed, its hyper-parameters live in the plans",
        "-pretrained_weights": "--checkpoint FILE (the SAM backbone's weights; the adapter starts from them)",
        "--val_best": "none: --val-only validates checkpoint_final; samunet_predict -chk best uses the best one",
        "--disable_checkpointing": "none: checkpoints are small (adapter weights only) and always written",
    },
)

# nnUNetv2_predict -> samunet_predict
PREDICT = FlagTable(
    same={"-device": "--device", "--disable_tta": "--disable-tta", "--save_probabilities": "--save-probabilities"},
    values={"-chk": {"checkpoint_final.pth": "final", "checkpoint_best.pth": "best",
                     "checkpoint_latest.pth": "latest"}},
    ignored={"--continue_prediction": "samunet_predict skips cases whose output exists (redo them with --overwrite)",
             "--c": "samunet_predict skips cases whose output exists (redo them with --overwrite)"},
    different={
        "-c": _CONFIGURATION,
        "-tr": f"-a ADAPTER ({_ADAPTERS}); the trainer is fixed",
        "-step_size": "none: samunet predicts whole slices, not sliding windows",
        "-prev_stage_predictions": "none: samunet has no cascade",
        "-nps": "-npp N (the same background threads preprocess and export)",
    },
)

# nnUNetv2_ensemble -> samunet_ensemble
ENSEMBLE = FlagTable(
    same={"--save_npz": "--save-probabilities"},
    different={"-np": "none: samunet_ensemble runs in one process"},
)

# nnUNetv2_evaluate_folder / nnUNetv2_evaluate_simple -> samunet_evaluate
EVALUATE = FlagTable(
    different={
        "-djfile": "-d DATASET (labels come from its dataset.json)",
        "-pfile": "none: evaluation needs no plans file",
        "-l": "-d DATASET (labels from its dataset.json; default: every non-zero value in the files)",
    },
    ignored={"--chill": "samunet_evaluate never requires a prediction for every reference (missing ones are listed)"},
)

# nnUNetv2_find_best_configuration DATASET -> samunet_find_best -d DATASET
FIND_BEST = FlagTable(
    different={
        "-c": "-a ADAPTER [ADAPTER ...] (the candidates are adapters)",
        "-tr": "-a ADAPTER [ADAPTER ...] (the candidates are adapters)",
        "-f": "none: the folds every candidate has validation outputs for are compared",
        "--disable_ensembling": "-a ADAPTER (one adapter: no pairs to ensemble)",
    },
)

# nnUNetv2_convert_MSD_dataset -> samunet_convert_msd
CONVERT_MSD = FlagTable(same={"-overwrite_id": "--id"})
