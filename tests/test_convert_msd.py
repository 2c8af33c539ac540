"""convert_msd: MSD tasks become nnU-Net v2 raw datasets with values and geometry kept exactly."""
from __future__ import annotations

import json
import logging
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from samunet.dataset.convert_msd import convert_msd_task, main
from samunet.dataset.dataset_json import DatasetError, DatasetInfo
from samunet.dataset.verify import verify_dataset

REAL_CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_099", "hippocampus_148"]  # 001, 148 are uint8


def _same_image(converted, original) -> None:
    a, b = sitk.ReadImage(str(converted)), sitk.ReadImage(str(original))
    assert a.GetSpacing() == b.GetSpacing() and a.GetOrigin() == b.GetOrigin()
    assert a.GetDirection() == b.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def test_real_cases_keep_values_dtype_and_geometry(hippocampus_task, tmp_path):
    out = convert_msd_task(hippocampus_task, tmp_path, case_ids=REAL_CASES, num_processes=1)
    assert out == tmp_path / "Dataset004_Hippocampus"
    for case_id in REAL_CASES:
        converted = out / "imagesTr" / f"{case_id}_0000.nii.gz"
        original = hippocampus_task / "imagesTr" / f"{case_id}.nii.gz"
        _same_image(converted, original)
        assert sitk.ReadImage(str(converted)).GetPixelID() == sitk.ReadImage(str(original)).GetPixelID()
        label = out / "labelsTr" / f"{case_id}.nii.gz"
        _same_image(label, hippocampus_task / "labelsTr" / f"{case_id}.nii.gz")
        assert sitk.ReadImage(str(label)).GetPixelID() == sitk.sitkUInt8
    dataset_json = json.loads((out / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "MRI"}
    assert dataset_json["labels"] == {"background": 0, "anterior": 1, "posterior": 2}
    assert dataset_json["numTraining"] == 4 and dataset_json["file_ending"] == ".nii.gz"
    assert "CC-BY-SA" in dataset_json["licence"] and "Simpson" in dataset_json["reference"]
    assert "training" not in dataset_json and "modality" not in dataset_json
    assert not (out / "imagesTs").exists()  # a subset conversion leaves the test images out
    assert verify_dataset(out, num_processes=1) == []


def test_rerun_skips_finished_cases_and_redoes_missing_ones(hippocampus_task, tmp_path):
    out = convert_msd_task(hippocampus_task, tmp_path, case_ids=REAL_CASES[:2], num_processes=1)
    kept = out / "imagesTr" / f"{REAL_CASES[0]}_0000.nii.gz"
    os.utime(kept, (1, 1))  # an old time stamp shows whether the file was rewritten
    redone = out / "labelsTr" / f"{REAL_CASES[1]}.nii.gz"
    redone.write_bytes(b"truncated by a crash")  # a foreign, unreadable file is not taken as finished
    (out / "dataset.json").unlink()  # as after an interrupted run
    convert_msd_task(hippocampus_task, tmp_path, case_ids=REAL_CASES[:2], num_processes=1)
    assert kept.stat().st_mtime == 1
    _same_image(redone, hippocampus_task / "labelsTr" / f"{REAL_CASES[1]}.nii.gz")
    assert (out / "dataset.json").is_file()


def _write_msd_4d(path, channels: np.ndarray, spacing=(0.9, 0.8, 2.0)) -> None:
    """MSD multi-modal files are 4D NIfTI with the modality last: (x, y, z, c)."""
    xyzc = np.transpose(channels, (3, 2, 1, 0))
    nib.save(nib.Nifti1Image(xyzc, np.diag([*spacing, 1.0])), str(path))


def _synthetic_msd_task(root, name="Task07_Synth", training=None) -> tuple:
    task = root / name
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    volumes = {}
    for case_id in ("synth_002", "synth_001"):
        channels = rng.normal(size=(2, 3, 5, 6)).astype(np.float32)  # (c, z, y, x)
        _write_msd_4d(task / "imagesTr" / f"{case_id}.nii.gz", channels)
        seg = rng.integers(0, 3, size=(6, 5, 3)).astype(np.float32)  # (x, y, z); MSD labels are often float
        nib.save(nib.Nifti1Image(seg, np.diag([0.9, 0.8, 2.0, 1.0])), str(task / "labelsTr" / f"{case_id}.nii.gz"))
        volumes[case_id] = (channels, np.transpose(seg, (2, 1, 0)))
    (task / "imagesTs").mkdir()
    _write_msd_4d(task / "imagesTs" / "synth_005.nii.gz", rng.normal(size=(2, 3, 5, 6)).astype(np.float32))
    msd = {
        "name": "Synth", "licence": "CC0", "reference": "test", "description": "two modalities",
        "modality": {"0": "T1", "1": "T2"},
        "labels": {"0": "background", "1": "edema", "2": "tumour"},
        "numTraining": 2,
        "training": training or [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                                 for c in volumes],
        "test": ["./imagesTs/synth_005.nii.gz"],
    }
    (task / "dataset.json").write_text(json.dumps(msd))
    return task, volumes


def test_4d_two_modality_task_is_split_into_channels(tmp_path):
    task, volumes = _synthetic_msd_task(tmp_path)
    out = convert_msd_task(task, tmp_path / "raw", num_processes=1)
    assert out.name == "Dataset007_Synth"
    for case_id, (channels, seg) in volumes.items():
        for c in range(2):
            image = sitk.ReadImage(str(out / "imagesTr" / f"{case_id}_{c:04d}.nii.gz"))
            assert image.GetDimension() == 3
            assert image.GetSpacing() == pytest.approx((0.9, 0.8, 2.0))
            np.testing.assert_array_equal(sitk.GetArrayFromImage(image), channels[c])
        label = sitk.ReadImage(str(out / "labelsTr" / f"{case_id}.nii.gz"))
        assert label.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_array_equal(sitk.GetArrayFromImage(label), seg)
    info = DatasetInfo.load(out)
    assert info.channel_names == {"0": "T1", "1": "T2"}
    assert info.labels == {"background": 0, "edema": 1, "tumour": 2}
    assert [c.case_id for c in info.training_cases()] == ["synth_001", "synth_002"]
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["synth_005_0000.nii.gz", "synth_005_0001.nii.gz"]
    assert verify_dataset(out, num_processes=1) == []


def test_path_leaving_the_task_folder_is_refused(tmp_path):
    outside = [{"image": "./imagesTr/../../secret.nii.gz", "label": "./labelsTr/synth_001.nii.gz"}]
    task, _ = _synthetic_msd_task(tmp_path, training=outside)
    with pytest.raises(DatasetError, match=r"training\[0\].image '.*secret.nii.gz' points outside the task folder"):
        convert_msd_task(task, tmp_path / "raw", num_processes=1)
    assert not (tmp_path / "raw" / "Dataset007_Synth" / "dataset.json").exists()


def test_modality_count_must_match_the_image(tmp_path):
    task, _ = _synthetic_msd_task(tmp_path)
    msd = json.loads((task / "dataset.json").read_text())
    msd["modality"] = {"0": "T1"}
    (task / "dataset.json").write_text(json.dumps(msd))
    with pytest.raises(DatasetError, match="synth_001.nii.gz: has 2 channel"):
        convert_msd_task(task, tmp_path / "raw", num_processes=1)


def test_unknown_case_id_is_an_error(tmp_path):
    task, _ = _synthetic_msd_task(tmp_path)
    with pytest.raises(DatasetError, match="unknown case id"):
        convert_msd_task(task, tmp_path / "raw", case_ids=["synth_999"], num_processes=1)


@pytest.fixture
def restore_logging():
    """main() points the samunet logger at a file in tmp_path; detach it afterwards."""
    yield
    logger = logging.getLogger("samunet")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def test_cli_converts_with_an_explicit_id_and_writes_a_log(tmp_path, restore_logging):
    task, _ = _synthetic_msd_task(tmp_path)
    main(["-i", str(task), "-o", str(tmp_path / "raw"), "--id", "123", "-np", "2"])
    out = tmp_path / "raw" / "Dataset123_Synth"
    assert DatasetInfo.load(out).num_training == 2
    assert len(list(out.glob("convert_msd_*.txt"))) == 1


def test_cli_reports_a_bad_task_in_one_line(tmp_path, capsys, restore_logging):
    (tmp_path / "Task09_Empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["-i", str(tmp_path / "Task09_Empty"), "-o", str(tmp_path / "raw")])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("samunet_convert_msd: error:") and "dataset.json does not exist" in error
    assert not (tmp_path / "raw" / "Dataset009_Empty").exists()  # no empty dataset folder left behind


def test_an_existing_dataset_with_the_same_id_is_not_overwritten(tmp_path):
    task, _ = _synthetic_msd_task(tmp_path)
    (tmp_path / "raw" / "Dataset007_Other").mkdir(parents=True)
    with pytest.raises(DatasetError, match="Dataset007_Other: dataset id 007 is already used"):
        convert_msd_task(task, tmp_path / "raw", num_processes=1)
