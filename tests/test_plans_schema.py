"""Plans: typed dataclasses with a JSON round-trip, a schema version and errors that name the field."""
from __future__ import annotations

import json

import pytest

from samunet.core.adapter_defaults import default_adapter_config
from samunet.core.plans import (
    AugmentationPlan, ChannelNormalization, ChannelPackingPlan, CropPlan, ModelPlan, Plans,
    ResamplingPlan, SlicingPlan, TrainingPlan,
)
from samunet.core.records import SchemaError


def make_plans() -> Plans:
    return Plans(
        dataset_name="Dataset004_Hippocampus", plans_name="samunetPlans",
        labels={"background": 0, "anterior": 1, "posterior": 2}, file_ending=".nii.gz",
        slicing=SlicingPlan(transpose=[0, 1, 2], mode="all", background_fraction=1.0, reason="r"),
        crop=CropPlan(crop_to_nonzero=True, patch_size=[48, 64]),
        resampling=ResamplingPlan(target_spacing=[1.0, 1.0, 1.0]),
        normalization=[ChannelNormalization(channel=0, name="MRI", scheme="zscore")],
        packing=ChannelPackingPlan(mode="repeat", num_channels=1),
        model=ModelPlan(backbone="tiny", input_size=128, adapter="ssam"),
        adapters={"ssam": default_adapter_config("ssam")},
        augmentation=AugmentationPlan(),
        training=TrainingPlan(batch_size=4, epochs=10, iterations_per_epoch=50, validate_every=2,
                              foreground_oversample=0.33, num_workers=2, device="cpu", precision="bf16"),
    )


def test_round_trip_through_json_file(tmp_path):
    plans = make_plans()
    path = tmp_path / "plans.json"
    plans.save(path)
    loaded = Plans.load(path)
    assert loaded == plans
    assert loaded.num_classes == 3
    assert loaded.foreground_labels == {"anterior": 1, "posterior": 2}
    assert not list(tmp_path.glob(".*tmp*")), "atomic write left a temporary file"


def test_user_edit_of_a_field_is_kept_and_typed(tmp_path):
    path = tmp_path / "plans.json"
    make_plans().save(path)
    data = json.loads(path.read_text())
    data["training"]["epochs"] = 99
    data["adapters"]["ssam"]["learning_rate"] = 1  # an int where a float is expected is fine in JSON
    path.write_text(json.dumps(data))
    loaded = Plans.load(path)
    assert loaded.training.epochs == 99
    assert isinstance(loaded.adapters["ssam"].learning_rate, float)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["training"].update(epochs="ten"), "training.epochs"),
    (lambda d: d["crop"].update(patch_sise=[1, 2]), "patch_sise"),
    (lambda d: d.pop("model"), "model"),
    (lambda d: d.update(schema_version=0), "schema_version"),
])
def test_invalid_plans_name_the_file_and_field(tmp_path, edit, message):
    data = make_plans().to_dict()
    edit(data)
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaError) as info:
        Plans.load(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_sha256_tracks_model_relevant_decisions_only():
    a, b = make_plans(), make_plans()
    b.training.epochs = 1  # training schedule does not change what the model sees
    assert a.sha256() == b.sha256()
    b.crop.patch_size = [64, 64]
    assert a.sha256() != b.sha256()
