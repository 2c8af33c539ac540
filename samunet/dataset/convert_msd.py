"""Convert a Medical Segmentation Decathlon task (``TaskNN_Name``) into the nnU-Net v2 raw layout.

``samunet_convert_msd -i Task04_Hippocampus`` writes ``$SAMUNET_RAW/Dataset004_Hippocampus`` with
``imagesTr/hippocampus_001_0000.nii.gz``, ``labelsTr/hippocampus_001.nii.gz`` and a v2 dataset.json.
4D multi-modal images are split into one 3D file per channel (``_0000``, ``_0001``, ...) with the
3D part of their geometry. Image values and dtype are kept exactly (uint8 stays uint8, float32 stays
float32); labels are written as uint8 (uint16 above 255). Every write is atomic and dataset.json is
written last, so an interrupted run leaves no dataset.json and a re-run skips the finished cases.
"""
from __future__ import annotations

import multiprocessing
import os
import re
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from samunet.core import nnunet_flags
from samunet.core.command import CommandParser, add_nnunet_spellings, user_command
from samunet.core.names import DATASET_JSON_FILE
from samunet.dataset.dataset_json import DatasetError, escapes_folder
from samunet.dataset.image_io import read_image_channels, read_label, write_image, write_segmentation
from samunet.core.paths import DATASET_FOLDER_RE, dataset_folder_name, raw_root
from samunet.utils.atomic import read_json, write_json
from samunet.utils.logs import get_logger, setup_logging

TASK_FOLDER_RE = re.compile(r"^Task(\d+)_(.+)$")
MSD_ENDING = ".nii.gz"
COPIED_KEYS = ("name", "description", "reference", "licence", "license", "release", "tensorImageSize")


@dataclass(frozen=True)
class MsdCase:
    case_id: str
    image: Path
    label: Path | None  # None for test images


def parse_task_name(task_dir: Path) -> tuple[int, str]:
    """``Task04_Hippocampus`` -> ``(4, "Hippocampus")``."""
    match = TASK_FOLDER_RE.match(Path(task_dir).name)
    if not match:
        raise DatasetError(f"{task_dir}: folder name is not TaskNN_Name (give the dataset id with --id)")
    return int(match.group(1)), match.group(2)


def target_folder(task_dir: str | Path, output_root: str | Path | None = None, dataset_id: int | None = None) -> Path:
    """Where the converted dataset goes: ``output_root/DatasetNNN_Name``."""
    task_dir = Path(task_dir)
    task_id, name = parse_task_name(task_dir) if TASK_FOLDER_RE.match(task_dir.name) else (None, task_dir.name)
    dataset_id = task_id if dataset_id is None else dataset_id
    if dataset_id is None:
        raise DatasetError(f"{task_dir}: folder name is not TaskNN_Name; give the dataset id with --id")
    if not 0 <= dataset_id <= 999:
        raise DatasetError(f"dataset id {dataset_id} must lie in 0..999")
    return Path(output_root if output_root is not None else raw_root()) / dataset_folder_name(dataset_id, name)


def _inside_task(task_dir: Path, entry: object, where: str) -> Path:
    """A path from the MSD dataset.json, refused when it would leave the task folder."""
    if not isinstance(entry, str) or not entry:
        raise DatasetError(f"{task_dir / DATASET_JSON_FILE}: {where} must be a relative path, got {entry!r}")
    if escapes_folder(entry):
        raise DatasetError(f"{task_dir / DATASET_JSON_FILE}: {where} '{entry}' points outside the task folder "
                           f"{task_dir}")
    return task_dir / os.path.normpath(entry)


def _case_id(path: Path) -> str:
    if not path.name.endswith(MSD_ENDING):
        raise DatasetError(f"{path}: MSD images must end with {MSD_ENDING}")
    return path.name[: -len(MSD_ENDING)]


