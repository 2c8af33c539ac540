"""One case from raw files to the cached 2D-slice representation; the same code serves training and inference.

read channels (C, z, y, x) -> crop to nonzero (when planned) -> transpose (slicing axis first)
-> normalise per channel -> resample in-plane -> image (C, S, H, W) float32, labels (S, H, W).
"""
from __future__ import annotations

import numpy as np

from samunet.preprocessing.bounding_box import bbox_of
from samunet.core.plans import Plans
from samunet.preprocessing.case_properties import CaseProperties
from samunet.preprocessing.normalization import normalize_image
from samunet.preprocessing.resampling import resample_slices, resampled_shape


def label_dtype(plans: Plans) -> np.dtype:
    """uint8 when every label value fits, else int16 (architecture.md)."""
    return np.dtype(np.uint8) if plans.label_scheme.max_value <= 255 else np.dtype(np.int16)


def slices_containing(seg: np.ndarray, ignore_label: int | None = None) -> tuple[dict[str, list[int]], list[int], int]:
    """Per label value > 0 the S indices whose slice contains it, the S indices with any foreground, and the
    index of the slice with the most foreground pixels (-1 when there is none). The ignore label is not
    foreground: training never samples a slice as foreground for its unannotated pixels."""
    flat = seg.reshape(seg.shape[0], -1)
    per_class = {}
    for value in np.unique(seg):
        if value > 0 and value != ignore_label:
            per_class[str(int(value))] = np.flatnonzero((flat == value).any(axis=1)).tolist()
    foreground = flat > 0 if ignore_label is None else (flat > 0) & (flat != ignore_label)
    area = foreground.sum(axis=1)
    largest = int(np.argmax(area)) if area.size and area.max() > 0 else -1
    return per_class, np.flatnonzero(area).tolist(), largest


def preprocess_arrays(image: np.ndarray, geometry, plans: Plans, seg: np.ndarray | None = None,
                      case_id: str = "case", image_files=(), label_file: str | None = None,
                      ) -> tuple[np.ndarray, np.ndarray | None, CaseProperties]:
    """Preprocess an already-read case: ``image`` (C, z, y, x), ``geometry`` from samunet.dataset.image_io,
    ``seg`` (z, y, x) or None."""
    if image.ndim != 4:
        raise ValueError(f"{case_id}: expected image (C, z, y, x), got shape {image.shape}")
    shape = list(image.shape[1:])
    if seg is not None and list(seg.shape) != shape:
        raise ValueError(f"{case_id}: label shape {tuple(seg.shape)} differs from image shape {tuple(shape)}")
    nonzero = np.any(image != 0, axis=0)
    box = (bbox_of(nonzero) if plans.crop.crop_to_nonzero else None) or [[0, s] for s in shape]
    crop = tuple(slice(a, b) for a, b in box)
    image = image[(slice(None), *crop)]
    nonzero = nonzero[crop]
    transpose = list(plans.slicing.transpose)
    image = np.transpose(image, [0] + [a + 1 for a in transpose])
    nonzero = np.transpose(nonzero, transpose)
    image, means, stds = normalize_image(image, plans.normalization, nonzero)

    spacing_t = [float(geometry.spacing[a]) for a in transpose]
    target_hw = [float(s) for s in plans.resampling.target_spacing[1:]]
    shape_t = list(image.shape[1:])
    new_hw = resampled_shape(shape_t[1:], spacing_t[1:], target_hw)
    image = np.ascontiguousarray(resample_slices(image, new_hw, plans.resampling.image_order), dtype=np.float32)
    spacing_after = [spacing_t[0]] + [spacing_t[i + 1] if new_hw[i] == shape_t[i + 1] else target_hw[i]
                                      for i in range(2)]

    out_seg, class_slices, fg_slices, largest = None, {}, [], -1
    if seg is not None:
        seg_t = np.transpose(seg[crop], transpose)
        out_seg = resample_slices(seg_t, new_hw, plans.resampling.label_order)
        out_seg = np.ascontiguousarray(out_seg, dtype=label_dtype(plans))
        class_slices, fg_slices, largest = slices_containing(out_seg, plans.label_scheme.ignore_label)

    props = CaseProperties(
        case_id=case_id,
        original_shape=[int(s) for s in shape],
        spacing=[float(s) for s in geometry.spacing],
        origin=[float(o) for o in geometry.origin],
        direction=[float(d) for d in geometry.direction],
        crop_bbox=[[int(a), int(b)] for a, b in box],
        transpose=transpose,
        shape_before_resampling=shape_t,
        spacing_before_resampling=spacing_t,
        shape_after_resampling=[shape_t[0], *new_hw],
        spacing_after_resampling=spacing_after,
        plans_sha256=plans.sha256(),
        class_slices=class_slices,
        foreground_slices=fg_slices,
        largest_foreground_slice=largest,
        channel_mean=means,
        channel_std=stds,
        image_files=[str(f) for f in image_files],
        label_file=None if label_file is None else str(label_file),
    )
    return image, out_seg, props


def preprocess_case(image_files, plans: Plans, label_file=None, case_id: str | None = None,
                    ) -> tuple[np.ndarray, np.ndarray | None, CaseProperties]:
    """Read and preprocess one case. Returns (image (C, S, H, W) float32, seg (S, H, W) or None, properties)."""
    from samunet.dataset.image_io import read_case_images, read_label

    image_files = [str(f) for f in image_files]
    image, geometry = read_case_images(image_files)
    seg = None
    if label_file is not None:
        seg, _ = read_label(str(label_file))
    if case_id is None:
        case_id = _case_id_from_file(image_files[0], plans.file_ending)
    return preprocess_arrays(image, geometry, plans, seg, case_id, image_files, label_file)


def _case_id_from_file(path: str, file_ending: str) -> str:
    """``.../CASE_0000.nii.gz`` -> ``CASE`` (nnU-Net's channel suffix dropped)."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    if name.endswith(file_ending):
        name = name[: -len(file_ending)]
    if len(name) > 5 and name[-5] == "_" and name[-4:].isdigit():
        name = name[:-5]
    return name
