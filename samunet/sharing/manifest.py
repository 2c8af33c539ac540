"""The manifest inside a model zip: what the model is and the sha256 of every file, so that installing can
refuse a damaged or altered zip before anything is written."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from samunet.core.errors import SamunetUserError
from samunet.core.paths import DATASET_FOLDER_RE
from samunet.core.records import SchemaError, VersionedRecord

MANIFEST_VERSION = 1


class ModelZipError(SamunetUserError, ValueError):
    """A model zip that cannot be exported or installed; the message names the file and the problem."""


@dataclass
class FileEntry:
    sha256: str
    size: int


@dataclass
class ModelManifest(VersionedRecord):
    dataset_name: str
    plans_name: str
    adapters: list[str]
    folds: list[str]  # fold folder suffixes: "0", "1", ..., "all"
    checkpoints: list[str]  # "final" and/or "best"
    backbone: str
    base_checkpoint_sha256: str | None  # None: the backbone was randomly initialised (test backbone "tiny")
    base_checkpoint_file: str | None  # file name prediction looks for in $SAMUNET_CHECKPOINTS
    samunet_version: str
    files: dict[str, FileEntry] = field(default_factory=dict)  # payload path (relative to the results root)
    schema_version: int = MANIFEST_VERSION

    SCHEMA_VERSION = MANIFEST_VERSION
    RERUN_HINT = "export the model again with samunet_export_model"

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> "ModelManifest":
        try:
            parsed = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelZipError(f"{source}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(parsed, source)
        except SchemaError as e:
            raise ModelZipError(str(e)) from None


def payload_path_problem(name: str) -> str | None:
    """Why ``name`` may not be unpacked into the results root (None: it may). Refuses zip-slip paths: absolute,
    ``..``, backslashes, drive letters, and anything outside a ``DatasetXXX_Name`` folder."""
    if not name or "\\" in name or "\x00" in name or name.startswith("/") or ":" in name:
        return "absolute or non-portable path"
    parts = PurePosixPath(name).parts
    if any(p in ("..", ".", "") for p in name.split("/")):
        return "'..' or empty path component"
    if len(parts) < 2 or not DATASET_FOLDER_RE.match(parts[0]):
        return "not inside a DatasetXXX_Name folder"
    return None


def sha256_of_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
