"""Metrics on constructed arrays whose values are worked out by hand (anisotropic spacing included)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from samunet.evaluation.metrics import binary_metrics, compute_metrics, image_diagonal_mm, summarize

SPACING = (2.0, 1.0, 1.0)  # (z, y, x) mm: slices twice as far apart as pixels


def _box(shape, z, y, x):
    mask = np.zeros(shape, dtype=bool)
    mask[z[0] : z[1], y[0] : y[1], x[0] : x[1]] = True
    return mask


def test_shifted_box_overlap_counts_dice_iou():
    # 4x4x4 boxes shifted by one voxel in x: overlap 4*4*3 = 48, 16 voxels on each side alone
    ref = _box((8, 8, 8), (2, 6), (2, 6), (2, 6))
    pred = _box((8, 8, 8), (2, 6), (2, 6), (3, 7))
    m = binary_metrics(ref, pred, SPACING)
    assert (m["TP"], m["FP"], m["FN"], m["n_ref"], m["n_pred"]) == (48, 16, 16, 64, 64)
    assert m["TN"] == 512 - 80
    assert m["Dice"] == pytest.approx(96 / 128)
    assert m["IoU"] == pytest.approx(48 / 80)


def test_hd95_uses_the_spacing_of_each_axis():
    # one-voxel-thick planes: every voxel is surface, every distance equals the plane offset in mm
    shape = (6, 5, 5)
    ref = np.zeros(shape, bool)
    ref[1] = True
    pred_z = np.zeros(shape, bool)
    pred_z[3] = True  # two slices away: 2 * 2 mm
    assert binary_metrics(ref, pred_z, SPACING)["HD95"] == pytest.approx(4.0)
    ref_x = np.zeros(shape, bool)
    ref_x[:, :, 1] = True
    pred_x = np.zeros(shape, bool)
    pred_x[:, :, 3] = True  # two pixels away in x: 2 * 1 mm
    assert binary_metrics(ref_x, pred_x, SPACING)["HD95"] == pytest.approx(2.0)


def test_single_voxels_distance_is_euclidean_in_mm():
    ref = np.zeros((6, 6, 6), bool)
    pred = np.zeros((6, 6, 6), bool)
    ref[1, 2, 2] = True
    pred[3, 2, 3] = True  # offsets: 2 slices (4 mm), 0, 1 pixel (1 mm)
    m = binary_metrics(ref, pred, SPACING)
    assert m["Dice"] == 0.0
    assert m["HD95"] == pytest.approx(math.sqrt(17.0))
    assert m["NSD"] == 0.0
    assert binary_metrics(ref, pred, SPACING, tolerance_mm=4.2)["NSD"] == 1.0


def test_nsd_tolerance_is_inclusive_and_in_mm():
    shape = (6, 5, 5)
    ref = np.zeros(shape, bool)
    ref[1] = True
    pred = np.zeros(shape, bool)
    pred[2] = True  # 2 mm apart
    assert binary_metrics(ref, pred, SPACING, tolerance_mm=1.0)["NSD"] == 0.0
    assert binary_metrics(ref, pred, SPACING, tolerance_mm=2.0)["NSD"] == 1.0


def test_one_outlier_voxel_moves_nsd_but_not_hd95():
    # ref: 3x3x3 cube (26 surface voxels); pred: the same cube plus one far voxel
    ref = _box((10, 10, 10), (1, 4), (1, 4), (1, 4))
    pred = ref.copy()
    pred[8, 8, 8] = True
    m = binary_metrics(ref, pred, (1.0, 1.0, 1.0))
    assert m["Dice"] == pytest.approx(2 * 27 / (27 + 28))
    # pred->ref distances: 26 zeros and one large value; the 95th percentile (linear) is still 0
    assert m["HD95"] == 0.0
    # 26 + 26 surface voxels within 1 mm out of 27 + 26
    assert m["NSD"] == pytest.approx(52 / 53)


def test_empty_conventions():
    empty = np.zeros((4, 5, 6), bool)
    some = empty.copy()
    some[1, 1, 1] = True
    both = binary_metrics(empty, empty, SPACING)
    assert math.isnan(both["Dice"]) and math.isnan(both["IoU"])
    assert both["HD95"] == 0.0 and both["NSD"] == 1.0
    diagonal = math.sqrt((4 * 2.0) ** 2 + 5.0**2 + 6.0**2)
    assert image_diagonal_mm((4, 5, 6), SPACING) == pytest.approx(diagonal)
    for ref, pred in ((empty, some), (some, empty)):
        one = binary_metrics(ref, pred, SPACING)
        assert one["Dice"] == 0.0 and one["IoU"] == 0.0 and one["NSD"] == 0.0
        assert one["HD95"] == pytest.approx(diagonal)


def test_compute_metrics_per_label_and_shape_checks():
    ref = np.zeros((3, 4, 4), np.uint8)
    pred = np.zeros((3, 4, 4), np.uint8)
    ref[1, :2, :2] = 1
    pred[1, :2, :2] = 1
    ref[2, 2:, 2:] = 2
    pred[2, 2:, 3:] = 2
    m = compute_metrics(ref, pred, [1, 2], SPACING)
    assert set(m) == {1, 2}
    assert m[1]["Dice"] == 1.0
    assert m[2]["Dice"] == pytest.approx(2 * 2 / (4 + 2))
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(ref, pred[:2], [1], SPACING)
    with pytest.raises(ValueError, match="spacing"):
        compute_metrics(ref, pred, [1], (1.0, 1.0))


def test_summarize_ignores_nan_and_averages_class_means():
    nan = float("nan")
    cases = [
        {"reference_file": "a", "prediction_file": "a",
         "metrics": {1: {"Dice": 0.5, "HD95": 2.0}, 2: {"Dice": nan, "HD95": 0.0}}},
        {"reference_file": "b", "prediction_file": "b",
         "metrics": {1: {"Dice": 1.0, "HD95": 4.0}, 2: {"Dice": 0.2, "HD95": 6.0}}},
    ]
    s = summarize(cases)
    assert s["mean"][1]["Dice"] == pytest.approx(0.75)
    assert s["mean"][2]["Dice"] == pytest.approx(0.2)  # the NaN case is left out
    assert s["mean"][2]["HD95"] == pytest.approx(3.0)
    assert s["foreground_mean"]["Dice"] == pytest.approx((0.75 + 0.2) / 2)
    assert s["metric_per_case"] == cases
