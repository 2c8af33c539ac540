"""3D validation users can trust: whole volumes, scored in the original geometry.

Each validation case is predicted as a volume with ``predict_preprocessed_volume`` (the same code path
``samunet_predict`` uses), mapped back to the original grid with ``restore_label_volume`` and compared with
the reference there. The reference is the raw label file when it is found (``$SAMUNET_RAW``), otherwise the
cached label map restored the same way, which is identical to the raw labels whenever preprocessing did not
resample. ``checkpoint_best`` is chosen on the mean foreground Dice of these volumes, not on a per-batch
"pseudo Dice".

The final validation also writes ``CASE.nii.gz`` (original geometry), ``CASE.npz`` probabilities and
``summary.json`` (nnU-Net's structure) into ``fold_N/validation/``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn
from samunet.utils.progress import progress as progress_bar

from samunet.evaluation.metrics import compute_metrics, metric_key, summarize
from samunet.evaluation.probabilities_io import save_probabilities
from samunet.inference.volume_predictor import predict_preprocessed_volume
from samunet.core.names import SUMMARY_FILE
from samunet.core.plans import Plans
from samunet.preprocessing.case_properties import CaseProperties
from samunet.preprocessing.inverse import restore_label_volume, restore_probabilities
from samunet.utils.atomic import write_json
from samunet.utils.logs import get_logger

log = get_logger()


@dataclass
class ValidationCase:
    case_id: str
    image_path: Path  # CASE_image.npy
    seg_path: Path  # CASE_seg.npy
    properties_path: Path  # CASE.json
    raw_label_path: Path | None = None  # the original label file, when available


def reference_labels(case: ValidationCase, props: CaseProperties) -> tuple[np.ndarray, str]:
    """(reference label map in the original grid, where it came from)."""
    if case.raw_label_path is not None and case.raw_label_path.is_file():
        from samunet.dataset.image_io import read_label

        label, _ = read_label(case.raw_label_path)
        if tuple(label.shape) == tuple(props.original_shape):
            return label, str(case.raw_label_path)
        log.warning("%s: shape %s differs from the preprocessed case's %s; scoring against the cached labels",
                    case.raw_label_path, label.shape, tuple(props.original_shape))
    cached = np.load(case.seg_path, mmap_mode="r")
    return restore_label_volume(np.asarray(cached), props), str(case.seg_path)


def validate(adapter: nn.Module, cases: list[ValidationCase], plans: Plans, mirror: bool, batch_size: int,
             output_folder: Path | None = None, progress: bool = False) -> dict:
    """Predict and score every case; returns nnU-Net's summary dict. Writes outputs when ``output_folder`` is set."""
    scheme = plans.label_scheme  # regions: scored region by region; the ignore label: not scored
    evaluated = scheme.evaluated()
    per_case = []
    iterator = progress_bar(cases, desc="validation", unit="case", leave=False, disable=not progress)
    for case in iterator:
        props = CaseProperties.load(case.properties_path)
        image = np.load(case.image_path, mmap_mode="r")
        probs = predict_preprocessed_volume(adapter, image, plans, mirror=mirror, batch_size=batch_size)
        geometry = props.geometry()
        if output_folder is not None:
            probs_original = restore_probabilities(probs, props, regions=scheme.has_regions)
            prediction = scheme.segmentation(probs_original)
            save_probabilities(probs_original, geometry, scheme.labels, output_folder / f"{case.case_id}.npz",
                               scheme.regions_class_order)
            prediction_file = output_folder / f"{case.case_id}{plans.file_ending}"
            from samunet.dataset.image_io import write_segmentation

            write_segmentation(prediction, geometry, prediction_file)
        else:
            prediction = restore_label_volume(scheme.segmentation(probs), props)
            prediction_file = None
        reference, reference_file = reference_labels(case, props)
        metrics = compute_metrics(reference, prediction, evaluated, geometry.spacing, ignore_label=scheme.ignore_label)
        per_case.append({"reference_file": reference_file,
                         "prediction_file": str(prediction_file) if prediction_file else case.case_id,
                         "metrics": metrics})
    summary = summarize(per_case, labels=[metric_key(r) for r in evaluated])
    if output_folder is not None:
        write_json(summary, output_folder / SUMMARY_FILE)
    return summary


def mean_foreground_dice(summary: dict) -> float:
    value = summary["foreground_mean"].get("Dice", float("nan"))
    return float(value) if value is not None else float("nan")


def dice_per_class(summary: dict, plans: Plans) -> dict[str, float]:
    """``{"anterior": 0.81, ...}`` from a summary (label or region names from the plans)."""
    scheme = plans.label_scheme
    return {scheme.name_of(label): float(m["Dice"]) for label, m in summary["mean"].items()}


def is_improvement(value: float, best: float | None) -> bool:
    return not math.isnan(value) and (best is None or value > best)
