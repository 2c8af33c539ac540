"""Check a raw dataset before planning: every problem found is reported, each naming its file.

Structure checks (dataset.json, file names, endings, channels, labels present, numTraining) run first;
content checks (readability, dimensionality, NaN/Inf, geometry, label values) read every case, in
worker processes. Geometries agree when spacing, origin and direction match within a relative and
absolute tolerance of 1e-4 (``image_io.GEOMETRY_RTOL``) and the shapes are equal.
"""
from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from samunet.core.errors import SamunetUserError
from samunet.core.labels import LabelScheme
from samunet.core.names import DATASET_JSON_FILE
from samunet.dataset.dataset_json import (
    RGB_CHANNELS,
    channel_file_pattern,
    dataset_json_problems,
    escapes_folder,
    visible_files,
)
from samunet.dataset.image_io import ImageReadError, file_ending_of, is_2d_ending, read_image_channels, read_label

PATH_LIST_KEYS = ("training", "test", "dataset")  # dataset.json keys whose strings are file paths


@dataclass(frozen=True)
class Problem:
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


class VerificationError(SamunetUserError, ValueError):
    """Raised by :func:`check_dataset`; the message lists every problem."""

    def __init__(self, raw_folder: Path, problems: list[Problem]):
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"dataset {raw_folder} has {len(problems)} problem(s):\n{listing}")


def check_dataset(raw_folder: str | Path, num_processes: int = 2) -> None:
    """Raise :class:`VerificationError` listing every problem of ``raw_folder``; silent when it is valid."""
    problems = verify_dataset(raw_folder, num_processes)
    if problems:
        raise VerificationError(Path(raw_folder), problems)


def verify_dataset(raw_folder: str | Path, num_processes: int = 2) -> list[Problem]:
    """Every problem of the raw dataset ``raw_folder`` ([] when it is valid)."""
    raw_folder = Path(raw_folder)
    json_path = raw_folder / DATASET_JSON_FILE
    if not json_path.is_file():
        return [Problem(str(json_path), "dataset.json does not exist")]
    try:
        data = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return [Problem(str(json_path), f"is not valid JSON ({e})")]
    problems = [Problem(str(json_path), m) for m in dataset_json_problems(data) + _path_problems(data)]
    if problems:
        return problems  # without a usable dataset.json the files cannot be interpreted
    scheme = LabelScheme.from_dataset_json(data)
    problems += [Problem(str(json_path), m) for m in _label_value_problems(scheme)]
    ending, num_channels = data["file_ending"], len(data["channel_names"])
    images, file_problems = _group_channel_files(raw_folder / "imagesTr", ending, num_channels)
    problems += file_problems
    labels, label_problems = _label_files(raw_folder / "labelsTr", ending)
    problems += label_problems
    for case_id in sorted(set(labels) - set(images)):
        expected = raw_folder / "imagesTr" / f"{case_id}_0000{ending}"
        problems.append(Problem(str(labels[case_id]), f"label without images (expected {expected})"))
    for case_id in sorted(set(images) - set(labels)):
        problems.append(Problem(str(raw_folder / "labelsTr" / f"{case_id}{ending}"),
                                f"label of case {case_id} is missing"))
    if (raw_folder / "imagesTs").is_dir():
        problems += _group_channel_files(raw_folder / "imagesTs", ending, num_channels)[1]
    num_cases = len(set(images) | set(labels))
    if data["numTraining"] != num_cases:
        problems.append(Problem(str(json_path), f"numTraining is {data['numTraining']} but {num_cases} "
                                                f"training case(s) are in imagesTr/labelsTr"))
    jobs = [(images[c], labels[c], num_channels, scheme.values_in_files)
            for c in sorted(set(images) & set(labels)) if images[c] is not None]
    problems += _content_problems(jobs, num_processes)
    return problems


def _path_problems(data: dict) -> list[str]:
    """Paths listed in dataset.json are never followed, but one leaving the folder signals a tampered file."""
    problems = []

    def walk(value, where):
        if isinstance(value, str):
            if escapes_folder(value):
                problems.append(f"{where} '{value}' points outside the dataset folder")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")

    for key in PATH_LIST_KEYS:
        if key in data:
            walk(data[key], key)
    return problems


def _label_value_problems(scheme: LabelScheme) -> list[str]:
    values = scheme.label_values  # the ignore label is checked apart (it must be the highest value)
    if values != list(range(len(values))):
        return [f"label values {values} must be consecutive integers from 0 (background = 0)"]
    return []


