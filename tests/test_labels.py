"""samunet.core.labels: how labels, regions and the ignore label map to outputs, targets and evaluation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from samunet.core.labels import LabelScheme, label_problems, region_key, region_mask
from samunet.dataset.dataset_json import DatasetInfo
from samunet.dataset.verify import verify_dataset
from tests.fixtures_data import write_synthetic_dataset

BRATS = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}


def test_regions_scheme_matches_nnunet():
    scheme = LabelScheme(BRATS, (1, 2, 3))
    assert scheme.has_regions and scheme.ignore_label is None
    assert scheme.regions == [(1, 2, 3), (2, 3), 3]
    assert [region_key(r) for r in scheme.evaluated()] == ["(1, 2, 3)", "(2, 3)", "3"]
    assert scheme.num_outputs == 3 and scheme.num_classes == 4
    assert scheme.label_values == [0, 1, 2, 3]
    assert scheme.channel_names() == ["whole", "core", "enhancing"]
    assert scheme.name_of("(2, 3)") == "core" and scheme.name_of("3") == "enhancing"


def test_region_segmentation_writes_in_regions_class_order():
    scheme = LabelScheme(BRATS, (1, 2, 3))
    # pixel 0: nothing; 1: whole only; 2: whole + core; 3: all; 4: enhancing alone (later region overwrites)
    probs = np.array([[0.1, 0.9, 0.9, 0.9, 0.2],
                      [0.1, 0.2, 0.8, 0.9, 0.1],
                      [0.1, 0.3, 0.4, 0.7, 0.6]], dtype=np.float32)
    assert scheme.segmentation(probs).tolist() == [0, 1, 2, 3, 3]
    # the order decides who wins: writing enhancing first lets whole overwrite it
    reversed_order = LabelScheme({"background": 0, "enhancing": 3, "core": [2, 3], "whole": [1, 2, 3]}, (3, 2, 1))
    assert reversed_order.segmentation(probs[::-1]).tolist() == [0, 1, 1, 1, 3]


def test_region_masks_are_unions():
    seg = np.array([0, 1, 2, 3, 4])
    assert region_mask(seg, (2, 3)).tolist() == [False, False, True, True, False]
    assert region_mask(seg, 3).tolist() == [False, False, False, True, False]


def test_plain_labels_with_ignore():
    scheme = LabelScheme({"background": 0, "a": 1, "b": 2, "ignore": 3})
    assert not scheme.has_regions and scheme.ignore_label == 3
    assert scheme.label_values == [0, 1, 2] and scheme.values_in_files == [0, 1, 2, 3]
    assert scheme.num_classes == 3 and scheme.evaluated() == [1, 2]
    assert scheme.target_lookup().tolist() == [0, 1, 2, 3] and scheme.ignore_target == 3
    probs = np.array([[0.8, 0.1], [0.1, 0.2], [0.1, 0.7]])
    assert scheme.segmentation(probs).tolist() == [0, 2]  # ignore is never predicted


@pytest.mark.parametrize("labels, order, phrase", [
    ({"background": 0, "a": 1, "ignore": 5}, None, "must be the highest label value (2)"),
    ({"background": 0, "a": 1, "ignore": 1}, None, "must be the highest label value (2)"),
    ({"background": 0, "w": [1, 2], "c": 2}, None, "need 'regions_class_order'"),
    ({"background": 0, "w": [1, 2], "c": 2}, [1], "has 1 entries"),
    ({"background": 0, "w": [], "c": 2}, None, "non-empty list"),
    ({"a": 1}, None, "\"background\": 0"),
])
def test_bad_labels_are_named(labels, order, phrase):
    problems = label_problems(labels, order)
    assert any(phrase in p for p in problems), problems


def test_region_dataset_passes_verification(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "Dataset001_R", labels={"background": 0, "a": 1, "b": 2})
    data = json.loads((folder / "dataset.json").read_text())
    data["labels"] = {"background": 0, "both": [1, 2], "b": 2}
    data["regions_class_order"] = [1, 2]
    (folder / "dataset.json").write_text(json.dumps(data))
    assert verify_dataset(folder, num_processes=1) == []
    info = DatasetInfo.load(folder)
    assert info.label_scheme.regions == [(1, 2), 2] and info.regions_class_order == [1, 2]


def test_ignore_value_in_label_files_passes_verification(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "Dataset001_I", labels={"background": 0, "a": 1, "ignore": 2})
    assert verify_dataset(folder, num_processes=1) == []


def test_plans_with_regions_round_trip_and_build_region_adapters(tmp_path):
    import torch

    from samunet.adapters import build_adapter
    from samunet.core.plans import Plans, PlansError
    from tests.fixtures_models import make_tiny_plans

    plans = make_tiny_plans(packing_mode="mix", num_channels=4)
    plans.labels, plans.regions_class_order = dict(BRATS), [1, 2, 3]
    plans.save(tmp_path / "plans.json")
    loaded = Plans.load(tmp_path / "plans.json")
    assert loaded.labels == BRATS and loaded.regions_class_order == [1, 2, 3]
    assert loaded.num_classes == 4 and loaded.label_scheme.regions == [(1, 2, 3), (2, 3), 3]
    adapter = build_adapter("ssam", loaded, pretrained=False)
    logits = adapter(torch.rand(2, 4, 64, 64))
    assert logits.shape == (2, 3, 64, 64)  # one sigmoid per region
    torch.testing.assert_close(adapter.probabilities(logits), torch.sigmoid(logits))  # independent, not normalised
    assert adapter.identity["class_names"] == ["whole", "core", "enhancing"]
    with pytest.raises(PlansError, match="regions need one sigmoid per region"):
        build_adapter("decoder", loaded, pretrained=False)  # still planned as softmax: a clear error


def test_plans_without_regions_keep_their_hash():
    import hashlib

    from tests.fixtures_models import make_tiny_plans

    plans = make_tiny_plans()
    before_the_field = {k: v for k, v in plans.to_dict().items()
                        if k not in ("training", "adapters", "edited_by_user", "regions_class_order", "cost")}
    # nor do the fields added since (how the encoder runs, cached-embedding augmentation and variants)
    for section, name in (("model", "encoder_runtime"), ("model", "encoder_runtime_reason"),
                          ("augmentation", "cached_augmentation"), ("augmentation", "cached_variants")):
        del before_the_field[section][name]
    assert plans.sha256() == hashlib.sha256(json.dumps(before_the_field, sort_keys=True).encode()).hexdigest()
    plans.labels, plans.regions_class_order = dict(BRATS), [1, 2, 3]
    with_regions = plans.sha256()
    plans.regions_class_order = [3, 2, 1]
    assert plans.sha256() != with_regions  # the order changes the label maps: it is part of the hash


def test_ensembling_region_probabilities_thresholds_the_mean_in_class_order(tmp_path):
    import SimpleITK as sitk

    from samunet.dataset.image_io import Geometry
    from samunet.evaluation.probabilities_io import load_probabilities, save_probabilities
    from samunet.inference.ensemble_cli import ensemble_folders

    shape = (2, 3, 4)
    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3).ravel(), shape)
    rng = np.random.default_rng(0)
    a, b = rng.random((3, *shape)).astype(np.float32), rng.random((3, *shape)).astype(np.float32)
    save_probabilities(a, geometry, BRATS, tmp_path / "A" / "c.npz", [1, 2, 3])
    save_probabilities(b, geometry, BRATS, tmp_path / "B" / "c.npz", [1, 2, 3])
    with pytest.raises(ValueError, match="3 probability channels for 4 outputs"):
        save_probabilities(a, geometry, {"background": 0, "a": 1, "b": 2, "c": 3}, tmp_path / "C" / "c.npz")
    ensemble_folders([tmp_path / "A", tmp_path / "B"], tmp_path / "out", progress=False)
    stored = [load_probabilities(tmp_path / f / "c.npz") for f in ("A", "B")]
    assert stored[0].regions_class_order == [1, 2, 3] and stored[0].labels == BRATS
    mean = (stored[0].probabilities + stored[1].probabilities) / 2
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "c.nii.gz")))
    np.testing.assert_array_equal(written, LabelScheme(BRATS, (1, 2, 3)).segmentation(mean))
    assert set(np.unique(written)) > {0}  # not a vacuous all-background map