def msd_cases(task_dir: Path, msd: dict) -> tuple[list[MsdCase], list[MsdCase]]:
    """Training and test cases listed in the MSD dataset.json (or found in imagesTr/imagesTs when unlisted)."""
    json_path = task_dir / DATASET_JSON_FILE
    if "training" in msd:
        training = []
        for i, entry in enumerate(msd["training"]):
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise DatasetError(f"{json_path}: training[{i}] must be {{\"image\": ..., \"label\": ...}}")
            image = _inside_task(task_dir, entry["image"], f"training[{i}].image")
            label = _inside_task(task_dir, entry["label"], f"training[{i}].label")
            training.append(MsdCase(_case_id(image), image, label))
    else:
        images = sorted(p for p in (task_dir / "imagesTr").glob("*" + MSD_ENDING) if not p.name.startswith("."))
        training = [MsdCase(_case_id(p), p, task_dir / "labelsTr" / p.name) for p in images]
    if "test" in msd:
        tests = [_inside_task(task_dir, e, f"test[{i}]") for i, e in enumerate(msd["test"])]
    else:
        tests = sorted(p for p in (task_dir / "imagesTs").glob("*" + MSD_ENDING) if not p.name.startswith("."))
    test_cases = [MsdCase(_case_id(p), p, None) for p in tests]
    for case in training + test_cases:
        for path in (case.image, case.label):
            if path is not None and not path.is_file():
                raise DatasetError(f"{path}: listed in {json_path} but does not exist")
    return sorted(training, key=lambda c: c.case_id), sorted(test_cases, key=lambda c: c.case_id)


def v2_dataset_json(msd: dict, num_training: int, json_path: Path) -> dict:
    """nnU-Net v2 dataset.json from an MSD one: channel_names from 'modality', labels name -> int."""
    modality, msd_labels = msd.get("modality"), msd.get("labels")
    if not isinstance(modality, dict) or not modality:
        raise DatasetError(f"{json_path}: 'modality' must map channel numbers to names")
    if not isinstance(msd_labels, dict) or not msd_labels:
        raise DatasetError(f"{json_path}: 'labels' must map label numbers to names")
    labels = {}
    for value, name in sorted(msd_labels.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else -1):
        if not str(value).isdigit():
            raise DatasetError(f"{json_path}: label key {value!r} is not a non-negative integer")
        if name in labels:
            raise DatasetError(f"{json_path}: label name '{name}' is used twice")
        labels[str(name)] = int(value)
    out = {
        "channel_names": {str(k): str(v) for k, v in sorted(modality.items(), key=lambda kv: int(kv[0]))},
        "labels": labels,
        "numTraining": num_training,
        "file_ending": MSD_ENDING,
    }
    out.update({k: msd[k] for k in COPIED_KEYS if k in msd})
    out["converted_by"] = "samunet_convert_msd"
    return out


def _header_size(path: Path) -> tuple[int, ...] | None:
    """Image size from the header, or None when the file is absent or unreadable."""
    if not path.is_file():
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return tuple(reader.GetSize())


def _outputs(case: MsdCase, out_folder: Path, num_channels: int) -> tuple[list[Path], Path | None]:
    image_folder = out_folder / ("imagesTr" if case.label is not None else "imagesTs")
    images = [image_folder / f"{case.case_id}_{c:04d}{MSD_ENDING}" for c in range(num_channels)]
    label = out_folder / "labelsTr" / f"{case.case_id}{MSD_ENDING}" if case.label is not None else None
    return images, label


def _already_converted(case: MsdCase, images: list[Path], label: Path | None) -> bool:
    # atomic writes mean an existing file is complete; the header check guards against foreign files
    source = _header_size(case.image)
    if source is None:
        return False
    sizes = {_header_size(p) for p in images} | ({_header_size(label)} if label is not None else set())
    return sizes == {tuple(source[:3])}


def convert_case(case: MsdCase, out_folder: Path, num_channels: int) -> str:
    """Convert one case; returns "converted" or "skipped" (outputs already there)."""
    images, label = _outputs(case, out_folder, num_channels)
    if _already_converted(case, images, label):
        return "skipped"
    channels, geometry = read_image_channels(case.image, allow_multichannel_volume=True)
    if channels.shape[0] != num_channels:
        raise DatasetError(f"{case.image}: has {channels.shape[0]} channel(s), "
                           f"dataset.json 'modality' lists {num_channels}")
    if label is not None:
        seg, seg_geometry = read_label(case.label)
        if seg.min() < 0:
            raise DatasetError(f"{case.label}: negative label value {seg.min()}")
        write_segmentation(seg, seg_geometry, label)
    for channel, path in zip(channels, images):
        write_image(channel, geometry, path)
    return "converted"


