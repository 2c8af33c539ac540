"""samunet_find_best -d 4 [-p PLANS] [-a ADAPTER ...]: pick the best adapter (or pair of adapters) and postprocessing.

Reads the cross-validation outputs of every trained fold (``fold_N/validation/CASE<ending>`` label maps and
``CASE.npz`` probabilities), compares each adapter and each pair of adapters (probabilities averaged, as
nnU-Net ensembles configurations) by mean foreground Dice on the validation cases that all of them cover,
decides the winner's postprocessing (probability smoothing, ``samunet.evaluation.smoothing``, then the largest
component, ``samunet.evaluation.postprocessing``), and writes ``inference_information.json``.
"""
from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from samunet.core import nnunet_flags
from samunet.core.command import CommandParser, add_nnunet_spellings, user_command
from samunet.core.layout import TrainedModelError, dataset_results_folder, fold_folders, model_folders
from samunet.core.names import (
    DATASET_JSON_FILE, DEFAULT_PLANS_NAME, INFERENCE_INFORMATION_FILE, MODEL_PLANS_FILE, NUM_FOLDS, SUMMARY_FILE,
    VALIDATION_FOLDER,
)
from samunet.core.paths import raw_root
from samunet.utils.atomic import read_json
from samunet.utils.logs import get_logger, setup_logging

# numpy, image reading and the evaluation modules are imported inside the functions that use them, so that
# samunet_find_best --help answers at once
if TYPE_CHECKING:  # annotations only
    import numpy as np

    from samunet.core.labels import LabelScheme
    from samunet.evaluation.inference_information import InferenceInformation
    from samunet.evaluation.postprocessing import ValidationCase

PROG = "samunet_find_best"
DEFAULT_VALIDATION_CHECKPOINT = "final"


@dataclass
class ValidationOutputs:
    adapter: str
    folds: list[int]
    label_files: dict[str, Path]  # case -> validation label map
    probability_files: dict[str, Path]  # case -> validation CASE.npz
    checkpoint: str


def _file_ending(model_folder: Path) -> str:
    path = model_folder / DATASET_JSON_FILE
    if not path.is_file():
        raise TrainedModelError(f"{path}: missing (training copies dataset.json into the model folder)")
    return read_json(path)["file_ending"]


def collect_validation(adapter: str, model_folder: Path) -> ValidationOutputs | None:
    """The validation outputs of every fold of one model folder; None when no fold has any."""
    ending = _file_ending(model_folder)
    folds, labels, probabilities, checkpoints = [], {}, {}, set()
    for fold, folder in fold_folders(model_folder, include_all=False).items():  # fold_all: no held-out cases
        validation = folder / VALIDATION_FOLDER
        if not validation.is_dir():
            continue
        fold_labels = {p.name[: -len(ending)]: p for p in validation.glob(f"*{ending}") if not p.name.startswith(".")}
        fold_probs = {p.name[: -len(".npz")]: p for p in validation.glob("*.npz") if not p.name.startswith(".")}
        if not fold_labels and not fold_probs:
            continue
        folds.append(fold)
        labels.update(fold_labels)
        probabilities.update(fold_probs)
        summary = validation / SUMMARY_FILE
        if summary.is_file():
            checkpoints.add(str(read_json(summary).get("checkpoint", DEFAULT_VALIDATION_CHECKPOINT)))
    if not folds:
        return None
    checkpoint = checkpoints.pop() if len(checkpoints) == 1 else DEFAULT_VALIDATION_CHECKPOINT
    return ValidationOutputs(adapter, folds, labels, probabilities, checkpoint)


def _probabilities(outputs: list[ValidationOutputs], case: str) -> np.ndarray:
    """The saved validation probabilities of one case, averaged over the adapters of an ensemble."""
    from samunet.evaluation.probabilities_io import load_probabilities

    total = None
    for out in outputs:
        probs = load_probabilities(out.probability_files[case]).probabilities
        total = probs if total is None else total + probs
    return total / len(outputs)


