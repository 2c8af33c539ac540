"""The picture of one case: its worst slice as image + reference contours (solid) + prediction contours (dashed),
and beside it where they disagree (false positives red, false negatives blue)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PANEL_INCHES = 3.6  # the longer side of each of the two panels
DPI = 100
FALSE_POSITIVE = (0.95, 0.15, 0.1)
FALSE_NEGATIVE = (0.1, 0.45, 1.0)
BOTH = (0.85, 0.2, 0.85)  # a voxel given to the wrong structure: a false positive of one, a negative of the other


@dataclass
class StructureSlice:
    name: str
    reference: np.ndarray  # (H, W) bool
    prediction: np.ndarray


def take_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """(H, W) of a (z, y, x) volume; a (C, z, y, x) image gives (C, H, W)."""
    return np.take(volume, index, axis=axis + (volume.ndim - 3))


def display_image(image_slice: np.ndarray | None, shape: tuple[int, int]) -> tuple[np.ndarray, str | None]:
    """Grey values in [0, 1] (0.5 and 99.5 percentiles; three channels of a colour image as RGB), or black."""
    if image_slice is None:
        return np.zeros(shape, dtype=np.float32), "gray"
    rgb = image_slice.ndim == 3 and image_slice.shape[0] == 3
    data = image_slice.astype(np.float32) if rgb else image_slice[0].astype(np.float32)
    low, high = np.percentile(data, [0.5, 99.5])
    scaled = np.clip((data - low) / (high - low), 0, 1) if high > low else np.zeros_like(data)
    return (np.moveaxis(scaled, 0, -1), None) if rgb else (scaled, "gray")


def error_colours(structures: list[StructureSlice], shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 4) RGBA: false positives, false negatives, and voxels that are both, transparent elsewhere."""
    fp = np.zeros(shape, dtype=bool)
    fn = np.zeros(shape, dtype=bool)
    for s in structures:
        fp |= s.prediction & ~s.reference
        fn |= s.reference & ~s.prediction
    rgba = np.zeros((*shape, 4), dtype=np.float32)
    for mask, colour in ((fp & ~fn, FALSE_POSITIVE), (fn & ~fp, FALSE_NEGATIVE), (fp & fn, BOTH)):
        rgba[mask] = (*colour, 0.85)
    return rgba


def draw_overlay(image_slice: np.ndarray | None, structures: list[StructureSlice], aspect: float, title: str,
                 path: Path) -> None:
    """Write the two-panel PNG to ``path`` (the caller's staging folder: it is renamed into place later).

    ``aspect``: row spacing / column spacing, so anisotropic slices keep their shape in mm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    shape = structures[0].reference.shape if structures else image_slice.shape[-2:]
    background, cmap = display_image(image_slice, shape)
    height_mm, width_mm = shape[0] * aspect, shape[1]
    scale = PANEL_INCHES / max(height_mm, width_mm)
    fig, (ax_contours, ax_errors) = plt.subplots(1, 2, figsize=(2 * width_mm * scale + 0.4,
                                                                 height_mm * scale + 1.1), dpi=DPI,
                                                 layout="constrained")
    colours = plt.get_cmap("tab10")
    handles = []
    # the errors' panel dims the image so that the colours stand out from bright tissue
    for ax, shown in ((ax_contours, background), (ax_errors, 0.15 + 0.5 * background)):
        ax.imshow(shown, cmap=cmap, vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    for i, s in enumerate(structures):
        colour = colours(i % 10)
        for mask, style in ((s.reference, "solid"), (s.prediction, "dashed")):
            if mask.any() and not mask.all():  # a contour needs both sides of the boundary in the slice
                ax_contours.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.4,
                                    linestyles=style)
        handles.append(Patch(color=colour, label=s.name))
    handles += [Line2D([], [], color="black", label="reference"),
                Line2D([], [], color="black", linestyle="dashed", label="prediction")]
    ax_errors.imshow(error_colours(structures, shape), aspect=aspect, interpolation="nearest")
    error_handles = [Patch(color=FALSE_POSITIVE, label="false positive"),
                     Patch(color=FALSE_NEGATIVE, label="false negative"),
                     Patch(color=BOTH, label="wrong structure")]
    ax_contours.set_title("contours", fontsize=9)
    ax_errors.set_title("errors", fontsize=9)
    ax_contours.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=7, ncol=2,
                       frameon=False)
    ax_errors.legend(handles=error_handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=7, ncol=2,
                     frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
