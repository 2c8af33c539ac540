"""A raw dataset's ``dataset.json`` (nnU-Net v2 form) and the cases found next to it.

Cases are discovered from the files, as nnU-Net v2 does: ``imagesTr/CASE_XXXX<file_ending>`` (one file
per channel, 4-digit suffix) and ``labelsTr/CASE<file_ending>``. An optional ``training`` list in
dataset.json is ignored. Hidden files (names starting with ".") are ignored everywhere.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from samunet.core.errors import SamunetUserError
from samunet.core.labels import LabelScheme, label_problems
from samunet.core.names import DATASET_JSON_FILE
from samunet.dataset.image_io import SUPPORTED_FILE_ENDINGS, is_2d_ending

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
RGB_CHANNELS = 3  # a colour 2D image holds R, G and B in one _0000 file


class DatasetError(SamunetUserError, ValueError):
    """A raw dataset (its dataset.json or its files) is not usable; the message names the file."""


@dataclass
class TrainingCase:
    case_id: str
    image_files: list[Path]
    label_file: Path


@dataclass
class DatasetInfo:
    folder: Path
    channel_names: dict[str, str]  # "0" -> "MRI", in channel order
    labels: dict[str, int | list[int]]  # "background" -> 0, ...; a list is a region (samunet.core.labels)
    num_training: int
    file_ending: str
    extra: dict = field(default_factory=dict)  # every other key of dataset.json (name, licence, ...)

    @property
    def json_path(self) -> Path:
        return self.folder / DATASET_JSON_FILE

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def label_scheme(self) -> LabelScheme:
        return LabelScheme.from_dataset_json({"labels": self.labels, **self.extra})

    @property
    def regions_class_order(self) -> list[int] | None:
        return self.extra.get("regions_class_order")

    @property
    def label_values(self) -> list[int]:
        """Values a label file may hold (the ignore label included)."""
        return self.label_scheme.values_in_files

    @classmethod
    def load(cls, raw_folder: str | Path) -> "DatasetInfo":
        """Read ``raw_folder/dataset.json`` (``raw_folder`` may also be the dataset.json file itself)."""
        raw_folder = Path(raw_folder)
        if raw_folder.name == DATASET_JSON_FILE and raw_folder.is_file():
            raw_folder = raw_folder.parent
        path = raw_folder / DATASET_JSON_FILE
        if not path.is_file():
            raise DatasetError(f"{path}: dataset.json does not exist")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{path}: is not valid JSON ({e})") from None
        problems = dataset_json_problems(data)
        if problems:
            raise DatasetError(f"{path}: " + "; ".join(problems))
        extra = {k: v for k, v in data.items() if k not in REQUIRED_KEYS}
        channel_names = {str(k): str(v) for k, v in sorted(data["channel_names"].items(), key=lambda kv: int(kv[0]))}
        return cls(raw_folder, channel_names, dict(data["labels"]), data["numTraining"], data["file_ending"], extra)

    def training_cases(self) -> list[TrainingCase]:
        """Cases of imagesTr/labelsTr sorted by case id; a case missing its label or images is an error."""
        images = find_images_by_case(self.folder / "imagesTr", self.file_ending, self.num_channels)
        label_folder = self.folder / "labelsTr"
        if not label_folder.is_dir():
            raise DatasetError(f"{label_folder}: folder does not exist")
        labels = {p.name[: -len(self.file_ending)]: p for p in visible_files(label_folder)
                  if p.name.endswith(self.file_ending)}
        orphans = sorted(set(labels) - set(images))
        if orphans:
            raise DatasetError(f"{labels[orphans[0]]}: label without images (expected "
                               f"{self.folder / 'imagesTr' / (orphans[0] + '_0000' + self.file_ending)})")
        cases = []
        for case_id, files in images.items():
            if case_id not in labels:
                raise DatasetError(f"{label_folder / (case_id + self.file_ending)}: label of case {case_id} is missing")
            cases.append(TrainingCase(case_id, files, labels[case_id]))
        return cases


def dataset_json_problems(data: object) -> list[str]:
    """What is wrong with a parsed dataset.json (missing keys, wrong types); [] when it is usable."""
    if not isinstance(data, dict):
        return ["must be a JSON object"]
    problems = [f"required key '{k}' is missing" for k in REQUIRED_KEYS if k not in data]
    channels = data.get("channel_names")
    if "channel_names" in data and (not isinstance(channels, dict) or not channels
                                    or sorted(channels, key=str) != sorted(str(i) for i in range(len(channels)))):
        problems.append("'channel_names' must map \"0\", \"1\", ... to channel names, e.g. {\"0\": \"CT\"}")
    if "labels" in data:
        problems += label_problems(data["labels"], data.get("regions_class_order"))
    num_training = data.get("numTraining")
    if "numTraining" in data and (not isinstance(num_training, int) or isinstance(num_training, bool)):
        problems.append(f"'numTraining' must be an integer, got {num_training!r}")
    ending = data.get("file_ending")
    if "file_ending" in data and ending not in SUPPORTED_FILE_ENDINGS:
        problems.append(f"'file_ending' {ending!r} is not supported (use one of {', '.join(SUPPORTED_FILE_ENDINGS)})")
    return problems


def escapes_folder(relative_path: str) -> bool:
    """True when a path written in a dataset's JSON would leave the dataset folder (absolute or via "..")."""
    normal = Path(os.path.normpath(relative_path))
    return normal.is_absolute() or ".." in normal.parts


def visible_files(folder: Path) -> list[Path]:
    """Files of ``folder`` whose names do not start with "." (macOS ``._x`` files, unfinished atomic writes)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def channel_file_pattern(file_ending: str) -> re.Pattern:
    return re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(file_ending) + "$")


def find_images_by_case(folder: str | Path, file_ending: str, num_channels: int) -> dict[str, list[Path]]:
    """Group ``CASE_0000<file_ending>, CASE_0001...`` files of ``folder`` by case id (sorted).

    Every case must have channels ``_0000`` to ``_{num_channels-1:04d}``, except that a 2D dataset with
    three channels may keep them in one colour ``_0000`` file (nnU-Net's natural-image convention).
    Files with other endings are ignored; a file with the ending but no channel suffix is an error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder does not exist")
    pattern = channel_file_pattern(file_ending)
    channels_by_case: dict[str, dict[int, Path]] = {}
    for path in visible_files(folder):
        if not path.name.endswith(file_ending):
            continue
        match = pattern.match(path.name)
        if not match:
            raise DatasetError(f"{path}: name lacks the 4-digit channel suffix (expected CASE_0000{file_ending})")
        channels_by_case.setdefault(match["case"], {})[int(match["channel"])] = path
    result = {}
    for case_id in sorted(channels_by_case):
        found = channels_by_case[case_id]
        expected = range(num_channels)
        if is_2d_ending(file_ending) and num_channels == RGB_CHANNELS and set(found) == {0}:
            expected = range(1)  # one colour file holds all three channels
        missing = [c for c in expected if c not in found]
        if missing:
            names = ", ".join(f"{case_id}_{c:04d}{file_ending}" for c in missing)
            raise DatasetError(f"{folder}: case {case_id} is missing {names} ({num_channels} channel(s) expected)")
        extra = sorted(set(found) - set(expected))
        if extra:
            raise DatasetError(f"{found[extra[0]]}: case {case_id} has more channel files than the "
                               f"{num_channels} channel(s) in dataset.json")
        result[case_id] = [found[c] for c in expected]
    return result
