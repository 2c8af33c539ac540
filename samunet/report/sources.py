"""What a report is made of: the folder given to samunet_report, recognised and resolved to its cases.

- a fold folder (``fold_N/`` with ``validation/summary.json``): its validation cases, training curve and plans;
- a validation folder (``summary.json`` beside the ``CASE<ending>`` label maps): its cases, summary.json's metrics;
- a prediction folder with references (``-r labelsTr/``): metrics computed here, as samunet_evaluate does;
- a compare folder (samunet_compare's ``leaderboard.csv``): the leaderboard.

References and images of a validation are the raw dataset's (``$SAMUNET_RAW/<dataset>/labelsTr``,
``imagesTr/CASE_0000<ending>``), the dataset named by the model folder's plans, as samunet_find_best finds them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from samunet.core.errors import SamunetUserError
from samunet.core.labels import LabelScheme
from samunet.core.layout import FOLD_RE
from samunet.core.names import (
    DATASET_JSON_FILE, LEADERBOARD_CSV_FILE, MODEL_PLANS_FILE, SUMMARY_FILE, VALIDATION_FOLDER,
)
from samunet.core.plans import Plans
from samunet.dataset.image_io import file_ending_of
from samunet.utils.atomic import read_json
from samunet.utils.logs import get_logger

log = get_logger()
FIRST_CHANNEL = "_0000"  # the image channel drawn under the contours


class ReportError(SamunetUserError, ValueError):
    """Input samunet_report cannot use; the message names the file or folder and the problem."""


@dataclass
class CaseFiles:
    case_id: str
    prediction: Path
    reference: Path
    image: Path | None  # the first channel, drawn under the contours; None: contours on black
    metrics: dict | None  # summary.json's metrics of this case (summary key -> metric -> value); None: computed


@dataclass
class CaseSet:
    cases: list[CaseFiles]
    scheme: LabelScheme | None  # None: the labels are the values found in the files
    labels_source: Path | None  # the plans.json or dataset.json the labels come from (named in errors)
    slicing_axis: int | None  # the plans' slicing axis in (z, y, x); None: chosen from the spacing
    summary_file: Path | None = None  # where the metrics come from, when they are read and not computed


@dataclass
class ReportSource:
    kind: str  # "fold" | "validation" | "predictions" | "compare"
    folder: Path
    title: str
    cases: CaseSet | None = None
    fold_folder: Path | None = None
    model_folder: Path | None = None
    plans: Plans | None = None


def resolve_source(folder: Path, references: Path | None = None, images: Path | None = None,
                   dataset_json: Path | None = None) -> ReportSource:
    """Recognise ``folder``; every input problem is a ReportError raised here, before anything is written."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder}: folder does not exist")
    for given, flag in ((references, "-r"), (images, "-i")):
        if given is not None and not Path(given).is_dir():
            raise ReportError(f"{given}: folder given with {flag} does not exist")
    if references is not None:
        return _prediction_source(folder, Path(references), images, dataset_json)
    if (folder / LEADERBOARD_CSV_FILE).is_file():
        return ReportSource("compare", folder, f"Comparison: {folder.parent.name}")
    if (folder / VALIDATION_FOLDER / SUMMARY_FILE).is_file():
        return _fold_source(folder, images)
    if (folder / SUMMARY_FILE).is_file():
        return _validation_source(folder, images, title=f"Validation: {_describe(folder)}")
    if FOLD_RE.match(folder.name):
        raise ReportError(f"{folder / VALIDATION_FOLDER / SUMMARY_FILE}: the fold has no validation yet; finish its "
                          f"training or run samunet_train ... --val-only")
    if any(file_ending_of(p) for p in folder.iterdir() if p.is_file()):
        raise ReportError(f"{folder}: predictions need their references: add -r labelsTr/ (and -i imagesTr/)")
    raise ReportError(f"{folder}: not a fold, validation, compare or prediction folder (no {SUMMARY_FILE}, "
                      f"{LEADERBOARD_CSV_FILE} or label maps)")


def _describe(folder: Path) -> str:
    """``Dataset004_Hippocampus / decoder__samunetPlans / fold_0``: the last folders that say what was run."""
    parts = folder.resolve().parts
    return " / ".join(parts[-4:-1] if folder.name == VALIDATION_FOLDER else parts[-3:])


def _fold_source(fold_folder: Path, images: Path | None) -> ReportSource:
    source = _validation_source(fold_folder / VALIDATION_FOLDER, images, title=f"Fold: {_describe(fold_folder)}")
    source.kind, source.folder, source.fold_folder = "fold", fold_folder, fold_folder
    return source


def _model_files(validation: Path) -> tuple[Path | None, Plans | None, dict | None]:
    """(model folder, its plans, its dataset.json copy) for ``<model>/fold_N/validation``; Nones elsewhere."""
    fold = validation.parent
    model = fold.parent
    if not FOLD_RE.match(fold.name) or not (model / MODEL_PLANS_FILE).is_file():
        return None, None, None
    plans = Plans.load(model / MODEL_PLANS_FILE)
    dataset_file = model / DATASET_JSON_FILE
    return model, plans, (read_json(dataset_file) if dataset_file.is_file() else None)


