"""From a dataset fingerprint to the plans: every decision, each with a one-line reason.

Geometry and intensity decisions are made here; model, adapter and training decisions in
``samunet.planning.model_planner``. documentation/planning.md states every rule.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from samunet.planning.fingerprint import DatasetFingerprint, fingerprint_sha256
from samunet.planning.hardware import Hardware, detect_hardware
from samunet.planning.budget import SliceCounts, choose_input_size
from samunet.planning.budget_fit import BudgetFitRequest, FoldSlices, InputSections, fit_to_budget
from samunet.planning.cost_model import MeasuredCost
from samunet.planning.model_planner import (augmentation_plan, choose_adapter, choose_backbone, plan_fusion_unet,
                                            uses_global_attention)
from samunet.core.adapter_defaults import default_adapter_configs
from samunet.core.labels import REGION_LOSS, LabelScheme
from samunet.core.names import DEFAULT_PLANS_NAME
from samunet.preprocessing.packing import packed_channel_count
from samunet.core.plans import (ChannelNormalization, ChannelPackingPlan, CropPlan, ModelPlan, Plans, ResamplingPlan,
                                SlicingPlan)

ISOTROPY_RATIO = 1.25  # largest / smallest spacing at or below this: isotropic, choose the axis by content
AXIS_TIE_RATIO = 1.10  # cross-sections within 10% of the best count as equal: keep the lower axis (z first)
NEIGHBOUR_SPACING_RATIO = 3.0  # 2.5D neighbours only when slices are at most this much thicker than pixels
NONZERO_MASK_REDUCTION = 0.25  # nnU-Net: z-score inside the nonzero mask when cropping removes > 25 %
ALL_SLICES_MAX = 20_000  # training slices up to which every slice is used
FOREGROUND_SLICES_MAX = 500_000  # up to which foreground slices (plus 10 % of background) are used
BACKGROUND_FRACTION = 0.1
PATCH_MULTIPLE = 8
MAX_PATCH_SIDE = 1024
RGB_NAMES = {"r", "g", "b", "red", "green", "blue", "rgb", "rgb_to_0_1"}
NO_NORM_NAMES = {"nonorm", "none", "no_norm"}


def _round_up(value: float, multiple: int) -> int:
    return int(multiple * math.ceil(value / multiple))


def is_2d_dataset(fp: DatasetFingerprint) -> bool:
    return all(c.shape[0] == 1 for c in fp.cases)


def foreground_extents_mm(fp: DatasetFingerprint) -> np.ndarray:
    """(cases with foreground, 3) bounding-box size of the foreground in millimetres."""
    rows = [[(b - a) * s for (a, b), s in zip(c.foreground_bbox, c.spacing)] for c in fp.cases if c.foreground_bbox]
    return np.array(rows, dtype=float).reshape(-1, 3)


def choose_slicing_axis(fp: DatasetFingerprint) -> tuple[int, str]:
    spacing = np.array(fp.median_spacing, dtype=float)
    if is_2d_dataset(fp):
        return 0, "2D images: each case is one slice"
    ratio = spacing.max() / spacing.min()
    if ratio > ISOTROPY_RATIO:
        axis = int(np.argmax(spacing))
        return axis, (f"anisotropic spacing {tuple(round(float(s), 3) for s in spacing)} (ratio {ratio:.2f}): "
                      f"slice along the coarsest axis {'zyx'[axis]} so no slice is interpolated across thick voxels")
    extents = foreground_extents_mm(fp)
    if len(extents):
        per_axis = [float(np.median(np.prod(np.delete(extents, a, axis=1), axis=1))) for a in range(3)]
        what = "median foreground cross-section"
    else:  # no labels: the plane with the largest area
        shapes = np.array([c.shape_after_crop for c in fp.cases], dtype=float) * spacing
        per_axis = [float(np.median(np.prod(np.delete(shapes, a, axis=1), axis=1))) for a in range(3)]
        what = "median slice area"
    best = max(per_axis)
    axis = next(a for a in range(3) if per_axis[a] * AXIS_TIE_RATIO >= best)
    areas = ", ".join(f"{'zyx'[a]}: {v:.0f} mm2" for a, v in enumerate(per_axis))
    return axis, (f"isotropic spacing (ratio {ratio:.2f}): slice along {'zyx'[axis]}, whose planes show the largest "
                  f"{what} ({areas}; within 10% the lower axis wins)")


def in_plane_shapes(fp: DatasetFingerprint, transpose: list[int], target_hw: list[float]) -> np.ndarray:
    """(cases, 2) in-plane shapes after crop, transpose and resampling to ``target_hw``."""
    rows = []
    for c in fp.cases:
        rows.append([c.shape_after_crop[a] * c.spacing[a] / t for a, t in zip(transpose[1:], target_hw)])
    return np.array(rows, dtype=float)


def foreground_in_plane_extents(fp: DatasetFingerprint, transpose: list[int], target_hw: list[float]) -> np.ndarray:
    rows = [[(c.foreground_bbox[a][1] - c.foreground_bbox[a][0]) * c.spacing[a] / t
             for a, t in zip(transpose[1:], target_hw)]
            for c in fp.cases if c.foreground_bbox]
    return np.array(rows, dtype=float).reshape(-1, 2)


def plan_crop(fp: DatasetFingerprint, transpose: list[int], target_hw: list[float]) -> CropPlan:
    shapes = in_plane_shapes(fp, transpose, target_hw)
    fg = foreground_in_plane_extents(fp, transpose, target_hw)
    fg_p95 = np.percentile(fg, 95, axis=0) if len(fg) else np.percentile(shapes, 95, axis=0)
    margin = max(4, int(math.ceil(0.1 * fg_p95.max())))
    patch = [min(_round_up(p, PATCH_MULTIPLE), _round_up(m, PATCH_MULTIPLE))
             for p, m in zip(np.percentile(shapes, 95, axis=0), shapes.max(axis=0))]
    reason = (f"95th percentile of the cropped slice shapes, rounded up to a multiple of {PATCH_MULTIPLE} (at most the "
              f"largest slice); it covers the 95th percentile foreground extent {tuple(int(round(v)) for v in fg_p95)} "
              f"plus a {margin} px margin")
    if max(patch) > MAX_PATCH_SIDE:  # huge slices: a window around the foreground instead of the whole slice
        patch = [min(MAX_PATCH_SIDE, _round_up(f + 2 * margin, PATCH_MULTIPLE)) for f in fg_p95]
        reason = (f"slices exceed {MAX_PATCH_SIDE} px: a window of the 95th percentile foreground extent plus "
                  f"{margin} px on each side, rounded up to a multiple of {PATCH_MULTIPLE}, at most {MAX_PATCH_SIDE}")
    patch = [max(PATCH_MULTIPLE, p) for p in patch]
    reduction = fp.mean_crop_volume_reduction
    return CropPlan(crop_to_nonzero=True, patch_size=patch,
                    reason=f"crop to the nonzero box (removes {100 * reduction:.0f}% of voxels on average); "
                           f"patch: {reason}")


def plan_normalization(fp: DatasetFingerprint) -> list[ChannelNormalization]:
    out = []
    use_mask = fp.mean_crop_volume_reduction > NONZERO_MASK_REDUCTION
    for stats in fp.intensities:
        name = fp.channel_names.get(str(stats.channel), stats.name)
        key = name.strip().lower()
        if key == "ct":
            out.append(ChannelNormalization(
                stats.channel, name, "ct", clip_low=stats.percentile_00_5, clip_high=stats.percentile_99_5,
                mean=stats.mean, std=stats.std,
                reason=f"CT: clip to the {stats.source} 0.5/99.5 percentiles [{stats.percentile_00_5:.1f}, "
                       f"{stats.percentile_99_5:.1f}], then z-score with the dataset's {stats.source} mean/std"))
        elif key in RGB_NAMES:
            out.append(ChannelNormalization(stats.channel, name, "rgb",
                                            reason=f"colour channel '{name}': 0-255 to 0-1"))
        elif key in NO_NORM_NAMES:
            out.append(ChannelNormalization(stats.channel, name, "none", reason=f"channel name '{name}' asks for none"))
        else:
            where = (f"inside the nonzero mask (cropping removes {100 * fp.mean_crop_volume_reduction:.0f}% > "
                     f"{100 * NONZERO_MASK_REDUCTION:.0f}% of voxels)" if use_mask else "over the whole image")
            out.append(ChannelNormalization(stats.channel, name, "zscore", use_nonzero_mask=use_mask,
                                            reason=f"'{name}' is not CT: per-image z-score {where}"))
    return out


def plan_slicing_mode(fp: DatasetFingerprint, axis: int) -> tuple[str, float, str]:
    total = sum(c.shape_after_crop[axis] for c in fp.cases)
    fg_counts = []
    for c in fp.cases:
        present = set()
        for stats in c.classes.values():
            for a, b in stats.slice_runs[axis]:
                present.update(range(a, b))
        fg_counts.append(len(present))
    median_fg = float(np.median(fg_counts)) if fg_counts else 0.0
    if not is_2d_dataset(fp) and median_fg == 1 and np.median([c.shape[axis] for c in fp.cases]) > 1:
        return "max_slice", 0.0, "one annotated slice per volume: train on that slice only"
    if total <= ALL_SLICES_MAX:
        return "all", 1.0, f"{total} slices in all (<= {ALL_SLICES_MAX}): every slice is a training sample"
    if total <= FOREGROUND_SLICES_MAX:
        return "foreground", BACKGROUND_FRACTION, (
            f"{total} slices (> {ALL_SLICES_MAX}): foreground slices plus {100 * BACKGROUND_FRACTION:.0f}% of the "
            "background-only ones")
    return "max_slice", 0.0, (f"{total} slices (> {FOREGROUND_SLICES_MAX}): the largest foreground slice per case, "
                              "so an epoch stays affordable")


def plan_packing(fp: DatasetFingerprint, spacing_t: list[float]) -> ChannelPackingPlan:
    c = fp.num_channels
    if c == 1:
        ratio = spacing_t[0] / min(spacing_t[1:])
        if not is_2d_dataset(fp) and ratio <= NEIGHBOUR_SPACING_RATIO:
            return ChannelPackingPlan("neighbours", 1, f"3D data with slices {ratio:.1f}x the pixel size "
                                      f"(<= {NEIGHBOUR_SPACING_RATIO}): slices s-1, s, s+1 as SAM's three channels "
                                      "(2.5D)")
        why = ("2D images" if is_2d_dataset(fp) else
               f"slices {ratio:.1f}x thicker than pixels (neighbours differ too much)")
        return ChannelPackingPlan("repeat", 1, f"one channel, {why}: repeated to SAM's three channels")
    if c == 3:
        return ChannelPackingPlan("direct", 3, "three channels map onto SAM's three input channels")
    return ChannelPackingPlan("mix", c, f"{c} channels: a learned 1x1 convolution mixes them into SAM's three")


def use_region_outputs(adapters: dict) -> None:
    """Regions overlap, so a softmax cannot express them: every adapter gets one sigmoid output per region and
    nnU-Net's region loss (soft Dice + binary cross-entropy)."""
    for config in adapters.values():
        config.output = "sigmoid_per_label"
        config.loss = REGION_LOSS
        config.focal_alpha = config.focal_gamma = None  # read by dice_focal only
        config.reason = (config.reason + "; " if config.reason else "") + \
            "regions: one sigmoid per region, Dice + BCE loss (nnU-Net)"


