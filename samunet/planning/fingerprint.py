"""Dataset fingerprint: what the planner needs to know about a raw dataset, measured once.

Per case: spacing, shape, the crop-to-nonzero box, the foreground box, and per class its voxel count,
bounding-box extent and the slices containing it along each axis (as [start, stop) runs, which stay small
for large volumes). Per channel: foreground intensity statistics from up to ``samples_per_case`` voxels
sampled per case with a fixed seed (nnU-Net style). Written to
``$SAMUNET_PREPROCESSED/DatasetXXX/dataset_fingerprint.json``.
"""
from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from samunet.utils.progress import progress as progress_bar

from samunet.core.errors import SamunetUserError
from samunet.core.records import VersionedRecord
from samunet.preprocessing.bounding_box import bbox_of

FINGERPRINT_SCHEMA_VERSION = 1
DEFAULT_SAMPLES_PER_CASE = 10_000
DEFAULT_SEED = 1234
# one worker's peak while it fingerprints a case: its interpreter (numpy, scipy, SimpleITK), then per voxel and
# channel the float32 image and its read buffer, the masks and label, and the int64 indices of the sampled voxels
WORKER_BASE_BYTES = 150 * 1024**2
WORKER_BYTES_PER_VOXEL = 32


@dataclass
class ClassInCase:
    voxels: int
    extent: list[int]  # bounding-box size along (z, y, x), voxels
    slice_runs: list[list[list[int]]]  # per axis (z, y, x): [start, stop) runs of slices containing the class
    width: list[float] | None = None  # per axis: mean width in the planes across it, voxels (see mean_widths)

    def slice_count(self, axis: int) -> int:
        return sum(stop - start for start, stop in self.slice_runs[axis])


@dataclass
class CaseFingerprint:
    case_id: str
    spacing: list[float]  # (z, y, x)
    shape: list[int]  # (z, y, x)
    nonzero_bbox: list[list[int]]  # [start, stop) per axis of the union of channels != 0
    shape_after_crop: list[int]
    foreground_bbox: list[list[int]] | None  # [start, stop) per axis of labels > 0; None: no foreground
    classes: dict[str, ClassInCase]  # label value (as text) -> statistics; only classes present


@dataclass
class ChannelIntensity:
    channel: int
    name: str
    mean: float
    median: float
    std: float
    min: float
    max: float
    percentile_00_5: float
    percentile_99_5: float
    num_samples: int
    source: str = "foreground"  # "foreground" | "nonzero" (no labelled voxel anywhere)


@dataclass
class ClassSummary:
    name: str
    voxels: int
    cases: list[str]
    median_extent: list[float]  # bounding-box size per axis (z, y, x), voxels, median over the cases containing it
    median_extent_mm: list[float]
    median_width: list[float] | None = None  # per axis (planes across it), voxels, median over the cases


@dataclass
class DatasetFingerprint(VersionedRecord):
    dataset_name: str
    labels: dict[str, int | list[int]]  # as in dataset.json (a list is a region)
    channel_names: dict[str, str]
    file_ending: str
    cases: list[CaseFingerprint]
    intensities: list[ChannelIntensity]
    classes: dict[str, ClassSummary]  # label value (as text) -> summary, foreground labels only
    median_spacing: list[float]
    median_shape_after_crop: list[float]
    mean_crop_volume_reduction: float  # mean over cases of 1 - voxels after crop / voxels before
    samples_per_case: int = DEFAULT_SAMPLES_PER_CASE
    seed: int = DEFAULT_SEED
    schema_version: int = FINGERPRINT_SCHEMA_VERSION
    regions_class_order: list[int] | None = None

    SCHEMA_VERSION = FINGERPRINT_SCHEMA_VERSION
    RERUN_HINT = "re-run samunet_plan"

    @property
    def num_channels(self) -> int:
        return len(self.intensities)




