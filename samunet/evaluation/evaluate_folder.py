"""Evaluate a folder of predicted label maps against a folder of references, matched by file name."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from samunet.core.errors import SamunetUserError
from samunet.dataset.image_io import GeometryMismatchError, file_ending_of, read_label
from samunet.core.labels import Region
from samunet.evaluation.metrics import DEFAULT_TOLERANCE_MM, compute_metrics, metric_key, summarize
from samunet.utils.atomic import write_json
from samunet.utils.logs import get_logger


class EvaluationError(SamunetUserError, ValueError):
    """Folders that cannot be evaluated; the message names the file and the problem."""


@dataclass
class FilePair:
    reference: Path
    prediction: Path


def image_files(folder: Path) -> list[Path]:
    """Visible files of ``folder`` with a supported image ending, sorted by name."""
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: folder does not exist")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and file_ending_of(p))


def match_files(reference_folder: Path, prediction_folder: Path) -> tuple[list[FilePair], list[Path]]:
    """(pairs to evaluate, references without a prediction). A prediction without a reference is an error."""
    references = {p.name: p for p in image_files(reference_folder)}
    predictions = image_files(prediction_folder)
    if not predictions:
        raise EvaluationError(f"{prediction_folder}: no prediction files (.nii.gz, .nrrd, .mha, .png, ...) found")
    pairs = []
    for prediction in predictions:
        if prediction.name not in references:
            raise EvaluationError(f"{prediction}: no reference {reference_folder / prediction.name}")
        pairs.append(FilePair(references.pop(prediction.name), prediction))
    return pairs, sorted(references.values())


def read_pair(pair: FilePair) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    reference, ref_geometry = read_label(pair.reference)
    prediction, pred_geometry = read_label(pair.prediction)
    differences = ref_geometry.differences(pred_geometry)
    if differences:
        raise GeometryMismatchError(
            f"{pair.prediction}: geometry differs from its reference {pair.reference}: {'; '.join(differences)}"
        )
    return reference, prediction, ref_geometry.spacing


def evaluate_pair(pair: FilePair, labels: Sequence[Region], tolerance_mm: float = DEFAULT_TOLERANCE_MM,
                  ignore_label: int | None = None) -> dict:
    """One ``metric_per_case`` entry."""
    reference, prediction, spacing = read_pair(pair)
    metrics = compute_metrics(reference, prediction, labels, spacing, tolerance_mm, ignore_label=ignore_label)
    return {"reference_file": str(pair.reference), "prediction_file": str(pair.prediction), "metrics": metrics}


def _labels_present(pair: FilePair) -> set[int]:
    reference, prediction, _ = read_pair(pair)
    return set(np.unique(reference).tolist()) | set(np.unique(prediction).tolist())


def _evaluate_star(args) -> dict:
    return evaluate_pair(*args)


def evaluate_folders(reference_folder: str | Path, prediction_folder: str | Path,
                     labels: Sequence[Region] | None = None, tolerance_mm: float = DEFAULT_TOLERANCE_MM,
                     num_processes: int = 1, output_file: str | Path | None = None, progress: bool = False,
                     ignore_label: int | None = None) -> dict:
    """Summary dict (nnU-Net summary.json structure); written to ``output_file`` when given.

    ``labels``: foreground label values (or regions: tuples of values, ``LabelScheme.evaluated()``) to
    evaluate; None: every non-zero value found in the files except ``ignore_label``, whose reference voxels
    are left out of every metric."""
    log = get_logger()
    reference_folder, prediction_folder = Path(reference_folder), Path(prediction_folder)
    pairs, unpredicted = match_files(reference_folder, prediction_folder)
    if unpredicted:
        log.warning("%d reference(s) have no prediction and are not evaluated (first: %s)", len(unpredicted),
                    unpredicted[0])
    if labels is None:
        present: set[int] = set()
        for pair in pairs:
            present |= _labels_present(pair)
        labels = sorted(v for v in present if v != 0 and v != ignore_label)
        log.info("labels from the values present in the files: %s", labels)
    labels = [tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else int(v) for v in labels]
    labels = [v for v in labels if v != 0]
    jobs = [(pair, labels, tolerance_mm, ignore_label) for pair in pairs]
    if num_processes > 1:
        with ProcessPoolExecutor(num_processes) as pool:
            results = pool.map(_evaluate_star, jobs)
            per_case = list(_progress(results, len(jobs), progress))
    else:
        per_case = [_evaluate_star(job) for job in _progress(jobs, len(jobs), progress)]
    summary = summarize(per_case, [metric_key(v) for v in labels])
    summary["NSD_tolerance_mm"] = float(tolerance_mm)
    if output_file is not None:
        write_json(summary, output_file)
    return summary


def _progress(iterable, total: int, enabled: bool):
    from samunet.utils.progress import progress

    return progress(iterable, total=total, desc="evaluating", unit="case", disable=not enabled)
