"""Everything needed to map a preprocessed case back to its original geometry, plus slice bookkeeping.

Written next to the arrays as ``CASE.json``; training reads ``class_slices`` to sample foreground slices
without opening the label array, inference reads the rest to restore predictions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from samunet.core.records import VersionedRecord

CASE_PROPERTIES_SCHEMA_VERSION = 1


@dataclass
class CaseProperties(VersionedRecord):
    case_id: str
    original_shape: list[int]  # (z, y, x) as read
    spacing: list[float]  # (z, y, x)
    origin: list[float]  # as SimpleITK gives it (x, y, z)
    direction: list[float]  # 9 numbers, SimpleITK order
    crop_bbox: list[list[int]]  # [start, stop) per (z, y, x) axis; the whole volume when not cropping
    transpose: list[int]  # forward transpose applied after cropping (slicing axis first)
    shape_before_resampling: list[int]  # (S, H, W): cropped and transposed
    spacing_before_resampling: list[float]  # (S, H, W)
    shape_after_resampling: list[int]  # (S, H, W): the shape of the preprocessed arrays
    spacing_after_resampling: list[float]  # (S, H, W)
    plans_sha256: str
    class_slices: dict[str, list[int]] = field(default_factory=dict)  # label value -> S indices containing it
    foreground_slices: list[int] = field(default_factory=list)  # S indices with any label > 0
    largest_foreground_slice: int = -1  # S index with the most foreground pixels; -1: no foreground
    channel_mean: list[float] = field(default_factory=list)  # per channel, the statistics used to normalise
    channel_std: list[float] = field(default_factory=list)
    image_files: list[str] = field(default_factory=list)
    label_file: str | None = None
    schema_version: int = CASE_PROPERTIES_SCHEMA_VERSION

    SCHEMA_VERSION = CASE_PROPERTIES_SCHEMA_VERSION
    RERUN_HINT = "re-run samunet_preprocess --overwrite"

    @property
    def resampled(self) -> bool:
        return list(self.shape_before_resampling) != list(self.shape_after_resampling)

    @property
    def num_slices(self) -> int:
        return int(self.shape_after_resampling[0])

    def geometry(self):
        """The original image geometry (for ``samunet.dataset.image_io.write_segmentation``)."""
        from samunet.dataset.image_io import Geometry

        return Geometry(spacing=tuple(self.spacing), origin=tuple(self.origin), direction=tuple(self.direction),
                        shape=tuple(self.original_shape))