def runs_of(flags: np.ndarray) -> list[list[int]]:
    """[start, stop) runs of True in a 1D boolean array."""
    padded = np.concatenate([[False], flags.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def class_statistics(label: np.ndarray, ignore_label: int | None = None) -> dict[str, ClassInCase]:
    """Voxel counts, extents and per-axis slice runs of every label value > 0 except the ignore label.

    Each class is examined inside its own bounding box only, so many small organs in a large CT stay cheap."""
    lab = label if np.issubdtype(label.dtype, np.integer) else label.astype(np.int32)
    if lab.size and lab.min() < 0:
        raise ValueError("negative label values")
    counts = np.bincount(lab.ravel())
    boxes = ndimage.find_objects(lab)
    stats = {}
    for v in range(1, len(counts)):
        if counts[v] == 0 or v == ignore_label:
            continue
        box = boxes[v - 1]
        inside = lab[box] == v
        runs = []
        for axis, s in enumerate(box):
            flags = inside.any(axis=tuple(a for a in range(lab.ndim) if a != axis))
            runs.append([[a + s.start, b + s.start] for a, b in runs_of(flags)])
        stats[str(v)] = ClassInCase(voxels=int(counts[v]), extent=[int(s.stop - s.start) for s in box],
                                    slice_runs=runs, width=mean_widths(inside))
    return stats


def mean_widths(mask: np.ndarray) -> list[float]:
    """Per axis, the mask's mean width in the planes across that axis: 2 x area / boundary pixels (a strip w pixels
    wide gives w, a disk half its diameter). Bounding boxes say nothing of thin structures (a vessel tree spans
    the whole image); this is what the planner keeps above the decoder's resolution."""
    area = float(mask.sum())
    widths = []
    for axis in range(mask.ndim):
        structure = ndimage.generate_binary_structure(mask.ndim, 1)
        structure[tuple(slice(None) if a != axis else 0 for a in range(mask.ndim))] = False
        structure[tuple(slice(None) if a != axis else 2 for a in range(mask.ndim))] = False
        boundary = area - float(ndimage.binary_erosion(mask, structure, border_value=0).sum())
        widths.append(round(2.0 * area / max(boundary, 1.0), 3))
    return widths


def sample_foreground(image: np.ndarray, mask: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
    """(C, n) intensities of up to ``num_samples`` voxels drawn without replacement from ``mask``."""
    idx = np.flatnonzero(mask.ravel())
    if idx.size > num_samples:
        idx = np.sort(np.random.RandomState(seed).choice(idx, num_samples, replace=False))
    flat = image.reshape(image.shape[0], -1)
    return flat[:, idx].astype(np.float64)


def fingerprint_case(case_id: str, image_files: list[str], label_file: str | None,
                     num_samples: int, seed: int, ignore_label: int | None = None,
                     ) -> tuple[CaseFingerprint, np.ndarray, np.ndarray]:
    """Returns the case's fingerprint, foreground samples (C, n) and nonzero samples (C, m) as a fallback.

    Voxels of the ignore label are unannotated: they count as foreground nowhere (extents, classes, samples)."""
    from samunet.dataset.image_io import read_case_images, read_label

    image, geometry = read_case_images([str(f) for f in image_files])
    shape = list(image.shape[1:])
    nonzero = np.any(image != 0, axis=0)
    crop = bbox_of(nonzero) or [[0, s] for s in shape]
    label = None
    if label_file is not None:
        label, _ = read_label(str(label_file))
        if tuple(label.shape) != tuple(shape):
            raise ValueError(f"{label_file}: label shape {tuple(label.shape)} differs from image {tuple(shape)}")
    foreground = label > 0 if label is not None else np.zeros(shape, dtype=bool)
    if label is not None and ignore_label is not None:
        foreground &= label != ignore_label
    fingerprint = CaseFingerprint(
        case_id=case_id,
        spacing=[float(s) for s in geometry.spacing],
        shape=[int(s) for s in shape],
        nonzero_bbox=crop,
        shape_after_crop=[b - a for a, b in crop],
        foreground_bbox=bbox_of(foreground),
        classes=class_statistics(label, ignore_label) if label is not None else {},
    )
    fg_samples = sample_foreground(image, foreground, num_samples, seed)
    nz_samples = sample_foreground(image, nonzero, num_samples // 10, seed) if fg_samples.shape[1] == 0 else \
        np.zeros((image.shape[0], 0))
    return fingerprint, fg_samples, nz_samples


def _fingerprint_case_job(args: tuple) -> tuple[str, Any, Any, Any, str | None]:
    case_id = args[0]
    try:
        return (case_id, *fingerprint_case(*args), None)
    except Exception as e:  # reported with the case name by the caller
        return case_id, None, None, None, f"{type(e).__name__}: {e}"


class FingerprintError(SamunetUserError, RuntimeError):
    pass


def _largest_case_voxels(cases) -> int:
    """Voxels times channels of the largest case, from the image headers (no pixel data read)."""
    import SimpleITK as sitk

    largest = 0
    for case in cases:
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(case.image_files[0]))
            reader.ReadImageInformation()
        except RuntimeError:  # an unreadable file: its worker reports it with the case name
            continue
        voxels = int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents() * len(case.image_files)
        largest = max(largest, voxels)
    return largest


def _affordable_workers(cases, requested: int) -> int:
    """At most ``requested`` workers, fewer when that many copies of the largest case would not fit in half the
    available memory: cases stream through the pool, so the peak follows the largest case, not their number."""
    from samunet.utils.logs import get_logger
    from samunet.utils.processes import default_num_processes, usable_cpu_count

    if requested <= 1:
        return requested
    affordable = default_num_processes(WORKER_BASE_BYTES + WORKER_BYTES_PER_VOXEL * _largest_case_voxels(cases))
    if affordable >= min(requested, usable_cpu_count()):  # memory is not what limits them
        return requested
    get_logger().info("fingerprint: %d worker(s) instead of %d: what the available memory allows for the largest case",
                      affordable, requested)
    return affordable


def intensity_statistics(samples: np.ndarray, channel: int, name: str, source: str) -> ChannelIntensity:
    if samples.size == 0:
        return ChannelIntensity(channel, name, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0, source)
    return ChannelIntensity(
        channel=channel, name=name, mean=float(samples.mean()), median=float(np.median(samples)),
        std=float(samples.std()), min=float(samples.min()), max=float(samples.max()),
        percentile_00_5=float(np.percentile(samples, 0.5)), percentile_99_5=float(np.percentile(samples, 99.5)),
        num_samples=int(samples.size), source=source,
    )


def summarize_classes(cases: list[CaseFingerprint], labels: dict[str, int]) -> dict[str, ClassSummary]:
    names = {str(v): k for k, v in labels.items()}
    summary = {}
    for value in sorted({v for c in cases for v in c.classes}, key=int):
        having = [c for c in cases if value in c.classes]
        extents = np.array([c.classes[value].extent for c in having], dtype=float)
        extents_mm = extents * np.array([c.spacing for c in having])
        summary[value] = ClassSummary(
            name=names.get(value, f"label_{value}"),
            voxels=int(sum(c.classes[value].voxels for c in having)),
            cases=[c.case_id for c in having],
            median_extent=[float(x) for x in np.median(extents, axis=0)],
            median_extent_mm=[float(x) for x in np.median(extents_mm, axis=0)],
            median_width=[float(x) for x in np.median([c.classes[value].width for c in having], axis=0)]
            if all(c.classes[value].width for c in having) else None,
        )
    return summary


def compute_fingerprint(raw_folder: str | Path, num_processes: int = 1,
                        samples_per_case: int = DEFAULT_SAMPLES_PER_CASE, seed: int = DEFAULT_SEED,
                        progress: bool = True) -> DatasetFingerprint:
    """Fingerprint the training cases of a raw dataset folder (nnU-Net layout) with worker processes."""
    from samunet.dataset.dataset_json import DatasetInfo

    raw_folder = Path(raw_folder)
    info = DatasetInfo.load(raw_folder)
    cases = info.training_cases()
    if not cases:
        raise FingerprintError(f"{raw_folder}: no training cases")
    jobs = [(c.case_id, [str(f) for f in c.image_files], None if c.label_file is None else str(c.label_file),
             samples_per_case, seed, info.label_scheme.ignore_label) for c in cases]
    bar = dict(total=len(jobs), desc="fingerprint", unit="case", disable=not progress)
    num_processes = _affordable_workers(cases, num_processes)
    if num_processes <= 1:
        results = [_fingerprint_case_job(j) for j in progress_bar(jobs, **bar)]
    else:
        with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
            results = list(progress_bar(pool.imap_unordered(_fingerprint_case_job, jobs, chunksize=4), **bar))
    failures = [f"{case_id}: {err}" for case_id, *_, err in results if err]
    if failures:
        raise FingerprintError(f"{len(failures)} case(s) could not be fingerprinted:\n  " + "\n  ".join(failures))
    results.sort(key=lambda r: r[0])
    case_fps = [r[1] for r in results]
    num_channels = results[0][2].shape[0]
    fg = np.concatenate([r[2] for r in results], axis=1)
    source = "foreground"
    if fg.shape[1] == 0:  # unlabelled volumes: fall back to the nonzero voxels
        fg, source = np.concatenate([r[3] for r in results], axis=1), "nonzero"
    channel_names = {str(k): str(v) for k, v in info.channel_names.items()}
    intensities = [intensity_statistics(fg[c], c, channel_names.get(str(c), f"channel_{c}"), source)
                   for c in range(num_channels)]
    reduction = [1.0 - np.prod(c.shape_after_crop) / np.prod(c.shape) for c in case_fps]
    return DatasetFingerprint(
        dataset_name=raw_folder.name,
        labels={str(k): v for k, v in info.labels.items()},
        regions_class_order=info.regions_class_order,
        channel_names=channel_names,
        file_ending=info.file_ending,
        cases=case_fps,
        intensities=intensities,
        classes=summarize_classes(case_fps, info.labels),
        median_spacing=[float(x) for x in np.median([c.spacing for c in case_fps], axis=0)],
        median_shape_after_crop=[float(x) for x in np.median([c.shape_after_crop for c in case_fps], axis=0)],
        mean_crop_volume_reduction=float(np.mean(reduction)),
        samples_per_case=samples_per_case,
        seed=seed,
    )


def fingerprint_sha256(fingerprint: DatasetFingerprint) -> str:
    """Hash of the fingerprint's content (plans record it to tell which fingerprint they came from)."""
    import hashlib

    return hashlib.sha256(json.dumps(fingerprint.to_dict(), sort_keys=True).encode()).hexdigest()
