"""Reading and writing images and segmentations, keeping their geometry.

Arrays are in SimpleITK order ``(z, y, x)``; ``Geometry.spacing`` is in the same order while
``origin`` and ``direction`` are kept exactly as SimpleITK gives them (x, y, z order).

Volumes (.nii, .nii.gz, .nrrd, .mha) keep spacing, origin and direction. 2D images (.png, .jpg,
.jpeg, .tif, .tiff) become single-slice volumes ``(1, y, x)`` with spacing ``(999, 1, 1)`` as in
nnU-Net. A colour 2D image is several channels: ``read_image`` gives ``(C, 1, y, x)`` for it, and
``read_case_images`` stacks the channels of all files, so one RGB ``CASE_0000.png`` with
``channel_names {"0": "R", "1": "G", "2": "B"}`` reads as 3 channels (nnU-Net's natural-image
convention). An alpha channel is dropped (RGBA -> RGB, grey+alpha -> grey).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from PIL import Image

from samunet.core.errors import SamunetUserError
from samunet.core.names import IMAGE_2D_FILE_ENDINGS, LOSSY_FILE_ENDINGS, SUPPORTED_FILE_ENDINGS
from samunet.utils.atomic import atomic_path

SPACING_2D = (999.0, 1.0, 1.0)  # nnU-Net's marker for "no spacing across slices"
GEOMETRY_RTOL = 1e-4  # relative tolerance when comparing geometries (plus the same absolute tolerance)
_LOSSY_ENDINGS = LOSSY_FILE_ENDINGS


class ImageReadError(SamunetUserError, ValueError):
    """A file could not be read as an image; the message names the file."""


class GeometryMismatchError(SamunetUserError, ValueError):
    """Files that must share a voxel grid do not; the message names the files."""


def file_ending_of(path: str | Path) -> str:
    """The supported ending of ``path`` (".nii.gz" rather than ".gz"); "" when unsupported."""
    name = Path(path).name.lower()
    return next((e for e in SUPPORTED_FILE_ENDINGS if name.endswith(e)), "")


def is_2d_ending(file_ending: str) -> bool:
    return file_ending.lower() in IMAGE_2D_FILE_ENDINGS


@dataclass(frozen=True)
class Geometry:
    spacing: tuple[float, ...]  # (z, y, x), like the arrays
    origin: tuple[float, ...]  # SimpleITK order (x, y, z)
    direction: tuple[float, ...]  # SimpleITK order, 9 numbers (row-major 3x3)
    shape: tuple[int, ...]  # (z, y, x)

    def __post_init__(self):
        # normalise to tuples of Python numbers so equality and JSON are predictable
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "direction", tuple(float(v) for v in self.direction))
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))

    def to_json(self) -> dict:
        return {k: list(getattr(self, k)) for k in ("spacing", "origin", "direction", "shape")}

    @classmethod
    def from_json(cls, data: dict) -> "Geometry":
        return cls(data["spacing"], data["origin"], data["direction"], data["shape"])

    def differences(self, other: "Geometry", rtol: float = GEOMETRY_RTOL) -> list[str]:
        """What differs from ``other`` ("shape (35, 51, 35) vs (35, 51, 36)", ...); [] when the grids agree."""
        out = []
        if self.shape != other.shape:
            out.append(f"shape {self.shape} vs {other.shape}")
        for name in ("spacing", "origin", "direction"):
            a, b = getattr(self, name), getattr(other, name)
            if len(a) != len(b) or not np.allclose(a, b, rtol=rtol, atol=rtol):
                out.append(f"{name} {_fmt(a)} vs {_fmt(b)}")
        return out


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise ImageReadError(f"{path}: file does not exist")
    if not file_ending_of(path):
        raise ImageReadError(f"{path}: unsupported file ending (supported: {', '.join(SUPPORTED_FILE_ENDINGS)})")


def _read_error(path: Path, error: RuntimeError) -> ImageReadError:
    # SimpleITK's message starts with a C++ source location; keep only the reason
    lines = [ln.split("ERROR:", 1)[-1].strip() for ln in str(error).splitlines() if ln.strip()]
    reason = lines[-1] if lines else "unknown reason"
    return ImageReadError(f"{path}: cannot be read as an image ({reason[:200]})")


def _read_sitk(path: Path) -> sitk.Image:
    _check_file(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise _read_error(path, e) from None


def check_readable(path: str | Path) -> None:
    """Read only the header: an unreadable file is reported before any slow work (model loading)."""
    path = Path(path)
    _check_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise _read_error(path, e) from None


def _geometry_3d(image: sitk.Image, shape_zyx: tuple[int, ...]) -> Geometry:
    """3D geometry of a 3D or 4D image (a 4D image's fourth axis is the channel axis)."""
    dim = image.GetDimension()
    spacing, origin = image.GetSpacing()[:3], image.GetOrigin()[:3]
    direction = np.array(image.GetDirection()).reshape(dim, dim)[:3, :3].ravel()
    return Geometry(spacing[::-1], origin, direction, shape_zyx)


def _geometry_2d(shape_yx: tuple[int, ...]) -> Geometry:
    return Geometry(SPACING_2D, (0.0, 0.0, 0.0), np.eye(3).ravel(), (1, *shape_yx))


def read_image_channels(path: str | Path, allow_multichannel_volume: bool = False) -> tuple[np.ndarray, Geometry]:
    """``(C, z, y, x)`` array (dtype as stored) and the 3D geometry shared by its channels.

    Multi-channel volumes (4D files, vector volumes) are refused unless ``allow_multichannel_volume``:
    in a raw dataset every channel of a volume is its own ``CASE_000k`` file.
    """
    path = Path(path)
    image = _read_sitk(path)
    dim, components = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    array = sitk.GetArrayFromImage(image)
    if is_2d_ending(file_ending_of(path)):
        if dim != 2:
            raise ImageReadError(
                f"{path}: is a {dim}D image; samunet reads {file_ending_of(path)} files as 2D images "
                f"(store volumes as .nii.gz, .nrrd or .mha)"
            )
        channels = array[None] if components == 1 else np.moveaxis(array, -1, 0)
        if components in (2, 4):  # grey+alpha or RGBA: the alpha channel carries no image content
            channels = channels[:-1]
        channels = channels[:, None]  # (C, 1, y, x)
        return channels, _geometry_2d(channels.shape[2:])
    if dim == 3 and components == 1:
        return array[None], _geometry_3d(image, array.shape)
    multi = (dim == 4 and components == 1) or (dim == 3 and components > 1)
    if not multi:
        raise ImageReadError(f"{path}: is a {dim}D image with {components} component(s); expected a 3D volume")
    channels = array if dim == 4 else np.moveaxis(array, -1, 0)
    if not allow_multichannel_volume:
        raise ImageReadError(
            f"{path}: holds {channels.shape[0]} channels in one {dim}D file; a raw dataset stores each channel "
            f"of a volume as its own CASE_000k file (samunet_convert_msd splits MSD files this way)"
        )
    return channels, _geometry_3d(image, channels.shape[1:])


def read_image(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """``(z, y, x)`` for a one-channel image, ``(C, 1, y, x)`` for a colour 2D image; dtype as stored."""
    channels, geometry = read_image_channels(path)
    return (channels[0] if channels.shape[0] == 1 else channels), geometry


def read_case_images(paths: Sequence[str | Path]) -> tuple[np.ndarray, Geometry]:
    """All channel files of one case stacked to float32 ``(C, z, y, x)``; they must share one grid."""
    if not paths:
        raise ValueError("read_case_images: no files given")
    stacks, first_geometry = [], None
    for path in paths:
        channels, geometry = read_image_channels(path)
        if first_geometry is None:
            first_geometry = geometry
        else:
            diffs = first_geometry.differences(geometry)
            if diffs:
                raise GeometryMismatchError(
                    f"{path} does not share the voxel grid of {paths[0]}: {'; '.join(diffs)}"
                )
        stacks.append(channels.astype(np.float32, copy=False))
    return np.concatenate(stacks, axis=0), first_geometry


def read_label(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Integer ``(z, y, x)`` label map (uint8 when values fit, else int16/int32); non-integers are an error."""
    path = Path(path)
    indices = _palette_indices(path)
    if indices is not None:
        return indices, _geometry_2d(indices.shape[1:])
    channels, geometry = read_image_channels(path)
    if channels.shape[0] != 1:
        raise ImageReadError(f"{path}: a label map must have one channel, found {channels.shape[0]} "
                             f"(save label maps as single-channel images whose values are the label numbers)")
    label = channels[0]
    if not np.issubdtype(label.dtype, np.integer):
        if not np.all(np.isfinite(label)) or not np.array_equal(label, np.round(label)):
            bad = label[~np.isfinite(label) | (label != np.round(label))]
            raise ImageReadError(f"{path}: label values must be integers, found {bad.flat[0]!r} ({label.dtype})")
    return label.astype(_label_dtype(label), copy=False), geometry


def _palette_indices(path: Path) -> np.ndarray | None:
    """``(1, y, x)`` palette indices of a palette PNG (as VOC-style label maps are stored), else None.

    ITK expands a palette to RGB; for a label map the indices are the label values.
    """
    if file_ending_of(path) != ".png" or not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            return np.asarray(image, dtype=np.uint8)[None] if image.mode == "P" else None
    except (OSError, ValueError):
        return None  # let SimpleITK report the unreadable file


def _label_dtype(label: np.ndarray) -> np.dtype:
    low, high = (int(label.min()), int(label.max())) if label.size else (0, 0)
    if low >= 0 and high <= 255:
        return np.dtype(np.uint8)
    if -32768 <= low and high <= 32767:
        return np.dtype(np.int16)
    return np.dtype(np.int32)


def _to_sitk(array: np.ndarray, geometry: Geometry, path: Path, is_vector: bool) -> sitk.Image:
    if is_2d_ending(file_ending_of(path)):
        return sitk.GetImageFromArray(array[0], isVector=is_vector)  # 2D files carry no geometry
    image = sitk.GetImageFromArray(array, isVector=is_vector)
    image.SetSpacing(geometry.spacing[::-1])
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def _check_target(path: Path, shape: tuple[int, ...], geometry: Geometry) -> None:
    if not file_ending_of(path):
        raise ValueError(f"{path}: unsupported file ending (supported: {', '.join(SUPPORTED_FILE_ENDINGS)})")
    if tuple(shape) != geometry.shape:
        raise ValueError(f"{path}: array shape {tuple(shape)} does not match the geometry's shape {geometry.shape}")
    if is_2d_ending(file_ending_of(path)) and shape[0] != 1:
        raise ValueError(f"{path}: a 2D file holds one slice, the array has {shape[0]}")


def write_segmentation(array: np.ndarray, geometry: Geometry, path: str | Path) -> None:
    """Write a ``(z, y, x)`` label map as uint8 (uint16 when labels exceed 255) on exactly ``geometry``; atomic."""
    path, array = Path(path), np.asarray(array)
    if file_ending_of(path) in _LOSSY_ENDINGS:
        raise ValueError(f"{path}: JPEG is lossy and would change label values; write segmentations as .png")
    _check_target(path, array.shape, geometry)
    if array.size and (array.min() < 0 or array.max() > 65535):
        raise ValueError(f"{path}: label values must lie in [0, 65535], found [{array.min()}, {array.max()}]")
    dtype = np.uint8 if (not array.size or array.max() <= 255) else np.uint16
    _write(_to_sitk(array.astype(dtype, copy=False), geometry, path, is_vector=False), path)


def write_image(array: np.ndarray, geometry: Geometry, path: str | Path) -> None:
    """Write a ``(z, y, x)`` volume (or ``(C, 1, y, x)`` colour 2D image), keeping its dtype; atomic.

    PNG and JPEG hold only 8/16-bit integers: write float data to .nii.gz, .nrrd, .mha or .tif.
    """
    path, array = Path(path), np.asarray(array)
    is_vector = array.ndim == 4
    if is_vector:
        if not is_2d_ending(file_ending_of(path)):
            raise ValueError(f"{path}: write one volume per channel file (array has shape {array.shape})")
        array = np.moveaxis(array, 0, -1)  # (1, y, x, C), SimpleITK's vector layout
    _check_target(path, array.shape[:3], geometry)
    ending = file_ending_of(path)
    if ending in (".png", ".jpg", ".jpeg") and array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: {ending} holds uint8/uint16 data, got {array.dtype}; cast first or use .tif")
    _write(_to_sitk(array, geometry, path, is_vector=is_vector), path)


def _write(image: sitk.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