def _read_summary(path: Path) -> list[dict]:
    try:
        per_case = read_json(path)["metric_per_case"]
        if not isinstance(per_case, list) or not all(isinstance(c, dict) and "metrics" in c for c in per_case):
            raise TypeError("metric_per_case is not a list of cases with metrics")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ReportError(f"{path}: not a readable summary.json ({e})") from None
    return per_case


def _validation_source(validation: Path, images: Path | None, title: str) -> ReportSource:
    from samunet.core.paths import raw_root

    summary_file = validation / SUMMARY_FILE
    per_case = _read_summary(summary_file)
    model, plans, dataset = _model_files(validation)
    ending = plans.file_ending if plans is not None else None
    raw = raw_root() / plans.dataset_name if plans is not None else None
    label_folder = raw / "labelsTr" if raw is not None else None
    image_folder = images if images is not None else (raw / "imagesTr" if raw is not None else None)
    cases = []
    for entry in per_case:
        name = Path(str(entry.get("prediction_file", ""))).name
        case_ending = ending or file_ending_of(name)
        if not case_ending or not name.endswith(case_ending):
            raise ReportError(f"{summary_file}: case {name!r} is not a label map file name")
        case_id = name[: -len(case_ending)]
        prediction = validation / name
        if not prediction.is_file():
            raise ReportError(f"{prediction}: listed in {summary_file} but missing")
        reference = _validation_reference(entry, label_folder, case_id, case_ending, summary_file)
        image = _image_file(image_folder, case_id, case_ending)
        cases.append(CaseFiles(case_id, prediction, reference, image, entry["metrics"]))
    listed = {c.prediction.name for c in cases}
    for path in sorted(validation.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name not in listed and \
                file_ending_of(path) and file_ending_of(path) == (ending or file_ending_of(path)):
            raise ReportError(f"{path}: a label map that {summary_file} does not list (case names do not match; "
                              f"re-run the validation)")
    if not cases:
        raise ReportError(f"{summary_file}: lists no case")
    scheme = plans.label_scheme if plans is not None else (
        LabelScheme.from_dataset_json(dataset) if dataset is not None else None)
    slicing_axis = int(plans.slicing.transpose[0]) if plans is not None else None
    labels_source = model / MODEL_PLANS_FILE if plans is not None else None
    _warn_missing_images(cases, image_folder)
    case_set = CaseSet(cases, scheme, labels_source, slicing_axis, summary_file)
    return ReportSource("validation", validation, title, case_set, model_folder=model, plans=plans)


def _validation_reference(entry: dict, label_folder: Path | None, case_id: str, ending: str,
                          summary_file: Path) -> Path:
    """The raw label file; else the file summary.json names (a copy of the dataset elsewhere)."""
    tried = []
    if label_folder is not None:
        raw = label_folder / f"{case_id}{ending}"
        if raw.is_file():
            return raw
        tried.append(str(raw))
    named = Path(str(entry.get("reference_file", "")))
    if named.name.endswith(ending) and named.is_file():
        return named
    tried.append(str(named))
    raise ReportError(f"{summary_file}: reference label of case {case_id} not found (tried {', '.join(tried)}); "
                      f"set SAMUNET_RAW or give the prediction folder with -r labelsTr/")


def _image_file(image_folder: Path | None, case_id: str, ending: str) -> Path | None:
    if image_folder is None:
        return None
    path = Path(image_folder) / f"{case_id}{FIRST_CHANNEL}{ending}"
    return path if path.is_file() else None


def _warn_missing_images(cases: list[CaseFiles], image_folder: Path | None) -> None:
    missing = [c.case_id for c in cases if c.image is None]
    if missing and image_folder is not None:
        log.warning("%d case(s) have no image in %s (first: %s): their contours are drawn on black", len(missing),
                    image_folder, missing[0])


def _prediction_source(predictions: Path, references: Path, images: Path | None,
                       dataset_json: Path | None) -> ReportSource:
    from samunet.evaluation.evaluate_folder import match_files

    pairs, unpredicted = match_files(references, predictions)
    if unpredicted:
        log.warning("%d reference(s) have no prediction and are left out (first: %s)", len(unpredicted),
                    unpredicted[0])
    # the raw layout: labelsTr/../dataset.json names the labels, labelsTr/../imagesTr holds the images
    if dataset_json is None and (references.parent / DATASET_JSON_FILE).is_file():
        dataset_json = references.parent / DATASET_JSON_FILE
    scheme = None
    if dataset_json is not None:
        from samunet.core.labels import label_problems

        data = read_json(dataset_json)
        problems = label_problems(data.get("labels"), data.get("regions_class_order"))
        if problems:
            raise ReportError(f"{dataset_json}: {'; '.join(problems)}")
        scheme = LabelScheme.from_dataset_json(data)
    if images is None and (references.parent / "imagesTr").is_dir():
        images = references.parent / "imagesTr"
    cases = [CaseFiles(p.prediction.name[: -len(file_ending_of(p.prediction))], p.prediction, p.reference,
                       _image_file(images, p.prediction.name[: -len(file_ending_of(p.prediction))],
                                   file_ending_of(p.prediction)), None) for p in pairs]
    _warn_missing_images(cases, images)
    title = f"Predictions: {predictions.resolve().name} against {references.resolve().name}"
    return ReportSource("predictions", predictions, title, CaseSet(cases, scheme, dataset_json, None))
