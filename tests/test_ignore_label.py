"""The ignore label (sparse annotation) is left out of the metrics, foreground sampling and class statistics.
(Its exclusion from the losses is tested in test_region_ignore_losses.py.)"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from samunet.core.labels import LabelScheme
from samunet.dataset.image_io import Geometry, write_image, write_segmentation
from samunet.evaluation.evaluate_folder import evaluate_folders
from samunet.evaluation.metrics import compute_metrics
from samunet.planning.fingerprint import fingerprint_case
from samunet.preprocessing.case_preprocessor import slices_containing
from samunet.training.slice_dataset import CaseSlices, SliceSampler, _from_seg

IGNORE = 3
SCHEME = LabelScheme({"background": 0, "a": 1, "b": 2, "ignore": IGNORE})


def _reference() -> np.ndarray:
    ref = np.zeros((3, 8, 8), dtype=np.uint8)
    ref[1, 2:5, 2:5] = 1
    ref[2, 4:7, 4:7] = 2
    ref[:, 0, :] = IGNORE  # an unannotated row on every slice
    return ref


def test_metrics_do_not_change_when_predictions_differ_on_ignored_voxels():
    ref = _reference()
    pred = ref.copy()
    pred[ref == IGNORE] = 0
    other = pred.copy()
    other[ref == IGNORE] = 1  # label 1 everywhere the reference is unannotated
    spacing = (1.0, 1.0, 1.0)
    kept = compute_metrics(ref, pred, [1, 2], spacing, ignore_label=IGNORE)
    changed = compute_metrics(ref, other, [1, 2], spacing, ignore_label=IGNORE)
    assert kept == changed and kept[1]["Dice"] == 1.0
    # ignored voxels are not counted at all, not even as true negatives (nnU-Net)
    assert sum(kept[1][k] for k in ("TP", "FP", "FN", "TN")) == ref.size - np.count_nonzero(ref == IGNORE)
    # without the ignore label the same difference is penalised (so the test can fail)
    assert compute_metrics(ref, other, [1, 2], spacing)[1]["Dice"] < 1.0


def test_evaluate_folders_leaves_the_ignore_label_out(tmp_path):
    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3).ravel(), (3, 8, 8))
    ref = _reference()
    pred = np.where(ref == IGNORE, 2, ref).astype(np.uint8)
    write_segmentation(ref, geometry, tmp_path / "ref" / "c.nii.gz")
    write_segmentation(pred, geometry, tmp_path / "pred" / "c.nii.gz")
    summary = evaluate_folders(tmp_path / "ref", tmp_path / "pred", ignore_label=IGNORE)
    assert set(summary["mean"]) == {1, 2}  # 3 is not a structure
    assert summary["mean"][2]["Dice"] == 1.0


def test_sampler_never_forces_a_slice_holding_only_ignore_as_foreground():
    seg = np.zeros((4, 8, 8), dtype=np.uint8)
    seg[0, :4] = IGNORE  # slice 0: unannotated pixels and background only
    seg[1, 2:4, 2:4] = 1
    seg[2, :2] = IGNORE
    seg[2, 5:7, 5:7] = 2
    class_slices, foreground_slices, largest = slices_containing(seg, IGNORE)
    assert class_slices == {"1": [1], "2": [2]} and foreground_slices == [1, 2] and largest in (1, 2)
    by_class, _ = _from_seg(seg, SCHEME)
    assert set(by_class) == {1, 2}  # training targets of the two labels; ignore is none of them
    case = CaseSlices("c", Path("unused_image.npy"), Path("unused_seg.npy"), 4, by_class)
    sampler = SliceSampler([case], "foreground", 0.0)
    rng = np.random.default_rng(0)
    forced = {sampler.draw(rng, force_foreground=True).slice for _ in range(200)}
    ordinary = {sampler.draw(rng, force_foreground=False).slice for _ in range(200)}
    assert forced == {1, 2} and ordinary == {1, 2}
    # without an ignore label slice 0 would count as foreground
    assert 0 in slices_containing(seg)[1]


def test_fingerprint_class_statistics_leave_the_ignore_label_out(tmp_path):
    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3).ravel(), (3, 8, 8))
    ref = _reference()
    write_image(np.ones((3, 8, 8), dtype=np.float32), geometry, tmp_path / "c_0000.nii.gz")
    write_segmentation(ref, geometry, tmp_path / "c.nii.gz")
    fingerprint, samples, _ = fingerprint_case("c", [str(tmp_path / "c_0000.nii.gz")], str(tmp_path / "c.nii.gz"),
                                               1000, 0, ignore_label=IGNORE)
    assert set(fingerprint.classes) == {"1", "2"}
    assert fingerprint.foreground_bbox == [[1, 3], [2, 7], [2, 7]]  # the ignored row 0 is not foreground
    assert samples.shape[1] == np.count_nonzero((ref == 1) | (ref == 2))
    unaware, _, _ = fingerprint_case("c", [str(tmp_path / "c_0000.nii.gz")], str(tmp_path / "c.nii.gz"), 1000, 0)
    assert "3" in unaware.classes


def test_ordinary_patches_are_centred_on_annotated_pixels(tmp_path):
    from samunet.training.data_loader import BatchSpec, TrainingBatches
    from samunet.training.slice_dataset import SliceChoice
    from tests.fixtures_models import make_tiny_plans

    plans = make_tiny_plans(input_size=64)
    plans.labels = {"background": 0, "a": 1, "ignore": 2}
    plans.crop.patch_size = [8, 8]
    seg = np.full((1, 32, 32), 2, dtype=np.uint8)  # everything unannotated ...
    seg[0, 24:28, 4:8] = 0  # ... but a small block of annotated background
    np.save(tmp_path / "c_image.npy", np.zeros((1, 1, 32, 32), dtype=np.float32))
    np.save(tmp_path / "c_seg.npy", seg)
    case = CaseSlices("c", tmp_path / "c_image.npy", tmp_path / "c_seg.npy", 1, {1: np.zeros(0, dtype=np.int64)})
    batches = TrainingBatches(BatchSpec([case], plans, 1, seed=0, augment=False))
    rng = np.random.default_rng(0)
    centres = [batches._center(batches.lut[seg[0]], SliceChoice(0, 0, None), rng) for _ in range(50)]
    assert all(24 <= y < 28 and 4 <= x < 8 for y, x in centres)
    plans.labels = {"background": 0, "a": 1, "b": 2}  # the same map without an ignore label: centred anywhere
    anywhere = TrainingBatches(BatchSpec([case], plans, 1, seed=0, augment=False))
    centres = [anywhere._center(seg[0], SliceChoice(0, 0, None), rng) for _ in range(50)]
    assert not all(24 <= y < 28 and 4 <= x < 8 for y, x in centres)
