"""``inference_information.json``: what ``samunet_find_best`` chose and why; ``samunet_predict`` applies it.

Lives at ``$SAMUNET_RESULTS/DatasetXXX_Name/inference_information.json``. Typed, JSON round trip.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from samunet.core.records import VersionedRecord
from samunet.evaluation.postprocessing import PostprocessingStep
from samunet.evaluation.smoothing import SmoothingTrial

INFERENCE_INFORMATION_VERSION = 2  # 2: probability smoothing (``smoothing``)


@dataclass
class CandidateResult:
    """One configuration compared on the cross-validation cases (an adapter, or an ensemble of them)."""

    adapters: list[str]
    mean_dice: float  # mean over foreground classes of the per-class mean Dice
    class_dice: dict[str, float]  # label value (as text) -> mean Dice over cases
    folds: dict[str, list[int]]  # adapter -> folds whose validation outputs were used


@dataclass
class InferenceInformation(VersionedRecord):
    dataset_name: str
    plans_name: str
    adapters: list[str]  # one: a single configuration; several: average their probabilities
    folds: dict[str, list[int]]  # adapter -> folds that were cross-validated (and that predict uses by default)
    checkpoint: str  # "final" | "best": the checkpoint the validation outputs came from
    num_cases: int  # validation cases the comparison used
    mean_dice: float  # chosen configuration, before postprocessing
    mean_dice_postprocessed: float  # ... after the kept smoothing and steps
    postprocessing: list[PostprocessingStep] = field(default_factory=list)  # tried steps, kept or not
    candidates: list[CandidateResult] = field(default_factory=list)
    # probability smoothing tried before the steps (at most one kept); empty: not tried (no saved probabilities)
    smoothing: list[SmoothingTrial] = field(default_factory=list)
    schema_version: int = INFERENCE_INFORMATION_VERSION

    SCHEMA_VERSION = INFERENCE_INFORMATION_VERSION
    RERUN_HINT = "run samunet_find_best"

    @property
    def kept_postprocessing(self) -> list[PostprocessingStep]:
        return [s for s in self.postprocessing if s.kept]

    @property
    def smoothing_sigma(self) -> float | None:
        """The kept smoothing's sigma (finest-axis voxels); None: no smoothing."""
        return next((t.sigma for t in self.smoothing if t.kept), None)

    @property
    def changes_predictions(self) -> bool:
        """Whether anything was kept (smoothing or a component step): predictions differ from the arg-max."""
        return bool(self.kept_postprocessing) or self.smoothing_sigma is not None
