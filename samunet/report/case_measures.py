"""One case's figures: its metrics (read from summary.json or computed with samunet_evaluate's functions), the
label values it holds checked against the labels, and the slice with the most wrong voxels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samunet.core.labels import Region, region_mask
from samunet.evaluation.evaluate_folder import FilePair, read_pair
from samunet.evaluation.metrics import compute_metrics, metric_key
from samunet.report.sources import CaseFiles, CaseSet, ReportError

ANISOTROPY_RATIO = 2.0  # without plans: slice along the coarsest axis when it is this much coarser than the finest


@dataclass
class CaseVolumes:
    reference: np.ndarray  # (z, y, x) label maps
    prediction: np.ndarray
    spacing: tuple[float, ...]


@dataclass
class CaseMeasures:
    case_id: str
    metrics: dict[str, dict]  # summary key ("1", "(1, 2)") -> {"Dice", "HD95", ...}
    axis: int  # the slicing axis in (z, y, x)
    slice_index: int
    slice_errors: int  # false positives + false negatives on that slice, summed over the evaluated structures

    def mean(self, metric: str) -> float:
        values = [float(m[metric]) for m in self.metrics.values() if m.get(metric) is not None]
        finite = [v for v in values if not np.isnan(v)]
        return float(np.mean(finite)) if finite else float("nan")


def read_volumes(case: CaseFiles) -> CaseVolumes:
    """Both label maps, on the same grid (a geometry mismatch is the evaluation's one-line error)."""
    reference, prediction, spacing = read_pair(FilePair(case.reference, case.prediction))
    return CaseVolumes(reference, prediction, tuple(float(s) for s in spacing))


def check_values(case: CaseFiles, volumes: CaseVolumes, case_set: CaseSet) -> None:
    """Label values the plans or dataset.json do not define are an error naming the file."""
    if case_set.scheme is None:
        return
    allowed = set(case_set.scheme.values_in_files)
    for path, array in ((case.prediction, volumes.prediction), (case.reference, volumes.reference)):
        unknown = sorted(set(np.unique(array).tolist()) - allowed)
        if unknown:
            raise ReportError(f"{path}: label value(s) {', '.join(map(str, unknown))} not defined in "
                              f"{case_set.labels_source} (labels {', '.join(map(str, sorted(allowed)))})")


def slicing_axis(case_set: CaseSet, spacing: tuple[float, ...], shape: tuple[int, ...]) -> int:
    """The plans' slicing axis; else the coarsest axis of an anisotropic volume; else z (a 2D image's only one)."""
    if case_set.slicing_axis is not None:
        return case_set.slicing_axis
    if min(shape) == 1:
        return int(np.argmin(shape))
    coarsest = int(np.argmax(spacing))
    return coarsest if spacing[coarsest] >= ANISOTROPY_RATIO * min(spacing) else 0


def errors_per_slice(volumes: CaseVolumes, structures: list[Region], axis: int,
                     ignore_label: int | None) -> np.ndarray:
    """False positives + false negatives of every slice along ``axis``, summed over the structures."""
    other = tuple(a for a in range(volumes.reference.ndim) if a != axis)
    counted = None if ignore_label is None else volumes.reference != ignore_label
    total = np.zeros(volumes.reference.shape[axis], dtype=np.int64)
    for structure in structures:
        wrong = region_mask(volumes.reference, structure) ^ region_mask(volumes.prediction, structure)
        if counted is not None:
            wrong &= counted
        total += wrong.sum(axis=other)
    return total


def worst_slice(volumes: CaseVolumes, structures: list[Region], axis: int, ignore_label: int | None) -> tuple[int, int]:
    """(slice index, its errors): the most false positives + negatives; with none, the slice of most reference
    foreground (the middle one when there is none either)."""
    errors = errors_per_slice(volumes, structures, axis, ignore_label)
    if errors.max() > 0:
        return int(np.argmax(errors)), int(errors.max())
    other = tuple(a for a in range(volumes.reference.ndim) if a != axis)
    foreground = (volumes.reference != 0).sum(axis=other)
    index = int(np.argmax(foreground)) if foreground.max() > 0 else volumes.reference.shape[axis] // 2
    return index, 0


def measure_case(case: CaseFiles, volumes: CaseVolumes, case_set: CaseSet, structures: list[Region],
                 tolerance_mm: float) -> CaseMeasures:
    ignore = case_set.scheme.ignore_label if case_set.scheme is not None else None
    if case.metrics is not None:
        metrics = {str(k): v for k, v in case.metrics.items()}
    else:
        computed = compute_metrics(volumes.reference, volumes.prediction, structures, volumes.spacing, tolerance_mm,
                                   ignore_label=ignore)
        metrics = {str(k): v for k, v in computed.items()}
    axis = slicing_axis(case_set, volumes.spacing, volumes.reference.shape)
    index, errors = worst_slice(volumes, structures, axis, ignore)
    return CaseMeasures(case.case_id, metrics, axis, index, errors)


def structures_of(case_set: CaseSet, metric_keys: list[str] | None = None) -> list[Region]:
    """What is scored and drawn: the labels' evaluated structures; without labels, the summary's keys or the
    values present in the files (samunet_evaluate's rule without -d)."""
    if case_set.scheme is not None:
        return case_set.scheme.evaluated()
    if metric_keys:
        return [_region_of_key(k) for k in metric_keys]
    present: set[int] = set()
    for case in case_set.cases:
        volumes = read_volumes(case)
        present |= set(np.unique(volumes.reference).tolist()) | set(np.unique(volumes.prediction).tolist())
    return sorted(v for v in present if v != 0)


def _region_of_key(key: str) -> Region:
    text = str(key).strip()
    if text.startswith("("):
        return tuple(int(v) for v in text.strip("()").split(",") if v.strip())
    return int(text)


def key_of(structure: Region) -> str:
    return str(metric_key(structure))


def structure_name(case_set: CaseSet, structure: Region) -> str:
    return case_set.scheme.name_of(key_of(structure)) if case_set.scheme is not None else key_of(structure)
