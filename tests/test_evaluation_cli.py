"""samunet_evaluate on small label maps written to disk."""
from __future__ import annotations

import json

import numpy as np
import pytest

from samunet.dataset.image_io import Geometry, write_segmentation
from samunet.evaluation.cli import main as evaluate_main
from samunet.utils.atomic import write_json

SHAPE = (4, 10, 10)
GEOMETRY = Geometry((3.0, 0.5, 0.5), (10.0, -5.0, 2.0), (0, 1, 0, 1, 0, 0, 0, 0, 1), SHAPE)


def _pair(tmp_path, name, ref, pred, geometry=GEOMETRY):
    write_segmentation(ref, GEOMETRY, tmp_path / "ref" / name)
    write_segmentation(pred, geometry, tmp_path / "pred" / name)


@pytest.fixture
def folders(tmp_path):
    ref = np.zeros(SHAPE, np.uint8)
    ref[1:3, 2:6, 2:6] = 1  # 32 voxels
    pred = ref.copy()
    pred[1:3, 2:6, 5] = 0  # 8 voxels missed: Dice 2*24/(32+24)
    _pair(tmp_path, "a.nii.gz", ref, pred)
    ref_b = ref.copy()
    ref_b[3, 8:10, 8:10] = 2
    _pair(tmp_path, "b.nii.gz", ref_b, ref_b)  # perfect, and label 2 present
    write_segmentation(ref, GEOMETRY, tmp_path / "ref" / "unpredicted.nii.gz")
    return tmp_path


def test_summary_structure_and_values(folders):
    evaluate_main(["-ref", str(folders / "ref"), "-pred", str(folders / "pred"), "--tolerance-mm", "0.5"])
    summary = json.loads((folders / "pred" / "summary.json").read_text())
    assert set(summary) >= {"metric_per_case", "mean", "foreground_mean"}
    assert [c["prediction_file"].rsplit("/", 1)[-1] for c in summary["metric_per_case"]] == ["a.nii.gz", "b.nii.gz"]
    case_a = summary["metric_per_case"][0]["metrics"]
    assert case_a["1"]["Dice"] == pytest.approx(48 / 56)
    assert case_a["1"]["FN"] == 8 and case_a["1"]["FP"] == 0
    # label 2 (found from the values present) is absent in both files of case a: Dice NaN, left out of the mean
    assert np.isnan(case_a["2"]["Dice"]) and summary["mean"]["2"]["Dice"] == 1.0
    assert summary["mean"]["1"]["Dice"] == pytest.approx((48 / 56 + 1) / 2)
    assert summary["foreground_mean"]["Dice"] == pytest.approx(((48 / 56 + 1) / 2 + 1) / 2)
    assert summary["NSD_tolerance_mm"] == 0.5
    assert list((folders / "pred").glob("evaluate_*.txt"))  # log file next to the summary


def test_labels_from_dataset_json_and_processes(folders, samunet_dirs):
    write_json({"labels": {"background": 0, "x": 1}, "channel_names": {"0": "MRI"}, "file_ending": ".nii.gz",
                "numTraining": 1}, samunet_dirs["raw"] / "Dataset902_Eval" / "dataset.json")
    out = folders / "s.json"
    evaluate_main(["-ref", str(folders / "ref"), "-pred", str(folders / "pred"), "-d", "902", "-o", str(out),
                   "-np", "2"])
    summary = json.loads(out.read_text())
    assert list(summary["mean"]) == ["1"]
    assert summary["mean"]["1"]["Dice"] == pytest.approx((48 / 56 + 1) / 2)


def test_prediction_without_reference_is_an_error(folders, capsys):
    write_segmentation(np.zeros(SHAPE, np.uint8), GEOMETRY, folders / "pred" / "orphan.nii.gz")
    with pytest.raises(SystemExit) as e:
        evaluate_main(["-ref", str(folders / "ref"), "-pred", str(folders / "pred")])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "orphan.nii.gz" in err and "no reference" in err


def test_geometry_mismatch_is_an_error(tmp_path, capsys):
    moved = Geometry(GEOMETRY.spacing, (11.0, -5.0, 2.0), GEOMETRY.direction, SHAPE)
    _pair(tmp_path, "c.nii.gz", np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8), geometry=moved)
    with pytest.raises(SystemExit) as e:
        evaluate_main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred")])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "c.nii.gz" in err and "origin" in err
    assert not (tmp_path / "pred" / "summary.json").exists()
