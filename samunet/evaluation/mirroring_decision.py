"""Whether a fold's predictions mirror, decided by its own validation (``fold_N/test_time_mirroring.json``).

Frozen-encoder models trained with ``grid`` augmentation mirror their embeddings at test time, which is only
approximate (the encoder is not equivariant): on Hippocampus it added 0.003-0.005 Dice, on LeftAtrium_LGE_30 it
cost 0.017 and on DRIVE 0.002. So the trainer compares the final weights' validation with and without mirroring
and keeps the better (the figures are written here), and ``samunet_predict`` mirrors a configuration's ensemble
when most of its folds found that mirroring helped. A fold without the file (mirroring never measured: a run
with ``--disable-tta``, or trained before this existed) counts as mirroring, the behaviour before.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from samunet.core.names import TEST_TIME_MIRRORING_FILE
from samunet.core.records import VersionedRecord

TEST_TIME_MIRRORING_VERSION = 1


@dataclass
class MirroringDecision(VersionedRecord):
    mirror: bool  # predictions of this fold mirror
    mirrored_dice: float  # mean foreground Dice of the final weights' validation, mirrored
    unmirrored_dice: float  # ... without mirroring
    schema_version: int = TEST_TIME_MIRRORING_VERSION

    SCHEMA_VERSION = TEST_TIME_MIRRORING_VERSION
    RERUN_HINT = "re-run the fold's validation (samunet_train ... --val-only)"

    @classmethod
    def from_validations(cls, mirrored_dice: float, unmirrored_dice: float) -> "MirroringDecision":
        """Mirror unless it scored lower than the same weights without it (a tie keeps mirroring)."""
        return cls(mirrored_dice >= unmirrored_dice, mirrored_dice, unmirrored_dice)


def decision_file(fold_folder: Path) -> Path:
    return Path(fold_folder) / TEST_TIME_MIRRORING_FILE


def folds_mirror(fold_folders: list[Path]) -> tuple[bool, str]:
    """(mirror, why) for an ensemble of these folds: mirror when at least half of them found it helped."""
    decisions = [MirroringDecision.load(decision_file(f)) for f in fold_folders if decision_file(f).is_file()]
    helped = sum(d.mirror for d in decisions) + len(fold_folders) - len(decisions)
    mirror = 2 * helped >= len(fold_folders)
    if not decisions:
        return mirror, "mirroring not measured by the folds' validations"
    figures = ", ".join(f"{d.mirrored_dice:.4f} vs {d.unmirrored_dice:.4f}" for d in decisions)
    return mirror, (f"mirroring helped {helped} of {len(fold_folders)} fold(s)' validations "
                    f"(mirrored vs not: {figures})")
