"""Largest-component postprocessing and the cross-validated decision on constructed cases."""
from __future__ import annotations

import numpy as np

from samunet.evaluation.postprocessing import (
    ValidationCase, apply_postprocessing, apply_step, decide_postprocessing, keep_largest_component,
)

SHAPE = (8, 20, 20)
SPACING = (1.0, 1.0, 1.0)


def _blob(seg, value, z, y, x):
    seg[z[0] : z[1], y[0] : y[1], x[0] : x[1]] = value
    return seg


def test_keep_largest_component_uses_26_connectivity():
    mask = np.zeros(SHAPE, bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[4, 4, 4] = True  # touches the cube at a corner only: same component with 26-connectivity
    mask[6, 15, 15] = True  # separate
    kept = keep_largest_component(mask)
    assert kept.sum() == 28 and not kept[6, 15, 15]
    assert not keep_largest_component(np.zeros(SHAPE, bool)).any()


def test_apply_step_sets_removed_voxels_to_background_only_for_its_labels():
    seg = _blob(np.zeros(SHAPE, np.uint8), 1, (1, 4), (1, 6), (1, 6))
    _blob(seg, 1, (6, 7), (15, 16), (15, 16))  # small separate label-1 blob
    _blob(seg, 2, (6, 7), (1, 2), (15, 16))  # small separate label-2 blob
    out = apply_step(seg, [1])
    assert out[6, 15, 15] == 0 and out[6, 1, 15] == 2 and out[2, 2, 2] == 1
    assert apply_postprocessing(seg, []) is seg


def _case(name, ref, pred):
    return ValidationCase(name, ref, pred, SPACING)


def test_spurious_blob_is_removed_and_the_step_kept():
    cases = []
    for i in range(3):
        ref = _blob(np.zeros(SHAPE, np.uint8), 1, (1, 5), (2, 8), (2, 8))
        _blob(ref, 2, (1, 5), (8, 12), (2, 8))  # touches label 1: one foreground object
        pred = ref.copy()
        _blob(pred, 1, (6, 8), (15, 18), (15, 18))  # spurious, far away
        cases.append(_case(f"c{i}", ref, pred))
    steps = decide_postprocessing(cases, [1, 2])
    assert [s.labels for s in steps] == [[1, 2], [1], [2]]
    assert steps[0].kept and steps[0].dice_after > steps[0].dice_before
    # once all-foreground LCC is kept, per-class LCC changes nothing: not kept
    assert not steps[1].kept and not steps[2].kept


def test_lcc_that_hurts_is_not_kept():
    cases = []
    for i in range(2):
        ref = _blob(np.zeros(SHAPE, np.uint8), 1, (1, 4), (1, 6), (1, 6))
        _blob(ref, 1, (5, 8), (14, 19), (14, 19))  # a second, real component of label 1
        cases.append(_case(f"c{i}", ref, ref.copy()))
    steps = decide_postprocessing(cases, [1])
    assert len(steps) == 1 and not steps[0].kept
    assert steps[0].dice_after < steps[0].dice_before


def test_step_rejected_when_one_class_gets_worse_then_per_class_step_kept():
    cases = []
    for i in range(2):
        ref = _blob(np.zeros(SHAPE, np.uint8), 1, (1, 5), (1, 9), (1, 9))
        _blob(ref, 2, (5, 8), (16, 19), (16, 19))  # separate from label 1: all-foreground LCC would delete it
        pred = ref.copy()
        _blob(pred, 1, (6, 8), (1, 3), (16, 19))  # spurious label-1 blob
        cases.append(_case(f"c{i}", ref, pred))
    steps = decide_postprocessing(cases, [1, 2])
    by_labels = {tuple(s.labels): s for s in steps}
    assert not by_labels[(1, 2)].kept  # would erase label 2
    assert by_labels[(1,)].kept  # removes the spurious label-1 blob
    assert not by_labels[(2,)].kept
    kept = [s for s in steps if s.kept]
    fixed = apply_postprocessing(cases[0].prediction, kept)
    assert np.array_equal(fixed, cases[0].reference)