def _prediction(outputs: list[ValidationOutputs], case: str, scheme: LabelScheme, spacing: tuple,
                sigma: float | None) -> np.ndarray:
    """Label map of one case: the saved map for a single adapter without smoothing (arg-max of its npz when
    absent), else the arg-max of the (averaged, smoothed) probabilities."""
    from samunet.dataset.image_io import read_label
    from samunet.evaluation.smoothing import smooth_probabilities

    if len(outputs) == 1 and sigma is None and case in outputs[0].label_files:
        return read_label(outputs[0].label_files[case])[0]
    return scheme.segmentation(smooth_probabilities(_probabilities(outputs, case), spacing, sigma))


def _cases(outputs: list[ValidationOutputs], references: dict[str, tuple[np.ndarray, tuple]], scheme: LabelScheme,
           progress: bool, what: str, sigma: float | None = None) -> list[ValidationCase]:
    from samunet.evaluation.postprocessing import ValidationCase
    from samunet.evaluation.probabilities_io import ProbabilitiesError
    from samunet.utils.progress import progress as progress_bar

    result = []
    for case in progress_bar(sorted(references), desc=what, unit="case", disable=not progress, leave=False):
        reference, spacing = references[case]
        prediction = _prediction(outputs, case, scheme, spacing, sigma)
        if prediction.shape != reference.shape:
            raise ProbabilitiesError(f"{what}: case {case} prediction {prediction.shape} "
                                     f"vs reference {reference.shape}")
        result.append(ValidationCase(case, reference, prediction, spacing))
    return result