def _convert_job(args: tuple[MsdCase, Path, int]) -> tuple[str, str]:
    return args[0].case_id, convert_case(*args)


def convert_msd_task(task_dir: str | Path, output_root: str | Path | None = None, dataset_id: int | None = None,
                     case_ids: list[str] | None = None, num_processes: int = 2) -> Path:
    """Convert ``task_dir`` into ``output_root/DatasetNNN_Name`` and return that folder.

    ``case_ids`` converts only those training cases (test images are then skipped).
    """
    log = get_logger()
    task_dir = Path(task_dir)
    json_path = task_dir / DATASET_JSON_FILE
    if not json_path.is_file():
        raise DatasetError(f"{json_path}: MSD dataset.json does not exist")
    try:
        msd = read_json(json_path)
    except ValueError as e:
        raise DatasetError(f"{json_path}: is not valid JSON ({e})") from None
    out_folder = target_folder(task_dir, output_root, dataset_id)
    _refuse_id_clash(out_folder)
    training, tests = msd_cases(task_dir, msd)
    if case_ids is not None:
        known = {c.case_id: c for c in training}
        unknown = sorted(set(case_ids) - set(known))
        if unknown:
            raise DatasetError(f"{json_path}: unknown case id(s) {unknown}")
        training, tests = [known[c] for c in sorted(set(case_ids))], []
    dataset_json = v2_dataset_json(msd, len(training), json_path)
    num_channels = len(dataset_json["channel_names"])
    log.info("converting %d training and %d test case(s) of %s into %s", len(training), len(tests), task_dir,
             out_folder)
    jobs = [(case, out_folder, num_channels) for case in training + tests]
    if num_processes <= 1 or len(jobs) <= 1:
        counts = _tally(map(_convert_job, jobs), len(jobs))
    else:
        # spawn: SimpleITK's thread pool is not safe to fork
        with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
            counts = _tally(pool.imap_unordered(_convert_job, jobs), len(jobs))
    write_json(dataset_json, out_folder / DATASET_JSON_FILE)
    log.info("done: %d converted, %d already present; wrote %s", counts["converted"], counts["skipped"],
             out_folder / DATASET_JSON_FILE)
    return out_folder


def _tally(results, total: int) -> dict[str, int]:
    counts = {"converted": 0, "skipped": 0}
    from samunet.utils.progress import progress

    for _, outcome in progress(results, total=total, desc="convert", unit="case", disable=total < 2):
        counts[outcome] += 1
    return counts


def _refuse_id_clash(out_folder: Path) -> None:
    """Another DatasetNNN_* folder with the same id would make ``-d NNN`` ambiguous."""
    root, wanted = out_folder.parent, DATASET_FOLDER_RE.match(out_folder.name).group(1)
    if not root.is_dir():
        return
    for other in root.iterdir():
        match = DATASET_FOLDER_RE.match(other.name)
        if match and match.group(1) == wanted and other.name != out_folder.name:
            raise DatasetError(f"{other}: dataset id {wanted} is already used; choose another with --id")


@user_command("samunet_convert_msd")
def main(argv: list[str] | None = None) -> None:
    parser = CommandParser(
        prog="samunet_convert_msd",
        description="Convert a Medical Segmentation Decathlon task folder into $SAMUNET_RAW/DatasetNNN_Name.",
    )
    parser.add_argument("-i", "--input", required=True, help="MSD task folder, e.g. Task04_Hippocampus")
    parser.add_argument("--id", type=int, default=None, help="dataset id (default: NN of TaskNN_Name)")
    parser.add_argument("-o", "--output_root", default=None, help="raw folder (default: $SAMUNET_RAW)")
    parser.add_argument("-np", "--num_processes", type=int, default=2, help="worker processes (default 2)")
    add_nnunet_spellings(parser, nnunet_flags.CONVERT_MSD)
    args = parser.parse_args(argv)
    out_folder = target_folder(args.input, args.output_root, args.id)
    if not (Path(args.input) / DATASET_JSON_FILE).is_file():  # checked before the log creates out_folder
        raise DatasetError(f"{Path(args.input) / DATASET_JSON_FILE}: MSD dataset.json does not exist")
    setup_logging(out_folder, prefix="convert_msd")
    convert_msd_task(args.input, args.output_root, args.id, num_processes=args.num_processes)


if __name__ == "__main__":
    main()