def slice_counts(fp: DatasetFingerprint, axis: int, folds: int = 5) -> SliceCounts:
    """Slices of a typical fold (nnU-Net's 5 folds: a fifth of the cases validate): totals scaled by case share."""
    per_case = []
    for c in fp.cases:
        present: set[int] = set()
        for stats in c.classes.values():
            for a, b in stats.slice_runs[axis]:
                present.update(range(a, b))
        total = c.shape_after_crop[axis]
        per_case.append((total, min(len(present), total)))
    n = len(per_case)
    val_cases = max(1, n // folds) if n >= 2 else 0
    train_share = (n - val_cases) / max(n, 1)
    total_all = sum(t for t, _ in per_case)
    total_fg = sum(f for _, f in per_case)
    return SliceCounts(train_cases=max(1, n - val_cases), train_all=max(1, round(total_all * train_share)),
                       train_foreground=round(total_fg * train_share),
                       train_background=round((total_all - total_fg) * train_share),
                       val_cases=max(1, val_cases), val_slices=max(1, round(total_all * val_cases / max(n, 1))))


def smallest_structure_px(fp: DatasetFingerprint, transpose: list[int], target_hw: list[float]) -> float | None:
    """The thinnest foreground class in the slicing planes, in target pixels: its median mean width (fingerprint's
    ``median_width``), or, for fingerprints without widths, the smaller side of its median bounding box."""
    axis = transpose[0]
    pixel = float(np.mean(target_hw))
    median_spacing = float(np.mean([fp.median_spacing[a] for a in transpose[1:]]))
    sides = []
    for summary in fp.classes.values():
        if summary.median_width:
            sides.append(summary.median_width[axis] * median_spacing / pixel)
        elif summary.median_extent_mm:
            sides.append(min(summary.median_extent_mm[a] / t for a, t in zip(transpose[1:], target_hw)))
    return min(sides) if sides else None


def no_cache_with_mixer(adapters: dict) -> None:
    """A learned channel mixer trains in front of the encoder, so no adapter's embeddings stay fixed."""
    for config in adapters.values():
        if config.cache_embeddings:
            config.cache_embeddings = False
            config.reason += "; not cached: the learned channel mixer in front of the encoder trains"


def plan(fingerprint: DatasetFingerprint, dataset_info=None, backbone: str | None = None,
         hardware: Hardware | None = None, plans_name: str = DEFAULT_PLANS_NAME,
         cost_model: Callable[..., Callable[[int], MeasuredCost]] | None = None) -> Plans:
    """Plans for ``fingerprint``; ``dataset_info`` (samunet.dataset.dataset_json.DatasetInfo) overrides the labels
    and file ending recorded in the fingerprint.

    ``cost_model(backbone, adapter, precision, device, num_classes, in_channels, global_attention, encoder_runtime,
    batch)`` gives the per-slice cost at an input side, timed at the planned batch (``cost_model.MeasuredCosts``
    measures on this machine); None: the fixed estimates of ``hardware.py``."""
    fp = fingerprint
    hw = hardware or detect_hardware()
    labels = dict(dataset_info.labels) if dataset_info is not None else dict(fp.labels)
    regions_class_order = dataset_info.regions_class_order if dataset_info is not None else fp.regions_class_order
    file_ending = dataset_info.file_ending if dataset_info is not None else fp.file_ending

    axis, axis_reason = choose_slicing_axis(fp)
    transpose = [axis] + [a for a in range(3) if a != axis]
    spacings = np.array([c.spacing for c in fp.cases], dtype=float)[:, transpose]
    target = [float(x) for x in np.median(spacings, axis=0)]
    resampling = ResamplingPlan(target_spacing=target, reason=(
        f"in-plane: the median spacing {tuple(round(t, 4) for t in target[1:])}; through-plane kept as is "
        "(slices are never interpolated)"))
    mode, background_fraction, mode_reason = plan_slicing_mode(fp, axis)
    slicing = SlicingPlan(transpose=transpose, mode=mode, background_fraction=background_fraction,
                          reason=f"{axis_reason}; mode: {mode_reason}")
    crop = plan_crop(fp, transpose, target[1:])

    chosen, backbone_reason = choose_backbone(backbone, hw)
    planned_input = choose_input_size(chosen, crop.patch_size)
    adapter, adapter_reason = choose_adapter(hw, len(fp.cases))
    global_attention = uses_global_attention(chosen, planned_input.size)
    model = ModelPlan(backbone=chosen, input_size=planned_input.size, adapter=adapter,
                      global_attention=global_attention,
                      reason=f"{backbone_reason}; {planned_input.reason}" + (
                          "; global attention in every block (S-SAM layout): SAM's 14-token windows would pad "
                          "the small token grid" if global_attention else ""),
                      adapter_reason=adapter_reason)
    adapters = default_adapter_configs()
    if LabelScheme(labels, regions_class_order).has_regions:
        use_region_outputs(adapters)
    packing = plan_packing(fp, target)
    if packing.mode == "mix":
        no_cache_with_mixer(adapters)
    fold_slices = FoldSlices(
        slice_counts(fp, slicing.axis),
        tuple(float(x) for x in np.median(in_plane_shapes(fp, slicing.transpose, target[1:]), axis=0)),
        smallest_structure_px(fp, slicing.transpose, target[1:]))
    fit = fit_to_budget(BudgetFitRequest(
        InputSections(model, slicing, crop, augmentation_plan(is_2d_dataset(fp))), fold_slices, hw,
        frozen_encoder=adapters[adapter].cache_embeddings, num_classes=len(labels),
        in_channels=packed_channel_count(packing.mode, packing.num_channels), cost_model=cost_model))
    model, slicing, crop, augmentation = (fit.sections.model, fit.sections.slicing, fit.sections.crop,
                                          fit.sections.augmentation)
    adapters["fusion"] = plan_fusion_unet(adapters["fusion"], crop.patch_size, model.backbone, model.input_size)
    return Plans(
        dataset_name=fp.dataset_name,
        plans_name=plans_name,
        labels=labels,
        file_ending=file_ending,
        slicing=slicing,
        crop=crop,
        resampling=resampling,
        normalization=plan_normalization(fp),
        packing=packing,
        model=model,
        adapters=adapters,
        augmentation=augmentation,
        training=fit.training,
        cost=fit.cost,
        fingerprint_sha256=fingerprint_sha256(fp),
        regions_class_order=list(regions_class_order) if regions_class_order is not None else None,
    )
