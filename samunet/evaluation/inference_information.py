"""``inference_information.json``: what ``samunet_find_best`` chose and why; ``samunet_predict`` applies it.

Lives at ``$SAMUNET_RESULTS/DatasetXXX_Name/inference_information.json``. Typed, JSON round trip.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from samunet.evaluation.postprocessing import PostprocessingStep
from samunet.utils.atomic import write_json
from samunet.utils.typed_json import SchemaError, from_jsonable, to_jsonable

INFERENCE_INFORMATION_FILE = "inference_information.json"
INFERENCE_INFORMATION_VERSION = 1


@dataclass
class CandidateResult:
    """One configuration compared on the cross-validation cases (an adapter, or an ensemble of them)."""

    adapters: list[str]
    mean_dice: float  # mean over foreground classes of the per-class mean Dice
    class_dice: dict[str, float]  # label value (as text) -> mean Dice over cases
    folds: dict[str, list[int]]  # adapter -> folds whose validation outputs were used


@dataclass
class InferenceInformation:
    dataset_name: str
    plans_name: str
    adapters: list[str]  # one: a single configuration; several: average their probabilities
    folds: dict[str, list[int]]  # adapter -> folds that were cross-validated (and that predict uses by default)
    checkpoint: str  # "final" | "best": the checkpoint the validation outputs came from
    num_cases: int  # validation cases the comparison used
    mean_dice: float  # chosen configuration, before postprocessing
    mean_dice_postprocessed: float  # ... after the kept steps
    postprocessing: list[PostprocessingStep] = field(default_factory=list)  # tried steps, kept or not
    candidates: list[CandidateResult] = field(default_factory=list)
    schema_version: int = INFERENCE_INFORMATION_VERSION

    @property
    def kept_postprocessing(self) -> list[PostprocessingStep]:
        return [s for s in self.postprocessing if s.kept]

    def save(self, path: str | Path) -> None:
        write_json(to_jsonable(self), path)

    @classmethod
    def load(cls, path: str | Path) -> "InferenceInformation":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: does not exist; run samunet_find_best first") from None
        except json.JSONDecodeError as e:
            raise SchemaError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict) or data.get("schema_version") != INFERENCE_INFORMATION_VERSION:
            raise SchemaError(f"{path}: schema_version is not {INFERENCE_INFORMATION_VERSION}; re-run samunet_find_best")
        try:
            return from_jsonable(cls, data)
        except SchemaError as e:
            raise SchemaError(f"{path}: {e}") from None
