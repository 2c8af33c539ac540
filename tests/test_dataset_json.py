"""dataset_json: DatasetInfo from dataset.json; cases discovered from files; prediction inputs grouped by case."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from samunet.dataset.dataset_json import DatasetError, DatasetInfo, find_images_by_case
from samunet.dataset.image_io import read_label
from tests.fixtures_data import HIPPOCAMPUS_SMALL_CASES, first_hippocampus_case_ids, write_synthetic_dataset


def _edit_json(folder, **changes):
    data = json.loads((folder / "dataset.json").read_text())
    data.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del data[key]
    (folder / "dataset.json").write_text(json.dumps(data))


def test_load_reads_every_field(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "Dataset001_X", num_channels=2)
    _edit_json(folder, name="X", licence="CC0")
    info = DatasetInfo.load(folder)
    assert info.channel_names == {"0": "channel0", "1": "channel1"} and info.num_channels == 2
    assert info.labels == {"background": 0, "a": 1, "b": 2} and info.label_values == [0, 1, 2]
    assert info.num_training == 2 and info.file_ending == ".nii.gz"
    assert info.extra == {"name": "X", "licence": "CC0"}
    assert DatasetInfo.load(folder / "dataset.json").folder == folder


def test_training_cases_are_found_from_files_sorted(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "Dataset001_X", num_cases=3, num_channels=2)
    # a 'training' list is ignored, even one naming files that do not exist
    _edit_json(folder, training=[{"image": "./imagesTr/ghost.nii.gz", "label": "./labelsTr/ghost.nii.gz"}])
    (folder / "imagesTr" / ".DS_Store").write_text("")
    cases = DatasetInfo.load(folder).training_cases()
    assert [c.case_id for c in cases] == ["case_000", "case_001", "case_002"]
    assert [p.name for p in cases[1].image_files] == ["case_001_0000.nii.gz", "case_001_0001.nii.gz"]
    assert cases[1].label_file == folder / "labelsTr" / "case_001.nii.gz"


def test_missing_dataset_json_names_the_file(tmp_path):
    with pytest.raises(DatasetError, match="dataset.json does not exist") as info:
        DatasetInfo.load(tmp_path)
    assert str(tmp_path / "dataset.json") in str(info.value)


def test_invalid_json_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="dataset.json: is not valid JSON"):
        DatasetInfo.load(tmp_path)


@pytest.mark.parametrize("changes, message", [
    ({"file_ending": None}, "required key 'file_ending' is missing"),
    ({"labels": {"background": 0, "tumour": [1, 2]}}, "need 'regions_class_order'"),
    ({"labels": {"background": 0, "tumour": [1, 2]}, "regions_class_order": [1, 2]}, "has 2 entries but"),
    ({"labels": {"background": 0, "tumour": 1, "ignore": 3}}, "must be the highest label value \\(2\\)"),
    ({"labels": {"background": 0, "tumour": 1, "ignore": [2, 3]}}, "must be one integer"),
    ({"labels": {"background": 0, "tumour": "1"}}, "label values must be integers"),
    ({"channel_names": {"1": "CT"}}, "'channel_names' must map"),
    ({"numTraining": "2"}, "'numTraining' must be an integer"),
    ({"file_ending": ".gz"}, "'file_ending' '.gz' is not supported"),
])
def test_bad_dataset_json_says_what_is_wrong(tmp_path, changes, message):
    folder = write_synthetic_dataset(tmp_path / "Dataset001_X")
    _edit_json(folder, **changes)
    with pytest.raises(DatasetError, match=message):
        DatasetInfo.load(folder)


def test_case_without_label_names_the_missing_label(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "Dataset001_X")
    (folder / "labelsTr" / "case_001.nii.gz").unlink()
    with pytest.raises(DatasetError, match="case_001.nii.gz: label of case case_001 is missing"):
        DatasetInfo.load(folder).training_cases()


def test_label_without_images_names_the_label(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "Dataset001_X")
    (folder / "imagesTr" / "case_001_0000.nii.gz").unlink()
    with pytest.raises(DatasetError, match="labelsTr/case_001.nii.gz: label without images"):
        DatasetInfo.load(folder).training_cases()


def test_find_images_groups_channels_by_case(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "Dataset001_X", num_cases=2, num_channels=2)
    (folder / "imagesTr" / "notes.txt").write_text("ignored: other ending")
    grouped = find_images_by_case(folder / "imagesTr", ".nii.gz", 2)
    assert list(grouped) == ["case_000", "case_001"]
    assert [p.name for p in grouped["case_000"]] == ["case_000_0000.nii.gz", "case_000_0001.nii.gz"]


def test_missing_channel_names_the_case_and_the_file(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "Dataset001_X", num_channels=2)
    (folder / "imagesTr" / "case_001_0001.nii.gz").unlink()
    with pytest.raises(DatasetError, match="case case_001 is missing case_001_0001.nii.gz"):
        find_images_by_case(folder / "imagesTr", ".nii.gz", 2)


def test_extra_channel_is_an_error(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "Dataset001_X", num_channels=2)
    with pytest.raises(DatasetError, match="case_000_0001.nii.gz: case case_000 has more channel files"):
        find_images_by_case(folder / "imagesTr", ".nii.gz", 1)


def test_file_without_channel_suffix_is_an_error(tmp_path):
    (tmp_path / "scan.nii.gz").write_bytes(b"")
    with pytest.raises(DatasetError, match="scan.nii.gz: name lacks the 4-digit channel suffix"):
        find_images_by_case(tmp_path, ".nii.gz", 1)


def test_one_colour_png_holds_three_channels(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo_0000.png")
    assert find_images_by_case(tmp_path, ".png", 3) == {"photo": [tmp_path / "photo_0000.png"]}
    # a one-file case is not accepted for two channels: that file would be incomplete
    with pytest.raises(DatasetError, match="photo_0001.png"):
        find_images_by_case(tmp_path, ".png", 2)


def test_hippocampus_fixture_holds_the_shipped_cases(hippocampus_raw_small):
    assert hippocampus_raw_small.name == "Dataset004_Hippocampus"
    info = DatasetInfo.load(hippocampus_raw_small)
    cases = info.training_cases()
    assert [c.case_id for c in cases] == first_hippocampus_case_ids(HIPPOCAMPUS_SMALL_CASES)
    assert info.num_training == len(cases) == 8
    assert info.labels == {"background": 0, "anterior": 1, "posterior": 2}
    assert info.channel_names == {"0": "MRI"}


@pytest.mark.slow
def test_ct_fixture_labels_match_the_label_file(ct_example_raw, ct_example):
    assert ct_example_raw.name == "Dataset005_ExampleCT"
    info = DatasetInfo.load(ct_example_raw)
    (case,) = info.training_cases()
    assert case.case_id == "example" and info.channel_names == {"0": "CT"}
    label, _ = read_label(case.label_file)
    original, _ = read_label(ct_example / "example_seg.nii.gz")
    present = np.unique(label).tolist()
    assert present == info.label_values == list(range(len(np.unique(original))))
    assert list(info.labels)[1:] == [f"class_{i}" for i in range(1, len(present))]
    # renumbering keeps every region: the same voxels are foreground, and each original class maps to one value
    np.testing.assert_array_equal(label > 0, original > 0)
    assert len(set(zip(original.ravel().tolist(), label.ravel().tolist()))) == len(present)
