"""How a dataset's labels map to model outputs, training targets and evaluated structures (nnU-Net v2 rules).

One place, used by planning, preprocessing, training, inference and evaluation:

- Plain labels ``{"background": 0, "liver": 1, "tumour": 2}``: one output channel per label value (softmax
  over all of them, or one sigmoid per foreground label), arg-max gives the label map, each foreground
  value is evaluated.
- Regions (BraTS style) ``{"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}`` with
  ``"regions_class_order": [1, 2, 3]``: one sigmoid output per region (the entries other than background
  and ignore, in dataset.json order; a region is the union of its values). A voxel belongs to every region
  whose sigmoid exceeds 0.5; the label map is written region by region in that order, region ``i`` writing
  value ``regions_class_order[i]``, later regions overwriting earlier ones. Each region is evaluated, under
  nnU-Net's summary.json key: ``str(value)`` for a scalar entry, ``str(tuple)`` such as ``"(1, 2, 3)"``.
- The ignore label: an entry named ``ignore`` with the highest value (``max(other values) + 1``) marks
  unannotated voxels. They contribute to no loss, no metric and no foreground sampling.

Label values other than ignore must be consecutive from 0 (checked by ``samunet.dataset.verify``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
# numpy is imported where arrays are handled: the plans (and every command's --help) import this module

IGNORE_NAME = "ignore"
BACKGROUND_NAME = "background"
REGION_THRESHOLD = 0.5  # a region's sigmoid above this: the voxel belongs to the region
REGION_LOSS = "dice_bce"  # the loss planned for region outputs (nnU-Net's DC_and_BCE_loss)

Region = int | tuple[int, ...]  # a scalar label value or the tuple of values making up a region


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def label_problems(labels, regions_class_order=None) -> list[str]:
    """What is wrong with a dataset.json ``labels`` mapping (and ``regions_class_order``); [] when usable."""
    if not isinstance(labels, dict) or not labels:
        return ["'labels' must map label names to integers, e.g. {\"background\": 0, \"tumour\": 1}"]
    problems = []
    for name, value in labels.items():
        if isinstance(value, list):
            if not value or not all(_is_int(v) and v >= 0 for v in value):
                problems.append(f"region '{name}' is {value}; a region must be a non-empty list of label values >= 0")
        elif not _is_int(value) or value < 0:
            problems.append(f"label '{name}' has value {value!r}; label values must be integers >= 0 "
                            f"(or lists of them for regions)")
    if problems:
        return problems
    if labels.get(BACKGROUND_NAME) != 0:
        problems.append("'labels' must contain \"background\": 0")
    if IGNORE_NAME in labels:
        ignore = labels[IGNORE_NAME]
        others = {v for k, r in labels.items() if k != IGNORE_NAME for v in (r if isinstance(r, list) else [r])}
        if not _is_int(ignore):
            problems.append(f"label 'ignore' is {ignore!r}; the ignore label must be one integer, not a region")
        elif others and ignore != max(others) + 1:
            problems.append(f"label 'ignore' is {ignore}; it must be the highest label value ({max(others) + 1})")
    scheme_has_regions = any(isinstance(v, list) and len(v) > 1 for v in labels.values())
    if scheme_has_regions:
        num_regions = len(_foreground_entries(labels))
        if regions_class_order is None:
            problems.append("region-based labels need 'regions_class_order' (the label value each region writes, "
                            "e.g. [1, 2, 3])")
        elif not isinstance(regions_class_order, list) or not all(_is_int(v) for v in regions_class_order):
            problems.append(f"'regions_class_order' must be a list of integers, got {regions_class_order!r}")
        elif len(regions_class_order) != num_regions:
            problems.append(f"'regions_class_order' has {len(regions_class_order)} entries but 'labels' defines "
                            f"{num_regions} region(s) besides background and ignore")
    return problems


def _foreground_entries(labels: dict) -> list[tuple[str, Region]]:
    """(name, region) of the entries that are neither ignore nor background-only, in dataset.json order."""
    entries = []
    for name, value in labels.items():
        if name == IGNORE_NAME:
            continue
        region = tuple(int(v) for v in value) if isinstance(value, list) else int(value)
        values = region if isinstance(region, tuple) else (region,)
        if set(values) == {0}:
            continue
        entries.append((name, region))
    return entries


def region_key(region: Region) -> str:
    """nnU-Net's summary.json key of a label or region: ``"2"`` or ``"(2, 3)"``."""
    return str(region)


