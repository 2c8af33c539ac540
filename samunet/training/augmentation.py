"""Training augmentation for one 2D sample, built from ``plans.augmentation`` with batchgeneratorsv2.

A sample is ``image (Cin, h, w)`` already scaled to [0, 1] and ``seg (1, h, w)`` of class indices, cropped
to an enlarged window around the chosen centre (see ``enlarged_window``) so rotation and scaling find real
pixels in the corners. The spatial transform then cuts the centred patch of ``patch_size``.

Intensity transforms run on the [0, 1] image and the result is clipped back to [0, 1], because the adapters
expect that range (brightness or contrast applied before the min-max scaling would be undone by it).
Probabilities follow nnU-Net's 2D defaults; the ranges come from the plans.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform

from samunet.core.plans import AugmentationPlan

# nnU-Net's per-sample probabilities
P_ROTATION = 0.2
P_SCALING = 0.2
P_ELASTIC = 0.2
P_NOISE = 0.1
P_BRIGHTNESS = 0.15
P_CONTRAST = 0.15
P_GAMMA = 0.3


def enlarged_window(patch_size: tuple[int, int], aug: AugmentationPlan) -> tuple[int, int]:
    """Window to cut before rotating/scaling so the final patch rarely samples outside real data.

    Like nnU-Net's ``get_patch_size``: the bounding box of the patch rotated by the largest angle and
    shrunk by the smallest scale (zooming out needs more context), capped at twice the patch.
    """
    angle = math.radians(min(abs(aug.rotation_degrees), 90.0))
    h, w = patch_size
    rotated_h = abs(h * math.cos(angle)) + abs(w * math.sin(angle))
    rotated_w = abs(h * math.sin(angle)) + abs(w * math.cos(angle))
    zoom = max(1.0, float(max(aug.scale_range)) if aug.scale_range else 1.0)
    return (min(2 * h, int(math.ceil(rotated_h * zoom))), min(2 * w, int(math.ceil(rotated_w * zoom))))


class ClipToUnitRange(BasicTransform):
    """Keep the image in [0, 1] after intensity augmentation (the adapters' input contract)."""

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        return img.clamp_(0.0, 1.0)

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        return segmentation


def intensity_transforms(aug: AugmentationPlan) -> list[BasicTransform]:
    """Noise, brightness, contrast and gamma, each with nnU-Net's probability and the plans' range."""
    transforms: list[BasicTransform] = []
    if aug.noise_std > 0:
        transforms.append(RandomTransform(
            GaussianNoiseTransform(noise_variance=(0.0, aug.noise_std), p_per_channel=1, synchronize_channels=True),
            apply_probability=P_NOISE))
    if aug.brightness > 0:
        transforms.append(RandomTransform(
            MultiplicativeBrightnessTransform(BGContrast((1 - aug.brightness, 1 + aug.brightness)),
                                              synchronize_channels=True, p_per_channel=1),
            apply_probability=P_BRIGHTNESS))
    if aug.contrast > 0:
        transforms.append(RandomTransform(
            ContrastTransform(BGContrast((1 - aug.contrast, 1 + aug.contrast)), preserve_range=True,
                              synchronize_channels=True, p_per_channel=1),
            apply_probability=P_CONTRAST))
    if aug.gamma_range and list(aug.gamma_range) != [1.0, 1.0]:
        transforms.append(RandomTransform(
            GammaTransform(BGContrast(tuple(aug.gamma_range)), p_invert_image=0, synchronize_channels=True,
                           p_per_channel=1, p_retain_stats=1),
            apply_probability=P_GAMMA))
    return transforms


def build_intensity_augmentation(aug: AugmentationPlan) -> ComposeTransforms:
    """Intensity augmentation alone, for the image branch of an adapter that reads the image after a cached
    encoder (fusion): drawn afresh at every step while the embedding stays the cached one of the plain input."""
    return ComposeTransforms([*intensity_transforms(aug), ClipToUnitRange()])


def build_augmentation(patch_size: tuple[int, int], aug: AugmentationPlan, variant: bool = False) -> ComposeTransforms:
    """The transform applied to each training sample (dict with ``image`` and ``segmentation`` tensors).

    ``variant``: for a cached augmented variant (``AugmentationPlan.cached_variants``), which is encoded once and
    drawn many times: rotation and scaling always apply (a variant that only repeats the plain window adds nothing),
    and no mirroring (the cached loader's grid or exact mirrors add the flips)."""
    rotation = math.radians(aug.rotation_degrees)
    p_spatial = 1.0 if variant else None
    spatial = SpatialTransform(
        tuple(patch_size),
        patch_center_dist_from_border=0,
        random_crop=False,  # the sampler already chose the centre (foreground oversampling)
        p_elastic_deform=P_ELASTIC if aug.elastic else 0.0,
        elastic_deform_scale=(0.0, 0.2),
        elastic_deform_magnitude=(0.0, 0.05 * min(patch_size)),  # pixels
        p_rotation=(p_spatial or P_ROTATION) if rotation > 0 else 0.0,
        rotation=(-rotation, rotation),
        p_scaling=(p_spatial or P_SCALING) if list(aug.scale_range) != [1.0, 1.0] else 0.0,
        scaling=tuple(aug.scale_range),
        p_synchronize_scaling_across_axes=1,
        mode_seg="bilinear",
    )
    transforms: list[BasicTransform] = [spatial, *intensity_transforms(aug)]
    if aug.mirror_axes and not variant:
        transforms.append(MirrorTransform(allowed_axes=tuple(int(a) for a in aug.mirror_axes)))
    transforms.append(ClipToUnitRange())
    return ComposeTransforms(transforms)


def center_crop_transform(patch_size: tuple[int, int]) -> ComposeTransforms:
    """No augmentation: just the centred patch (used for fixed-batch checks and --no-augment)."""
    return ComposeTransforms([SpatialTransform(tuple(patch_size), 0, random_crop=False), ClipToUnitRange()])


def apply_transform(transform: ComposeTransforms, image: np.ndarray,
                    seg: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``transform`` on one sample; returns (image (Cin, H, W) float32, seg (H, W) int64)."""
    out = transform(image=torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
                    segmentation=torch.from_numpy(np.ascontiguousarray(seg[None]).astype(np.int16)))
    return out["image"].float(), out["segmentation"][0].long()
