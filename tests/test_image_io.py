"""image_io: geometry survives a round trip in every volume format; 2D images become (1, y, x) volumes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from samunet.dataset.image_io import (
    SPACING_2D,
    SUPPORTED_FILE_ENDINGS,
    Geometry,
    GeometryMismatchError,
    ImageReadError,
    file_ending_of,
    read_case_images,
    read_image,
    read_image_channels,
    read_label,
    write_image,
    write_segmentation,
)


def _rotation() -> np.ndarray:
    a = np.deg2rad(20)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


GEOMETRY = Geometry(spacing=(2.5, 0.7, 0.9), origin=(10.0, -20.0, 30.5), direction=_rotation().ravel(),
                    shape=(3, 5, 6))


def _volume(dtype=np.float32) -> np.ndarray:
    return (np.arange(np.prod(GEOMETRY.shape)).reshape(GEOMETRY.shape) * 1.5).astype(dtype)


def _no_temporary_files(folder) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_volume_round_trip_keeps_values_and_geometry(tmp_path, ending):
    path = tmp_path / f"image{ending}"
    write_image(_volume(), GEOMETRY, path)
    array, geometry = read_image(path)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, _volume())
    assert geometry.differences(GEOMETRY) == []
    # spacing is stored (z, y, x) like the array: SimpleITK itself reports it (x, y, z)
    assert sitk.ReadImage(str(path)).GetSpacing() == pytest.approx((0.9, 0.7, 2.5))
    assert _no_temporary_files(tmp_path)


def test_integer_volume_keeps_its_dtype(tmp_path):
    write_image(_volume(np.int16), GEOMETRY, tmp_path / "ct.nii.gz")
    array, _ = read_image(tmp_path / "ct.nii.gz")
    assert array.dtype == np.int16


def test_geometry_json_round_trip():
    text = json.dumps(GEOMETRY.to_json())
    assert Geometry.from_json(json.loads(text)) == GEOMETRY


def test_geometry_differences_name_what_differs():
    moved = Geometry(GEOMETRY.spacing, (10.0, -20.0, 31.5), GEOMETRY.direction, (3, 5, 7))
    diffs = moved.differences(GEOMETRY)
    assert len(diffs) == 2 and diffs[0].startswith("shape") and diffs[1].startswith("origin")
    nearly = Geometry((2.5 * (1 + 1e-6), 0.7, 0.9), GEOMETRY.origin, GEOMETRY.direction, GEOMETRY.shape)
    assert nearly.differences(GEOMETRY) == []


def test_segmentation_is_uint8_on_exactly_the_given_geometry(tmp_path):
    seg = np.random.default_rng(0).integers(0, 3, GEOMETRY.shape)
    write_segmentation(seg, GEOMETRY, tmp_path / "seg.nii.gz")
    image = sitk.ReadImage(str(tmp_path / "seg.nii.gz"))
    assert image.GetPixelID() == sitk.sitkUInt8
    label, geometry = read_label(tmp_path / "seg.nii.gz")
    np.testing.assert_array_equal(label, seg)
    assert geometry.differences(GEOMETRY) == []


def test_segmentation_above_255_is_uint16(tmp_path):
    seg = np.zeros(GEOMETRY.shape, dtype=np.int64)
    seg[0, 0, 0] = 300
    write_segmentation(seg, GEOMETRY, tmp_path / "seg.nrrd")
    assert sitk.ReadImage(str(tmp_path / "seg.nrrd")).GetPixelID() == sitk.sitkUInt16
    assert read_label(tmp_path / "seg.nrrd")[0][0, 0, 0] == 300


@pytest.mark.parametrize("name, array, message", [
    ("seg.nii.gz", np.zeros((3, 5, 5)), "does not match the geometry"),
    ("seg.nii.gz", -np.ones((3, 5, 6)), r"\[0, 65535\]"),
    ("seg.jpg", np.zeros((3, 5, 6)), "lossy"),
    ("seg.txt", np.zeros((3, 5, 6)), "unsupported file ending"),
])
def test_bad_segmentation_write_names_the_file_and_leaves_nothing(tmp_path, name, array, message):
    with pytest.raises(ValueError, match=message) as info:
        write_segmentation(array, GEOMETRY, tmp_path / name)
    assert name in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_grey_png_is_a_single_slice_volume(tmp_path):
    grey = np.random.default_rng(1).integers(0, 255, (7, 9), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "case_0000.png")
    array, geometry = read_image(tmp_path / "case_0000.png")
    np.testing.assert_array_equal(array, grey[None])
    assert geometry.spacing == SPACING_2D and geometry.shape == (1, 7, 9)
    stacked, _ = read_case_images([tmp_path / "case_0000.png"])
    assert stacked.shape == (1, 1, 7, 9) and stacked.dtype == np.float32


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_png_reads_as_three_channels(tmp_path, mode):
    rgb = np.random.default_rng(2).integers(0, 255, (7, 9, 3), dtype=np.uint8)
    pixels = rgb if mode == "RGB" else np.concatenate([rgb, np.full((7, 9, 1), 255, np.uint8)], axis=-1)
    Image.fromarray(pixels, mode).save(tmp_path / "case_0000.png")
    array, geometry = read_image(tmp_path / "case_0000.png")
    assert array.shape == (3, 1, 7, 9)
    np.testing.assert_array_equal(array[:, 0], np.moveaxis(rgb, -1, 0))
    stacked, _ = read_case_images([tmp_path / "case_0000.png"])
    assert stacked.shape == (3, 1, 7, 9)


def test_png_segmentation_round_trip(tmp_path):
    geometry = Geometry(SPACING_2D, (0, 0, 0), np.eye(3).ravel(), (1, 4, 6))
    seg = np.random.default_rng(3).integers(0, 4, (1, 4, 6))
    write_segmentation(seg, geometry, tmp_path / "case.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "case.png")), seg[0])
    label, read_geometry = read_label(tmp_path / "case.png")
    np.testing.assert_array_equal(label, seg)
    assert read_geometry == geometry


def test_rgb_image_write_round_trip(tmp_path):
    geometry = Geometry(SPACING_2D, (0, 0, 0), np.eye(3).ravel(), (1, 4, 6))
    rgb = np.random.default_rng(4).integers(0, 255, (3, 1, 4, 6)).astype(np.uint8)
    write_image(rgb, geometry, tmp_path / "case_0000.png")
    np.testing.assert_array_equal(read_image(tmp_path / "case_0000.png")[0], rgb)


def test_float_data_is_refused_for_png(tmp_path):
    geometry = Geometry(SPACING_2D, (0, 0, 0), np.eye(3).ravel(), (1, 4, 6))
    with pytest.raises(ValueError, match="uint8/uint16"):
        write_image(np.zeros((1, 4, 6), np.float32), geometry, tmp_path / "x.png")


def test_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"this is not an image")
    with pytest.raises(ImageReadError, match="broken.nii.gz: cannot be read"):
        read_image(path)


@pytest.mark.parametrize("name, message",
                         [("absent.nii.gz", "does not exist"), ("notes.txt", "unsupported file ending")])
def test_missing_or_unsupported_file_names_the_file(tmp_path, name, message):
    path = tmp_path / name
    if name.endswith(".txt"):
        path.write_text("x")
    with pytest.raises(ImageReadError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_channels_on_different_grids_are_an_error_naming_both(tmp_path):
    write_image(_volume(), GEOMETRY, tmp_path / "a_0000.nii.gz")
    shifted = Geometry(GEOMETRY.spacing, (0.0, 0.0, 0.0), GEOMETRY.direction, GEOMETRY.shape)
    write_image(_volume(), shifted, tmp_path / "a_0001.nii.gz")
    with pytest.raises(GeometryMismatchError, match="origin") as info:
        read_case_images([tmp_path / "a_0000.nii.gz", tmp_path / "a_0001.nii.gz"])
    assert "a_0000.nii.gz" in str(info.value) and "a_0001.nii.gz" in str(info.value)


def test_case_channels_stack_in_file_order(tmp_path):
    write_image(_volume(), GEOMETRY, tmp_path / "a_0000.nii.gz")
    write_image(_volume(np.uint8) * 0 + 7, GEOMETRY, tmp_path / "a_0001.nii.gz")
    stacked, geometry = read_case_images([tmp_path / "a_0000.nii.gz", tmp_path / "a_0001.nii.gz"])
    assert stacked.shape == (2, *GEOMETRY.shape) and stacked.dtype == np.float32
    np.testing.assert_array_equal(stacked[0], _volume())
    assert np.all(stacked[1] == 7)
    assert geometry.differences(GEOMETRY) == []


def _write_4d(path, channels: np.ndarray) -> None:
    image = sitk.JoinSeries([sitk.GetImageFromArray(c) for c in channels])  # (C, z, y, x) -> a 4D image
    image.SetSpacing((0.9, 0.7, 2.5, 1.0))
    image.SetOrigin((10.0, -20.0, 30.5, 0.0))
    sitk.WriteImage(image, str(path))


def test_4d_file_is_refused_in_a_dataset_but_split_for_conversion(tmp_path):
    channels = np.stack([_volume(), _volume() + 1])
    _write_4d(tmp_path / "multi.nii.gz", channels)
    with pytest.raises(ImageReadError, match="2 channels in one 4D file"):
        read_image(tmp_path / "multi.nii.gz")
    array, geometry = read_image_channels(tmp_path / "multi.nii.gz", allow_multichannel_volume=True)
    np.testing.assert_array_equal(array, channels)
    assert geometry.shape == GEOMETRY.shape
    assert geometry.spacing == pytest.approx(GEOMETRY.spacing) and geometry.origin == pytest.approx(GEOMETRY.origin)
    assert geometry.direction == tuple(np.eye(3).ravel())  # the 3x3 part of the 4x4 direction


def test_3d_tif_is_refused(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(_volume()), str(tmp_path / "stack.tif"))
    with pytest.raises(ImageReadError, match="stack.tif: is a 3D image"):
        read_image(tmp_path / "stack.tif")


def test_label_with_fractions_is_an_error_naming_the_file(tmp_path):
    write_image(_volume() / 4, GEOMETRY, tmp_path / "label.nii.gz")
    with pytest.raises(ImageReadError, match="label.nii.gz: label values must be integers"):
        read_label(tmp_path / "label.nii.gz")


def test_float_label_with_whole_values_becomes_uint8(tmp_path):
    write_image(np.full(GEOMETRY.shape, 2.0, np.float32), GEOMETRY, tmp_path / "label.nii.gz")
    label, _ = read_label(tmp_path / "label.nii.gz")
    assert label.dtype == np.uint8 and np.all(label == 2)


def test_file_ending_of_prefers_the_long_ending():
    assert file_ending_of("a/case_0000.nii.gz") == ".nii.gz"
    assert file_ending_of("CASE.PNG") == ".png"
    assert file_ending_of("case.gz") == ""
    assert set(SUPPORTED_FILE_ENDINGS) >= {".nii.gz", ".nrrd", ".mha", ".png", ".tif"}


def test_real_hippocampus_dtypes_are_kept(hippocampus_task):
    uint8_image, geometry = read_image(hippocampus_task / "imagesTr" / "hippocampus_001.nii.gz")
    float_image, _ = read_image(hippocampus_task / "imagesTr" / "hippocampus_003.nii.gz")
    assert uint8_image.dtype == np.uint8 and float_image.dtype == np.float32
    assert geometry.spacing == (1.0, 1.0, 1.0) and geometry.shape == uint8_image.shape


def test_palette_png_label_reads_as_its_indices(tmp_path):
    indices = np.zeros((5, 6), np.uint8)
    indices[1, 1], indices[2, 2] = 1, 2
    image = Image.fromarray(indices, "L").convert("P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)  # VOC-style colours
    image.save(tmp_path / "case.png")
    label, geometry = read_label(tmp_path / "case.png")
    np.testing.assert_array_equal(label, indices[None])
    assert geometry.shape == (1, 5, 6) and geometry.spacing == SPACING_2D


def test_rgb_label_is_an_error_that_says_how_to_fix_it(tmp_path):
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "case.png")
    with pytest.raises(ImageReadError, match="case.png: a label map must have one channel, found 3"):
        read_label(tmp_path / "case.png")
