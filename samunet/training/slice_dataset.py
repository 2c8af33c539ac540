"""Which 2D slices training draws, from the memory-mapped preprocessed cache.

Each case contributes ``CASE_image.npy`` (C, S, H, W) and ``CASE_seg.npy`` (S, H, W), opened with
``np.load(mmap_mode="r")`` so a worker only touches the slices it reads. ``plans.slicing.mode`` decides
the pool of ordinary samples:

- ``all``: every slice of the case;
- ``foreground``: slices with foreground, plus background-only slices at ``background_fraction`` of their
  number (drawn afresh every time, so over training every background slice is seen);
- ``max_slice``: the slice with the largest foreground area (datasets with one annotated slice per volume).

Independently, a share of each batch is forced to contain foreground (``foreground_oversample``): a class
present in the case is picked, then one of its slices, then one of its pixels as the patch centre.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from samunet.core.errors import SamunetUserError
from samunet.core.labels import LabelScheme
from samunet.core.layout import cache_files


class CacheError(SamunetUserError, FileNotFoundError):
    pass


@dataclass
class CaseSlices:
    """Slice bookkeeping for one preprocessed case (class indices, not label values)."""

    case_id: str
    image_path: Path
    seg_path: Path
    num_slices: int
    slices_by_class: dict[int, np.ndarray]  # training target (>= 1, not ignore) -> slice indices containing it
    largest_foreground_slice: int = -1  # -1: no foreground (or not recorded)
    slice_shape: tuple[int, int] = (0, 0)  # (H, W) of each preprocessed slice
    foreground_slices: np.ndarray = field(init=False)
    background_slices: np.ndarray = field(init=False)

    def __post_init__(self):
        present = [s for s in self.slices_by_class.values() if len(s)]
        self.foreground_slices = np.unique(np.concatenate(present)) if present else np.zeros(0, dtype=np.int64)
        self.background_slices = np.setdiff1d(np.arange(self.num_slices), self.foreground_slices)

    @property
    def classes_present(self) -> list[int]:
        return [c for c, s in sorted(self.slices_by_class.items()) if len(s)]


def _from_properties(props_path: Path, scheme: LabelScheme) -> tuple[dict[int, np.ndarray], int] | None:
    """(class index -> slice indices, largest foreground slice) recorded by preprocessing in CASE.json."""
    from samunet.preprocessing.case_properties import CaseProperties

    if not props_path.is_file():
        return None
    props = CaseProperties.load(props_path)
    if not props.class_slices and props.foreground_slices:
        return None  # a cache without per-class lists: count them from the seg
    lut = scheme.target_lookup()
    foreground = set(scheme.foreground_values)  # never the ignore label: its pixels are unannotated
    by_class = {int(lut[v]): np.zeros(0, dtype=np.int64) for v in foreground}
    for value, indices in props.class_slices.items():
        if int(value) in foreground:
            by_class[int(lut[int(value)])] = np.asarray(indices, dtype=np.int64)
    return by_class, int(props.largest_foreground_slice)


def _from_seg(seg: np.ndarray, scheme: LabelScheme) -> tuple[dict[int, np.ndarray], int]:
    lut = scheme.target_lookup()
    flat = np.asarray(seg).reshape(seg.shape[0], -1)
    by_class = {int(lut[v]): np.flatnonzero((flat == v).any(axis=1)).astype(np.int64) for v in scheme.foreground_values}
    area = np.isin(flat, scheme.foreground_values).sum(axis=1)
    return by_class, int(np.argmax(area)) if area.any() else -1


def load_case_slices(cache_folder: Path, case_id: str, scheme: LabelScheme) -> CaseSlices:
    """Bookkeeping for one case; from CASE.json, or counted from the seg when it lacks the slice lists.
    Classes are training targets (``LabelScheme.target_lookup``); the ignore label is never one."""
    image_path, seg_path, properties_path = cache_files(cache_folder, case_id)
    for path in (image_path, seg_path):
        if not path.is_file():
            raise CacheError(f"{path}: missing from the preprocessed cache; "
                             "run samunet_preprocess (or samunet_plan) again")
    seg = np.load(seg_path, mmap_mode="r")
    recorded = _from_properties(properties_path, scheme)
    by_class, largest = recorded if recorded is not None else _from_seg(seg, scheme)
    return CaseSlices(case_id, image_path, seg_path, int(seg.shape[0]), by_class, largest,
                      (int(seg.shape[1]), int(seg.shape[2])))


@dataclass
class SliceChoice:
    case: int  # index into the case list
    slice: int
    foreground_class: int | None  # set when the sample is forced to contain this class


class SliceSampler:
    """Draws (case, slice[, class]) for training samples with a caller-provided numpy Generator."""

    def __init__(self, cases: list[CaseSlices], mode: str, background_fraction: float):
        if not cases:
            raise ValueError("no training cases to sample from")
        if mode not in ("all", "foreground", "max_slice"):
            raise ValueError(f"unknown slicing mode {mode!r} (expected all, foreground or max_slice)")
        self.cases, self.mode = cases, mode
        self.background_fraction = float(background_fraction)
        self.cases_with_foreground = [i for i, c in enumerate(cases) if len(c.foreground_slices)]

    def _ordinary_slice(self, case: CaseSlices, rng: np.random.Generator) -> int:
        if self.mode == "max_slice" and case.largest_foreground_slice >= 0:
            return case.largest_foreground_slice
        if self.mode == "all" or not len(case.foreground_slices):
            return int(rng.integers(case.num_slices))
        n_fg, n_bg = len(case.foreground_slices), len(case.background_slices)
        p_background = self.background_fraction * n_bg / (n_fg + self.background_fraction * n_bg)
        pool = case.background_slices if rng.random() < p_background else case.foreground_slices
        return int(pool[rng.integers(len(pool))])

    def draw(self, rng: np.random.Generator, force_foreground: bool) -> SliceChoice:
        if force_foreground and self.cases_with_foreground:
            index = self.cases_with_foreground[rng.integers(len(self.cases_with_foreground))]
            case = self.cases[index]
            cls = case.classes_present[rng.integers(len(case.classes_present))]
            slices = case.slices_by_class[cls]
            return SliceChoice(index, int(slices[rng.integers(len(slices))]), cls)
        index = int(rng.integers(len(self.cases)))
        return SliceChoice(index, self._ordinary_slice(self.cases[index], rng), None)
