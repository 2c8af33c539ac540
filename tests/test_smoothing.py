"""Probability smoothing and its cross-validated decision on constructed cases."""
from __future__ import annotations

import numpy as np
import pytest

from samunet.core.labels import LabelScheme
from samunet.evaluation.postprocessing import ValidationCase
from samunet.evaluation.smoothing import SIGMA_CANDIDATES, axis_sigmas, decide_smoothing, smooth_probabilities

SHAPE = (12, 24, 24)
SPACING = (1.0, 1.0, 1.0)
SCHEME = LabelScheme({"background": 0, "organ": 1})


def _softmax_pair(foreground: np.ndarray) -> np.ndarray:
    """(2, ...) probabilities: background and foreground summing to 1."""
    foreground = foreground.astype(np.float32)
    return np.stack([1 - foreground, foreground])


def test_axis_sigmas_follow_the_spacing():
    assert axis_sigmas((10.0, 1.5, 1.5), 2.0) == pytest.approx((0.3, 2.0, 2.0))
    # a 2D image's marker axis (999 mm) is practically not smoothed
    assert axis_sigmas((999.0, 1.0, 1.0), 1.0)[0] < 0.002


def test_smoothing_keeps_probabilities_summing_to_one_and_none_is_the_identity():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, *SHAPE)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(0)
    smoothed = smooth_probabilities(probs, SPACING, 1.0)
    np.testing.assert_allclose(smoothed.sum(0), 1.0, atol=1e-5)
    assert smoothed.std() < probs.std()  # noise is averaged away
    assert smooth_probabilities(probs, SPACING, None) is probs
    # in place: the same values in the same array
    copy = probs.astype(np.float32)
    assert smooth_probabilities(copy, SPACING, 1.0, in_place=True) is copy
    np.testing.assert_array_equal(copy, smoothed)


def test_coarse_slices_are_hardly_blended():
    probs = np.zeros((2, *SHAPE), np.float32)
    probs[1, ::2] = 1.0  # alternating slices
    probs[0] = 1 - probs[1]
    isotropic = smooth_probabilities(probs, (1.0, 1.0, 1.0), 2.0)
    coarse = smooth_probabilities(probs, (10.0, 1.0, 1.0), 2.0)
    # isotropic smoothing averages the slices towards 0.5; 10 mm slices keep their own values
    assert np.abs(isotropic[1, 4:8] - 0.5).max() < 0.1
    np.testing.assert_allclose(coarse[1, 4:8], probs[1, 4:8], atol=0.01)


def _noisy_ball_cases(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(reference, probabilities) with a ball whose predicted voxels flip at random near the decision point."""
    rng = np.random.default_rng(1)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    ball = ((z - 6) ** 2 + (y - 12) ** 2 + (x - 12) ** 2) <= 25
    cases = []
    for _ in range(count):
        foreground = np.where(ball, 0.65, 0.35) + rng.normal(0, 0.2, SHAPE)
        cases.append((ball.astype(np.uint8), _softmax_pair(np.clip(foreground, 0, 1))))
    return cases


def _thin_line_cases(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(reference, probabilities) with a one-voxel line predicted confidently: smoothing erases it."""
    cases = []
    for _ in range(count):
        line = np.zeros(SHAPE, np.uint8)
        line[6, 12, 2:22] = 1
        cases.append((line, _softmax_pair(np.where(line > 0, 0.9, 0.05))))
    return cases


def _decide(cases):
    def cases_at(sigma):
        return [ValidationCase(f"c{i}", ref, SCHEME.segmentation(smooth_probabilities(p, SPACING, sigma)), SPACING)
                for i, (ref, p) in enumerate(cases)]
    return decide_smoothing(cases_at, [1])


def test_smoothing_is_kept_where_it_removes_noise():
    trials, chosen = _decide(_noisy_ball_cases(3))
    assert [t.sigma for t in trials] == list(SIGMA_CANDIDATES[: len(trials)])
    kept = [t for t in trials if t.kept]
    assert len(kept) == 1 and kept[0].dice_after > kept[0].dice_before + 0.05
    # the kept trial is the best of the accepted ones, and its cases are returned for the next decisions
    assert kept[0].dice_after == max(t.dice_after for t in trials)
    reference, probs = _noisy_ball_cases(3)[0]
    np.testing.assert_array_equal(chosen[0].prediction,
                                  SCHEME.segmentation(smooth_probabilities(probs, SPACING, kept[0].sigma)))


def test_smoothing_that_erases_thin_structures_is_not_kept():
    cases = _thin_line_cases(2)
    trials, chosen = _decide(cases)
    # a little smoothing leaves the line as it is (no gain), more erases it (a loss): nothing kept
    assert not any(t.kept for t in trials) and all(t.dice_after <= t.dice_before for t in trials)
    assert trials[-1].dice_after < trials[-1].dice_before
    # the unsmoothed predictions go on to the component decision
    np.testing.assert_array_equal(chosen[0].prediction, cases[0][0])


def test_the_search_stops_once_more_smoothing_scores_lower():
    """A Dice that peaks at sigma 0.75: the search tries 0.5, 0.75, 1.0, stops there and keeps 0.75."""
    reference = np.zeros(SHAPE, np.uint8)
    reference[2:10, 4:14, 4:14] = 1
    shift = {None: 3, 0.5: 1, 0.75: 0, 1.0: 2}  # the prediction's offset from the reference at each sigma
    asked = []

    def cases_at(sigma):
        asked.append(sigma)
        return [ValidationCase("c0", reference, np.roll(reference, shift[sigma], axis=2), SPACING)]

    trials, chosen = decide_smoothing(cases_at, [1])
    assert asked == [None, 0.5, 0.75, 1.0] and [t.sigma for t in trials] == [0.5, 0.75, 1.0]
    assert [t.kept for t in trials] == [False, True, False]
    np.testing.assert_array_equal(chosen[0].prediction, reference)