@dataclass(frozen=True)
class LabelScheme:
    labels: dict  # dataset.json "labels": name -> value or list of values
    regions_class_order: tuple[int, ...] | None = None

    @classmethod
    def from_dataset_json(cls, data: dict) -> "LabelScheme":
        order = data.get("regions_class_order")
        return cls(dict(data["labels"]), tuple(order) if order is not None else None)

    @classmethod
    def from_plans(cls, plans) -> "LabelScheme":
        order = getattr(plans, "regions_class_order", None)
        return cls(dict(plans.labels), tuple(order) if order is not None else None)

    # --- what the labels are ----------------------------------------------------------------------------
    @property
    def has_regions(self) -> bool:
        return any(isinstance(v, (list, tuple)) and len(v) > 1 for v in self.labels.values())

    @property
    def ignore_label(self) -> int | None:
        value = self.labels.get(IGNORE_NAME)
        return None if value is None else int(value)

    @property
    def label_values(self) -> list[int]:
        """Every value a label map may hold except the ignore label, sorted (0 included)."""
        values = {0}
        for name, value in self.labels.items():
            if name != IGNORE_NAME:
                values.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
        return sorted(values)

    @property
    def foreground_values(self) -> list[int]:
        return [v for v in self.label_values if v != 0]

    @property
    def values_in_files(self) -> list[int]:
        """Values allowed in label files: the label values plus the ignore label."""
        return self.label_values + ([self.ignore_label] if self.ignore_label is not None else [])

    @property
    def max_value(self) -> int:
        return max(self.values_in_files)

    @property
    def regions(self) -> list[Region]:
        """The foreground regions in output-channel order (regions datasets only)."""
        return [r for _, r in _foreground_entries(self.labels)] if self.has_regions else []

    # --- model outputs ----------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """What an adapter is built with (background counted): regions -> one sigmoid per region."""
        return len(self.regions) + 1 if self.has_regions else len(self.label_values)

    @property
    def num_outputs(self) -> int:
        """Channels of saved probabilities: one per region, or one per label value (background included)."""
        return len(self.regions) if self.has_regions else len(self.label_values)

    def channel_names(self) -> list[str]:
        """Names of the probability channels in order."""
        if self.has_regions:
            return [n for n, _ in _foreground_entries(self.labels)]
        by_value = {int(v): k for k, v in self.labels.items() if k != IGNORE_NAME and not isinstance(v, (list, tuple))}
        return [by_value.get(v, f"label_{v}") for v in self.label_values]

    def segmentation(self, probabilities: np.ndarray) -> np.ndarray:
        """(K, ...) probabilities -> label map: arg-max over label values, or regions thresholded at 0.5 and
        written in ``regions_class_order`` (later regions overwrite earlier ones, as nnU-Net does)."""
        import numpy as np

        if probabilities.shape[0] != self.num_outputs:
            raise ValueError(f"{probabilities.shape[0]} probability channels, the labels define {self.num_outputs}")
        dtype = np.uint8 if self.max_value <= 255 else np.uint16
        if self.has_regions:
            seg = np.zeros(probabilities.shape[1:], dtype=dtype)
            for channel, value in enumerate(self.regions_class_order):
                seg[probabilities[channel] > REGION_THRESHOLD] = value
            return seg
        return np.asarray(self.label_values, dtype=dtype)[np.argmax(probabilities, axis=0)]

    # --- training targets -------------------------------------------------------------------------------
    def target_lookup(self) -> np.ndarray:
        """Array mapping a label value to its training target: the class index (position among the label
        values) for plain labels, the value itself for regions; the ignore label maps to ``ignore_target``."""
        import numpy as np

        lut = np.zeros(self.max_value + 1, dtype=np.int64)
        if self.has_regions:
            lut[:] = np.arange(self.max_value + 1)
        else:
            lut[self.label_values] = np.arange(len(self.label_values))
        if self.ignore_label is not None:
            lut[self.ignore_label] = self.ignore_target
        return lut

    @property
    def ignore_target(self) -> int | None:
        """The target value of ignored pixels after ``target_lookup`` (None without an ignore label)."""
        if self.ignore_label is None:
            return None
        return self.ignore_label if self.has_regions else len(self.label_values)

    def target_regions(self) -> list[tuple[int, ...]]:
        """Per output channel of a sigmoid model, the target values it is 1 on (after ``target_lookup``)."""
        if self.has_regions:
            return [r if isinstance(r, tuple) else (r,) for r in self.regions]
        return [(i,) for i in range(1, len(self.label_values))]

    # --- evaluation -------------------------------------------------------------------------------------
    def evaluated(self) -> list[Region]:
        """What is scored: every region, or every foreground label value."""
        return self.regions if self.has_regions else self.foreground_values

    def name_of(self, key) -> str:
        """Label or region name of a summary key (``1``, ``"1"``, ``"(1, 2, 3)"``)."""
        for name, region in _foreground_entries(self.labels):
            if region_key(region) == str(key):
                return name
        return str(key)


def region_mask(seg: np.ndarray, region: Region) -> np.ndarray:
    """Boolean mask of a label value or of the union of a region's values."""
    import numpy as np

    if isinstance(region, tuple):
        return np.isin(seg, region)
    return seg == region
