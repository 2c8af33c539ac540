"""Regions end to end on a BraTS-like MSD task: 4 modalities in 4D NIfTI files, labels 0-3 nested like tumour
sub-regions. convert (MSD 4D) -> the user adds regions to dataset.json -> plan -> train -> predict -> evaluate
-> find_best, with the tiny backbone and a few iterations."""
from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from samunet.core.plans import Plans
from samunet.dataset.convert_msd import convert_msd_task
from samunet.evaluation.probabilities_io import load_probabilities

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SHAPE = (4, 24, 24)  # (z, y, x)
REGIONS = {"background": 0, "whole tumour": [1, 2, 3], "tumour core": [2, 3], "enhancing tumour": 3}
REGION_KEYS = {"(1, 2, 3)", "(2, 3)", "3"}


def nested_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(4 channels (c, z, y, x), labels (z, y, x)): 1 = outer shell, 2 = inner shell, 3 = centre."""
    z, y, x = np.indices(SHAPE)
    centre = rng.integers(9, 15, size=2)
    r = np.hypot(y - centre[0], x - centre[1])
    label = np.select([r < 3, r < 5, r < 8], [3, 2, 1], 0).astype(np.uint8)
    label[0] = 0  # one slice without tumour
    brightness = np.array([[0, 1, 2, 3], [0, 3, 1, 2], [0, 2, 3, 1], [0, 1, 1, 3]], dtype=np.float32)  # channel x label
    channels = np.stack([100 + 40 * brightness[c][label] + rng.normal(0, 5, SHAPE) for c in range(4)])
    return channels.astype(np.float32), label


def write_msd_task(root, num_cases: int = 6):
    task = root / "Task01_BrainTumour"
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    for i in range(num_cases):
        channels, label = nested_case(rng)
        xyzc = np.transpose(channels, (3, 2, 1, 0))  # MSD: 4D (x, y, z, modality)
        nib.save(nib.Nifti1Image(xyzc, affine), str(task / "imagesTr" / f"BRATS_{i:03d}.nii.gz"))
        nib.save(nib.Nifti1Image(np.transpose(label, (2, 1, 0)), affine),
                 str(task / "labelsTr" / f"BRATS_{i:03d}.nii.gz"))
    msd = {"name": "BrainTumour", "licence": "CC-BY-SA 4.0", "reference": "synthetic",
           "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
           "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
           "numTraining": num_cases,
           "training": [{"image": f"./imagesTr/BRATS_{i:03d}.nii.gz", "label": f"./labelsTr/BRATS_{i:03d}.nii.gz"}
                        for i in range(num_cases)], "test": []}
    (task / "dataset.json").write_text(json.dumps(msd))
    return task


def test_brats_like_regions_convert_plan_train_predict_evaluate(tmp_path, monkeypatch, capsys):
    from samunet.evaluation.cli import main as evaluate_main
    from samunet.evaluation.find_best import find_best
    from samunet.inference.cli import main as predict_main
    from samunet.planning.cli import plan_main
    from samunet.training.cli import main as train_main

    roots = {name: tmp_path / name for name in ("raw", "preprocessed", "results")}
    for name, folder in roots.items():
        folder.mkdir()
        monkeypatch.setenv(f"SAMUNET_{name.upper()}", str(folder))

    # convert: 4D files become 4 channel files per case
    raw = convert_msd_task(write_msd_task(tmp_path), roots["raw"], num_processes=1)
    assert (sorted(p.name for p in (raw / "imagesTr").glob("BRATS_000_*"))
            == [f"BRATS_000_{c:04d}.nii.gz" for c in range(4)])
    plan_main(["-d", "1", "--backbone", "tiny", "-np", "1", "--no-preprocess"])  # plain labels first
    # the user turns the labels into regions, as for nnU-Net
    dataset_json = json.loads((raw / "dataset.json").read_text())
    dataset_json["labels"], dataset_json["regions_class_order"] = REGIONS, [1, 2, 3]
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    capsys.readouterr()
    plan_main(["-d", "1", "--backbone", "tiny", "-np", "1", "--no-preprocess"])
    assert "labels / regions_class_order differ from the kept plans" in capsys.readouterr().err

    plan_main(["-d", "1", "--backbone", "tiny", "-np", "1", "--overwrite"])
    plans = Plans.load(roots["preprocessed"] / raw.name / "samunetPlans.json")
    assert plans.labels == REGIONS and plans.regions_class_order == [1, 2, 3]
    assert plans.packing.mode == "mix" and plans.packing.num_channels == 4  # 4 modalities -> SAM's 3 channels
    config = plans.adapter_config("decoder")  # a softmax adapter by default: regions switch it to sigmoids
    assert config.output == "sigmoid_per_label" and config.loss == "dice_bce"

    train_main(["1", "decoder", "0", "--epochs", "1", "--iters-per-epoch", "2", "--batch-size", "2",
                "--disable-tta", "--num-workers", "0", "--device", "cpu"])
    validation = roots["results"] / raw.name / "decoder__samunetPlans" / "fold_0" / "validation"
    summary = json.loads((validation / "summary.json").read_text())
    assert set(summary["mean"]) == REGION_KEYS
    saved = load_probabilities(next(validation.glob("*.npz")))
    assert saved.probabilities.shape[0] == 3 and saved.regions_class_order == [1, 2, 3]  # one sigmoid per region
    assert saved.scheme.regions == [(1, 2, 3), (2, 3), 3]

    # predict two cases and evaluate them against their labels, region by region
    images, references = tmp_path / "images", tmp_path / "references"
    images.mkdir()
    references.mkdir()
    for case in ("BRATS_000", "BRATS_001"):
        for c in range(4):
            shutil.copy(raw / "imagesTr" / f"{case}_{c:04d}.nii.gz", images)
        shutil.copy(raw / "labelsTr" / f"{case}.nii.gz", references)
    predictions = tmp_path / "predictions"
    predict_main(["-i", str(images), "-o", str(predictions), "-d", "1", "-a", "decoder", "-f", "0",
                  "--disable-tta", "--device", "cpu", "--save-probabilities"])
    for case in ("BRATS_000", "BRATS_001"):
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(predictions / f"{case}.nii.gz")))
        assert prediction.shape == SHAPE and set(np.unique(prediction)) <= {0, 1, 2, 3}
        probabilities = load_probabilities(predictions / f"{case}.npz")
        # the label map is the regions thresholded at 0.5, written in regions_class_order (the npz holds float16:
        # voxels whose sigmoid rounds onto 0.5 may differ)
        differs = prediction != probabilities.scheme.segmentation(probabilities.probabilities)
        near_threshold = (np.abs(probabilities.probabilities - 0.5) < 1e-3).any(axis=0)
        assert not (differs & ~near_threshold).any()
    evaluate_main(["-ref", str(references), "-pred", str(predictions), "-d", "1", "-o", str(tmp_path / "summary.json")])
    evaluated = json.loads((tmp_path / "summary.json").read_text())
    assert set(evaluated["mean"]) == REGION_KEYS
    assert set(evaluated["metric_per_case"][0]["metrics"]) == REGION_KEYS

    info = find_best(raw.name, progress=False)
    assert info.adapters == ["decoder"]
    assert set(info.candidates[0].class_dice) == REGION_KEYS