def find_best(dataset: str, plans_name: str = DEFAULT_PLANS_NAME, adapters: list[str] | None = None,
              progress: bool = True, write: bool = True) -> InferenceInformation:
    """The choice samunet_find_best makes; ``write=False`` only reports it (samunet_compare), leaving the
    ``inference_information.json`` that samunet_predict reads as it is."""
    import numpy as np

    from samunet.core.labels import LabelScheme
    from samunet.core.plans import Plans
    from samunet.dataset.image_io import read_label
    from samunet.evaluation.inference_information import CandidateResult, InferenceInformation
    from samunet.evaluation.postprocessing import decide_postprocessing, mean_dice
    from samunet.evaluation.smoothing import decide_smoothing

    log = get_logger()
    results = dataset_results_folder(dataset)
    folders = model_folders(results, plans_name)
    if adapters:
        missing = [a for a in adapters if a not in folders]
        if missing:
            raise TrainedModelError(f"{results}: no trained model folder for {', '.join(missing)} "
                                    f"with plans {plans_name} (found: {', '.join(sorted(folders)) or 'none'})")
        folders = {a: folders[a] for a in adapters}
    collected = [o for a, f in folders.items() if (o := collect_validation(a, f)) is not None]
    if not collected:
        raise TrainedModelError(f"{results}: no fold of any {'/'.join(folders) or '<adapter>'}__{plans_name} "
                                "folder has validation outputs; train first")
    for adapter in sorted(set(folders) - {o.adapter for o in collected}):
        log.warning("%s: no fold has validation outputs (fold_N/validation/); left out", folders[adapter])
    for out in collected:
        log.info("%s: validation of fold(s) %s (%s)", out.adapter, out.folds,
                 f"all {NUM_FOLDS} folds" if sorted(out.folds) == list(range(NUM_FOLDS))
                 else f"not all {NUM_FOLDS} folds")
    common = set.intersection(*[set(o.label_files) | set(o.probability_files) for o in collected])
    if not common:
        raise TrainedModelError(f"{results}: the adapters' validation outputs share no case; train the same folds")
    dataset_json = read_json(folders[collected[0].adapter] / DATASET_JSON_FILE)
    # the plans the models were trained with say what their outputs are (regions, ignore label)
    plans_path = folders[collected[0].adapter] / MODEL_PLANS_FILE
    scheme = (Plans.load(plans_path).label_scheme if plans_path.is_file()
              else LabelScheme.from_dataset_json(dataset_json))
    foreground, ignore = scheme.evaluated(), scheme.ignore_label  # regions are compared region by region
    ending = dataset_json["file_ending"]
    label_folder = raw_root() / results.name / "labelsTr"
    references = {}
    for case in sorted(common):
        path = label_folder / f"{case}{ending}"
        if not path.is_file():
            raise TrainedModelError(f"{path}: reference label of validation case {case} is missing")
        reference, geometry = read_label(path)
        references[case] = (reference, geometry.spacing)
    log.info("comparing on %d validation case(s) covered by every adapter", len(common))

    candidates: list[list[ValidationOutputs]] = [[o] for o in collected]
    with_probs = [o for o in collected if common <= set(o.probability_files)]
    candidates += [list(pair) for pair in itertools.combinations(with_probs, 2)]
    if len(with_probs) < len(collected) and len(collected) > 1:
        log.warning("ensembles leave out %s: validation probabilities (CASE.npz) missing for some cases",
                    ", ".join(o.adapter for o in collected if o not in with_probs))
    scored: list[CandidateResult] = []
    leader = None  # (rank, result, cases, members): postprocessing starts from the leader's scored predictions
    for members in candidates:
        name = "+".join(o.adapter for o in members)
        cases = _cases(members, references, scheme, progress, name)
        mean, per_class = mean_dice(cases, foreground, ignore_label=ignore)
        scored.append(CandidateResult([o.adapter for o in members], mean, {str(k): v for k, v in per_class.items()},
                                      {o.adapter: o.folds for o in members}))
        log.info("%-30s mean foreground Dice %.4f  (%s)", name, mean,
                 ", ".join(f"{k}: {v:.4f}" for k, v in per_class.items()))
        rank = -np.inf if np.isnan(mean) else mean
        if leader is None or rank > leader[0]:  # ties keep the earlier candidate
            leader = (rank, scored[-1], cases, members)
    _, best, best_cases, members = leader
    log.info("best: %s (mean Dice %.4f)", "+".join(best.adapters), best.mean_dice)
    if all(common <= set(o.probability_files) for o in members):
        trials, cases = decide_smoothing(
            lambda sigma: best_cases if sigma is None else _cases(members, references, scheme, progress,
                                                                  f"smoothing {sigma:.2f}", sigma),
            foreground, ignore)
    else:
        log.info("smoothing not tried: validation probabilities (CASE.npz) missing for some cases")
        trials, cases = [], best_cases
    steps = decide_postprocessing(cases, foreground, ignore)
    kept = [s for s in steps if s.kept]
    # each decision scored what it kept: the last kept step's figure, else the kept smoothing's, else the plain one
    kept_smoothing = [t for t in trials if t.kept]
    after = (kept[-1].dice_after if kept else kept_smoothing[0].dice_after if kept_smoothing else best.mean_dice)
    checkpoints = {o.checkpoint for o in members}
    info = InferenceInformation(
        dataset_name=results.name, plans_name=plans_name, adapters=best.adapters, folds=best.folds,
        checkpoint=checkpoints.pop() if len(checkpoints) == 1 else DEFAULT_VALIDATION_CHECKPOINT,
        num_cases=len(common), mean_dice=best.mean_dice, mean_dice_postprocessed=after,
        postprocessing=steps, candidates=scored, smoothing=trials,
    )
    if write:
        info.save(results / INFERENCE_INFORMATION_FILE)
        log.info("written %s", results / INFERENCE_INFORMATION_FILE)
    return info


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog=PROG,
        description="Compare trained adapters (and pairs of them) on their cross-validation outputs, decide "
        "postprocessing (probability smoothing, largest component), and write inference_information.json for "
        "samunet_predict.",
    )
    p.add_argument("-d", dest="dataset", required=True, help="dataset id or name (4, Dataset004_Hippocampus)")
    p.add_argument("-p", dest="plans", default=DEFAULT_PLANS_NAME, help=f"plans name (default {DEFAULT_PLANS_NAME})")
    p.add_argument("-a", dest="adapters", nargs="+", help="adapters to compare (default: every trained one)")
    add_nnunet_spellings(p, nnunet_flags.FIND_BEST)
    return p


@user_command(PROG)
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(dataset_results_folder(args.dataset), "find_best")
    find_best(args.dataset, args.plans, args.adapters)


if __name__ == "__main__":
    main()
