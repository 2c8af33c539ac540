"""verify_dataset: one test per kind of problem, each checking that the offending file is named."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from samunet.dataset.image_io import Geometry, write_image, write_segmentation
from samunet.dataset.verify import Problem, VerificationError, check_dataset, verify_dataset
from tests.fixtures_data import write_synthetic_dataset

SHAPE = (4, 8, 8)
GRID = Geometry((2.0, 0.8, 0.8), (0.0, 0.0, 0.0), np.eye(3).ravel(), SHAPE)


@pytest.fixture
def dataset(tmp_path):
    return write_synthetic_dataset(tmp_path / "Dataset001_Synth", num_cases=2, shape=SHAPE)


def _problems(folder) -> list[Problem]:
    return verify_dataset(folder, num_processes=1)


def _only_problem(folder, path, *phrases) -> Problem:
    problems = _problems(folder)
    assert len(problems) == 1, problems
    (problem,) = problems
    assert problem.file == str(path)
    for phrase in phrases:
        assert phrase in problem.message
    assert str(path) in str(problem)
    return problem


def _edit_json(folder, **changes):
    data = json.loads((folder / "dataset.json").read_text())
    data.update({k: v for k, v in changes.items() if v is not None})
    for key in [k for k, v in changes.items() if v is None]:
        del data[key]
    (folder / "dataset.json").write_text(json.dumps(data))


def _image(folder, case="case_000", channel=0):
    return folder / "imagesTr" / f"{case}_{channel:04d}.nii.gz"


def _label(folder, case="case_000"):
    return folder / "labelsTr" / f"{case}.nii.gz"


# ---- valid datasets ------------------------------------------------------------------------------

def test_valid_synthetic_datasets_have_no_problems(tmp_path):
    assert _problems(write_synthetic_dataset(tmp_path / "a", num_channels=2)) == []
    assert _problems(write_synthetic_dataset(tmp_path / "b", file_ending=".png")) == []
    check_dataset(write_synthetic_dataset(tmp_path / "c", file_ending=".nrrd"), num_processes=1)


def test_one_colour_png_per_case_is_valid_for_rgb_channels(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "d", file_ending=".png")
    for case in ("case_000", "case_001"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "imagesTr" / f"{case}_0000.png")
    _edit_json(folder, channel_names={"0": "R", "1": "G", "2": "B"})
    assert _problems(folder) == []


def test_real_hippocampus_is_valid_with_worker_processes(hippocampus_raw_small):
    assert verify_dataset(hippocampus_raw_small, num_processes=2) == []


@pytest.mark.slow
def test_real_ct_example_is_valid(ct_example_raw):
    assert verify_dataset(ct_example_raw, num_processes=1) == []


# ---- dataset.json --------------------------------------------------------------------------------

def test_missing_dataset_json(dataset):
    (dataset / "dataset.json").unlink()
    _only_problem(dataset, dataset / "dataset.json", "does not exist")


def test_dataset_json_that_does_not_parse(dataset):
    (dataset / "dataset.json").write_text('{"labels": ')
    _only_problem(dataset, dataset / "dataset.json", "not valid JSON")


def test_dataset_json_missing_a_required_key(dataset):
    _edit_json(dataset, numTraining=None)
    _only_problem(dataset, dataset / "dataset.json", "required key 'numTraining' is missing")


def test_label_values_must_be_consecutive(dataset):
    _edit_json(dataset, labels={"background": 0, "a": 1, "b": 2, "c": 5})
    _only_problem(dataset, dataset / "dataset.json", "consecutive")


def test_path_in_dataset_json_leaving_the_folder(dataset):
    _edit_json(dataset, training=[{"image": "./imagesTr/../../other/x.nii.gz", "label": "./labelsTr/x.nii.gz"}])
    _only_problem(dataset, dataset / "dataset.json", "training[0].image", "points outside the dataset folder")


def test_num_training_differs_from_the_cases_found(dataset):
    _edit_json(dataset, numTraining=5)
    _only_problem(dataset, dataset / "dataset.json", "numTraining is 5 but 2")


# ---- files and names -----------------------------------------------------------------------------

def test_missing_images_folder(dataset):
    shutil.rmtree(dataset / "imagesTr")
    problems = _problems(dataset)
    assert Problem(str(dataset / "imagesTr"), "folder does not exist") in problems


def test_case_missing_a_channel(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "x", num_channels=2)
    _image(folder, "case_001", 1).unlink()
    _only_problem(folder, _image(folder, "case_001", 1), "channel file of case case_001 is missing")


def test_extra_channel_file(dataset):
    shutil.copy(_image(dataset), _image(dataset, channel=1))
    _only_problem(dataset, _image(dataset, channel=1), "extra channel file", "1 channel(s)")


def test_image_without_channel_suffix(dataset):
    shutil.copy(_image(dataset), dataset / "imagesTr" / "case_000.nii.gz")
    _only_problem(dataset, dataset / "imagesTr" / "case_000.nii.gz", "lacks the 4-digit channel suffix")


def test_stray_file_with_another_ending_in_images(dataset):
    stray = dataset / "imagesTr" / "case_002_0000.nrrd"
    write_image(np.zeros(SHAPE, np.float32), GRID, stray)
    _only_problem(dataset, stray, "stray file", "'.nii.gz'")


def test_stray_file_with_another_ending_in_labels(dataset):
    stray = dataset / "labelsTr" / "case_000.png"
    stray.write_bytes(b"")
    _only_problem(dataset, stray, "stray file")


def test_stray_file_in_test_images(dataset):
    (dataset / "imagesTs").mkdir()
    stray = dataset / "imagesTs" / "scan.mha"
    stray.write_bytes(b"")
    _only_problem(dataset, stray, "stray file")


def test_case_without_label(dataset):
    _label(dataset, "case_001").unlink()
    _edit_json(dataset, numTraining=2)
    _only_problem(dataset, _label(dataset, "case_001"), "label of case case_001 is missing")


def test_label_without_images(dataset):
    _image(dataset, "case_001").unlink()
    _only_problem(dataset, _label(dataset, "case_001"), "label without images", "case_001_0000.nii.gz")


# ---- contents ------------------------------------------------------------------------------------

def test_unreadable_image(dataset):
    _image(dataset).write_bytes(b"garbage")
    _only_problem(dataset, _image(dataset), "cannot be read")


def test_unreadable_label(dataset):
    _label(dataset).write_bytes(b"garbage")
    _only_problem(dataset, _label(dataset), "cannot be read")


@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (np.inf, "Inf")])
def test_image_with_nan_or_inf(dataset, value, kind):
    image = np.zeros(SHAPE, np.float32)
    image[1, 2, 3] = value
    write_image(image, GRID, _image(dataset))
    _only_problem(dataset, _image(dataset), "1 NaN/Inf value(s)")


@pytest.mark.parametrize("field, value, phrase", [
    ("shape", (4, 8, 9), "shape"),
    ("spacing", (2.0, 0.8, 0.9), "spacing"),
    ("origin", (0.0, 0.0, 1.0), "origin"),
    ("direction", (-1.0, 0, 0, 0, 1, 0, 0, 0, 1), "direction"),
])
def test_label_on_another_grid_than_its_image(dataset, field, value, phrase):
    grid = Geometry(**{**GRID.to_json(), field: value})
    write_segmentation(np.zeros(grid.shape, np.uint8), grid, _label(dataset))
    _only_problem(dataset, _label(dataset), "voxel grid differs from image case_000_0000.nii.gz", phrase)


def test_tiny_geometry_differences_are_tolerated(dataset):
    nearly = Geometry((2.0 * (1 + 2e-5), 0.8, 0.8), (1e-5, 0.0, 0.0), GRID.direction, SHAPE)
    write_segmentation(np.zeros(SHAPE, np.uint8), nearly, _label(dataset))
    assert _problems(dataset) == []


def test_channels_on_different_grids(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "x", num_channels=2)
    moved = Geometry(GRID.spacing, (5.0, 0.0, 0.0), GRID.direction, SHAPE)
    write_image(np.zeros(SHAPE, np.float32), moved, _image(folder, channel=1))
    problems = _problems(folder)
    # the label matches channel 0, so only the moved channel is named
    assert [p.file for p in problems] == [str(_image(folder, channel=1))]
    assert "origin" in problems[0].message and "case_000_0000.nii.gz" in problems[0].message


def test_label_with_non_integer_values(dataset):
    write_image(np.full(SHAPE, 0.5, np.float32), GRID, _label(dataset))
    _only_problem(dataset, _label(dataset), "label values must be integers")


def test_label_value_not_listed_in_dataset_json(dataset):
    seg = np.zeros(SHAPE, np.uint8)
    seg[0, 0, 0] = 7
    write_segmentation(seg, GRID, _label(dataset))
    _only_problem(dataset, _label(dataset), "label value(s) [7] are not listed")


def test_2d_volume_in_a_3d_dataset(dataset):
    flat = sitk.GetImageFromArray(np.zeros(SHAPE[1:], np.float32))
    sitk.WriteImage(flat, str(_image(dataset)))
    _only_problem(dataset, _image(dataset), "is a 2D image", "expected a 3D volume")


def test_4d_file_in_images(dataset):
    four_d = sitk.JoinSeries([sitk.GetImageFromArray(np.zeros(SHAPE, np.float32))] * 2)
    sitk.WriteImage(four_d, str(_image(dataset)))
    _only_problem(dataset, _image(dataset), "2 channels in one 4D file")


def test_colour_image_in_a_one_channel_dataset(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "x", file_ending=".png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "imagesTr" / "case_001_0000.png")
    _only_problem(folder, folder / "imagesTr" / "case_001_0000.png", "case has 3 channel(s)",
                  "channel_names lists 1")


# ---- reporting -----------------------------------------------------------------------------------

def test_verification_error_lists_every_problem(dataset):
    _image(dataset, "case_001").write_bytes(b"garbage")
    seg = np.full(SHAPE, 9, np.uint8)
    write_segmentation(seg, GRID, _label(dataset))
    (dataset / "labelsTr" / "notes.txt").write_text("")
    with pytest.raises(VerificationError) as info:
        check_dataset(dataset, num_processes=2)
    message = str(info.value)
    assert "3 problem(s)" in message and len(info.value.problems) == 3
    for path in (_image(dataset, "case_001"), _label(dataset), dataset / "labelsTr" / "notes.txt"):
        assert str(path) in message
