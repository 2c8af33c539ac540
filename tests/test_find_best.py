"""samunet_find_best on constructed validation outputs of two adapters whose strengths complement."""
from __future__ import annotations

import numpy as np
import pytest

from samunet.dataset.image_io import Geometry, write_segmentation
from samunet.evaluation.find_best import main as find_best_main
from samunet.evaluation.inference_information import InferenceInformation
from samunet.core.labels import LabelScheme
from samunet.evaluation.probabilities_io import save_probabilities
from samunet.utils.atomic import write_json

DATASET = "Dataset901_Toy"
LABELS = {"background": 0, "a": 1, "b": 2}
SHAPE = (6, 12, 12)
GEOMETRY = Geometry((2.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3).ravel(), SHAPE)


def _reference() -> np.ndarray:
    ref = np.zeros(SHAPE, np.uint8)
    ref[1:4, 1:5, 1:5] = 1
    ref[1:4, 7:11, 7:11] = 2
    return ref


def _probabilities(ref: np.ndarray, good_label: int, spurious: bool) -> np.ndarray:
    """Confident (0.9) on ``good_label``; on the other label it leans to background (0.6 vs 0.4)."""
    probs = np.zeros((3, *SHAPE), np.float32)
    probs[0] = 0.9
    probs[1:] = 0.05
    good, bad = ref == good_label, (ref != 0) & (ref != good_label)
    probs[:, good] = 0.05
    probs[good_label, good] = 0.9
    probs[:, bad] = 0.0
    probs[0, bad] = 0.6
    probs[3 - good_label, bad] = 0.4
    if spurious:  # a small confident false positive far from everything
        probs[:, 5, 0, 11] = [0.05, 0.9, 0.05]
    return probs


def _write_validation(results, adapter, folds, good_label, cases):
    model = results / DATASET / f"{adapter}__samunetPlans"
    write_json({"labels": LABELS, "file_ending": ".nii.gz", "channel_names": {"0": "MRI"}, "numTraining": 4},
               model / "dataset.json")
    for fold in folds:
        validation = model / f"fold_{fold}" / "validation"
        for case in cases[fold::2]:
            probs = _probabilities(_reference(), good_label, spurious=True)
            save_probabilities(probs, GEOMETRY, LABELS, validation / f"{case}.npz")
            write_segmentation(LabelScheme(LABELS).segmentation(probs), GEOMETRY, validation / f"{case}.nii.gz")
        write_json({"checkpoint": "final"}, validation / "summary.json")


@pytest.fixture
def toy_results(samunet_dirs):
    cases = [f"toy_{i:03d}" for i in range(4)]
    for case in cases:
        write_segmentation(_reference(), GEOMETRY, samunet_dirs["raw"] / DATASET / "labelsTr" / f"{case}.nii.gz")
    _write_validation(samunet_dirs["results"], "ssam", [0, 1], 1, cases)
    _write_validation(samunet_dirs["results"], "samed", [0, 1], 2, cases)
    return samunet_dirs["results"] / DATASET


def test_find_best_picks_the_ensemble_and_keeps_postprocessing(toy_results):
    find_best_main(["-d", "901"])
    info = InferenceInformation.load(toy_results / "inference_information.json")
    assert sorted(info.adapters) == ["samed", "ssam"]
    assert info.folds == {"ssam": [0, 1], "samed": [0, 1]} and info.num_cases == 4 and info.checkpoint == "final"
    singles = {tuple(c.adapters): c.mean_dice for c in info.candidates if len(c.adapters) == 1}
    # each adapter alone finds one of the two labels (plus a spurious voxel)
    assert singles[("ssam",)] < 0.6 and singles[("samed",)] < 0.6
    assert info.mean_dice > 0.95
    # labels 1 and 2 are separate objects: all-foreground LCC would erase one (rejected); LCC of label 1
    # removes the spurious voxel (kept) and lifts Dice to 1
    steps = {tuple(s.labels): s for s in info.postprocessing}
    assert not steps[(1, 2)].kept and steps[(1,)].kept and not steps[(2,)].kept
    assert info.mean_dice_postprocessed == pytest.approx(1.0)
    # smoothing was tried first; on these small clean boxes it erodes corners and is not kept
    assert info.smoothing and info.smoothing_sigma is None
    # JSON round trip of the typed record
    info.save(toy_results / "copy.json")
    assert InferenceInformation.load(toy_results / "copy.json") == info


def test_find_best_keeps_smoothing_for_noisy_predictions_and_records_it(samunet_dirs):
    """Slice-wise noise around a ball: smoothing the probabilities before the arg-max recovers the ball."""
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    ball = ((z - 3) * 2) ** 2 + (y - 6) ** 2 + (x - 6) ** 2 <= 16  # z spacing 2 mm: a round ball in mm
    reference = np.where(ball, 1, 0).astype(np.uint8)
    labels = {"background": 0, "a": 1}
    model = samunet_dirs["results"] / DATASET / "decoder__samunetPlans"
    write_json({"labels": labels, "file_ending": ".nii.gz", "channel_names": {"0": "MRI"}, "numTraining": 4},
               model / "dataset.json")
    for i in range(4):
        case = f"toy_{i:03d}"
        write_segmentation(reference, GEOMETRY, samunet_dirs["raw"] / DATASET / "labelsTr" / f"{case}.nii.gz")
        foreground = np.clip(np.where(ball, 0.65, 0.35) + rng.normal(0, 0.2, SHAPE), 0, 1).astype(np.float32)
        probs = np.stack([1 - foreground, foreground])
        validation = model / f"fold_{i % 2}" / "validation"
        save_probabilities(probs, GEOMETRY, labels, validation / f"{case}.npz")
        write_segmentation(LabelScheme(labels).segmentation(probs), GEOMETRY, validation / f"{case}.nii.gz")
    find_best_main(["-d", "901"])
    info = InferenceInformation.load(samunet_dirs["results"] / DATASET / "inference_information.json")
    assert info.smoothing and info.smoothing_sigma is not None
    assert info.mean_dice_postprocessed > info.mean_dice + 0.05


def test_find_best_restricted_to_one_adapter(toy_results):
    find_best_main(["-d", "901", "-a", "ssam"])
    info = InferenceInformation.load(toy_results / "inference_information.json")
    assert info.adapters == ["ssam"] and len(info.candidates) == 1


def test_find_best_without_validation_outputs_is_a_clear_error(samunet_dirs, capsys):
    (samunet_dirs["results"] / DATASET / "ssam__samunetPlans" / "fold_0").mkdir(parents=True)
    write_json({"labels": LABELS, "file_ending": ".nii.gz"},
               samunet_dirs["results"] / DATASET / "ssam__samunetPlans" / "dataset.json")
    with pytest.raises(SystemExit) as exit_info:
        find_best_main(["-d", "901"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "validation outputs" in err and "Traceback" not in err