def _group_channel_files(folder: Path, ending: str, num_channels: int) -> tuple[dict, list[Problem]]:
    """Case id -> channel files (None when incomplete), and the problems of the folder's files."""
    if not folder.is_dir():
        return {}, [Problem(str(folder), "folder does not exist")]
    pattern, problems, found = channel_file_pattern(ending), [], {}
    for path in visible_files(folder):
        if not path.name.endswith(ending):
            problems.append(Problem(str(path), f"stray file: its ending differs from file_ending '{ending}'"))
            continue
        match = pattern.match(path.name)
        if not match:
            problems.append(Problem(str(path), f"name lacks the 4-digit channel suffix (CASE_0000{ending})"))
            continue
        found.setdefault(match["case"], {})[int(match["channel"])] = path
    cases = {}
    for case_id, channels in sorted(found.items()):
        expected = range(num_channels)
        if is_2d_ending(ending) and num_channels == RGB_CHANNELS and set(channels) == {0}:
            expected = range(1)  # one colour file holds R, G and B
        missing = [folder / f"{case_id}_{c:04d}{ending}" for c in expected if c not in channels]
        extra = [channels[c] for c in sorted(set(channels) - set(expected))]
        problems += [Problem(str(p), f"channel file of case {case_id} is missing "
                                     f"({num_channels} channel(s) in dataset.json)") for p in missing]
        problems += [Problem(str(p), f"extra channel file: dataset.json lists {num_channels} channel(s)")
                     for p in extra]
        cases[case_id] = None if missing else [channels[c] for c in expected]
    return cases, problems


def _label_files(folder: Path, ending: str) -> tuple[dict[str, Path], list[Problem]]:
    if not folder.is_dir():
        return {}, [Problem(str(folder), "folder does not exist")]
    labels, problems = {}, []
    for path in visible_files(folder):
        if path.name.endswith(ending):
            labels[path.name[: -len(ending)]] = path
        else:
            problems.append(Problem(str(path), f"stray file: its ending differs from file_ending '{ending}'"))
    return labels, problems


def _content_problems(jobs: list[tuple], num_processes: int) -> list[Problem]:
    if num_processes <= 1 or len(jobs) < 2:
        results = map(_case_job, jobs)
        return [p for case in results for p in case]
    # spawn: SimpleITK's thread pool is not safe to fork; chunks amortise the per-task overhead
    with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs)), _one_itk_thread) as pool:
        chunk = max(1, len(jobs) // (4 * num_processes))
        return [p for case in pool.imap(_case_job, jobs, chunksize=chunk) for p in case]


def _one_itk_thread() -> None:
    # the files are small: ITK's own threads only compete with the other workers
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)


def _case_job(job: tuple) -> list[Problem]:
    return case_problems(*job)


def _nonfinite_count(path: Path, channels: np.ndarray) -> int:
    if not np.issubdtype(channels.dtype, np.floating):
        return 0
    count = int(np.count_nonzero(~np.isfinite(channels)))
    if count == 0 and file_ending_of(path) in (".nii", ".nii.gz"):
        # ITK before 6 reads NaN/Inf in NIfTI files as 0 without a word (ITK pull request 6683),
        # so the stored values are checked with nibabel
        stored = np.asanyarray(nib.load(str(path)).dataobj)
        count = int(np.count_nonzero(~np.isfinite(stored)))
    return count


def case_problems(image_files: list[Path], label_file: Path, num_channels: int,
                  label_values: list[int]) -> list[Problem]:
    """Content problems of one case: readability, dimensionality, NaN/Inf, channels, geometry, label values."""
    problems, reference, num_read = [], None, 0
    for path in image_files:
        try:
            channels, geometry = read_image_channels(path)
        except ImageReadError as e:
            problems.append(Problem(str(path), str(e).removeprefix(f"{path}: ")))
            continue
        num_read += channels.shape[0]
        bad = _nonfinite_count(path, channels)
        if bad:
            problems.append(Problem(str(path), f"contains {bad} NaN/Inf value(s)"))
        if reference is None:
            reference = (path, geometry)
        elif diffs := reference[1].differences(geometry):
            problems.append(Problem(str(path), f"voxel grid differs from {reference[0].name} "
                                                  f"({reference[0].name} vs this): {'; '.join(diffs)}"))
    if num_read and not problems and num_read != num_channels:
        problems.append(Problem(str(image_files[0]), f"case has {num_read} channel(s), dataset.json "
                                                     f"channel_names lists {num_channels}"))
    try:
        label, label_geometry = read_label(label_file)
    except ImageReadError as e:
        return problems + [Problem(str(label_file), str(e).removeprefix(f"{label_file}: "))]
    if reference is not None and (diffs := reference[1].differences(label_geometry)):
        problems.append(Problem(str(label_file), f"voxel grid differs from image {reference[0].name} "
                                                f"(image vs label): {'; '.join(diffs)}"))
    present = np.flatnonzero(np.bincount(label.ravel())) if label.dtype == np.uint8 else np.unique(label)
    unlisted = sorted(set(present.tolist()) - set(label_values))
    if unlisted:
        problems.append(Problem(str(label_file), f"label value(s) {unlisted} are not listed in dataset.json labels"))
    return problems
