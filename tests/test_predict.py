"""samunet_predict end to end on real Hippocampus cases with tiny adapters saved as fold checkpoints."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from samunet.adapters import build_adapter
from samunet.adapters.checkpoint import load_adapter_checkpoint, save_adapter_checkpoint
from samunet.evaluation.cli import main as evaluate_main
from samunet.evaluation.inference_information import InferenceInformation
from samunet.evaluation.metrics import compute_metrics
from samunet.evaluation.postprocessing import PostprocessingStep, apply_postprocessing
from samunet.evaluation.smoothing import SmoothingTrial, smooth_probabilities
from samunet.inference.cli import main as predict_main
from samunet.evaluation.probabilities_io import load_probabilities
from samunet.preprocessing.padding import pad_in_plane
from samunet.core.plans import Plans
from samunet.preprocessing.packing import pack_slices, to_unit_range

pytestmark = pytest.mark.usefixtures("single_torch_thread")

ADAPTER = "decoder"  # the tiny plans' recommendation: frozen encoder, cheap to train briefly
TRAIN_STEPS = 60
PREDICT_CASES = 2  # the last cases of the 8-case fixture; the others train fold 0


@dataclass
class TrainedSetup:
    raw: Path
    preprocessed: Path
    results: Path
    dataset_name: str
    input_folder: Path  # one unseen case (most tests)
    pair_folder: Path  # two unseen cases (round trip)
    label_folder: Path
    predict_cases: list[str]

    def env(self, monkeypatch):
        monkeypatch.setenv("SAMUNET_RAW", str(self.raw))
        monkeypatch.setenv("SAMUNET_PREPROCESSED", str(self.preprocessed))
        monkeypatch.setenv("SAMUNET_RESULTS", str(self.results))


def _training_slices(plans, cache: Path, case_ids: list[str]):
    """Foreground slices packed, padded and scaled exactly as training and prediction do."""
    patch = tuple(plans.crop.patch_size)
    images, labels = [], []
    for case in case_ids:
        image = np.load(cache / f"{case}_image.npy")
        seg = np.load(cache / f"{case}_seg.npy")
        padded, _ = pad_in_plane(image, patch)
        padded_seg, _ = pad_in_plane(seg[None].astype(np.float32), patch)
        for s in np.flatnonzero(seg.reshape(seg.shape[0], -1).any(axis=1)):
            x = to_unit_range(torch.from_numpy(pack_slices(padded, [s], plans)))[0]
            images.append(x[:, : patch[0], : patch[1]])
            labels.append(torch.from_numpy(padded_seg[0, s, : patch[0], : patch[1]]).long())
    return torch.stack(images), torch.stack(labels)


def train_briefly(adapter, images, labels, steps: int, seed: int) -> None:
    """A few AdamW steps of weighted cross-entropy (independent of samunet.training)."""
    generator = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(adapter.trainable_parameters(), lr=1e-2)
    weight = torch.tensor([0.2] + [1.0] * (adapter.num_classes - 1))
    adapter.train()
    with torch.no_grad():  # frozen encoder: encode every slice once
        embeddings = adapter.encode(images)
    for _ in range(steps):
        idx = torch.from_numpy(generator.integers(len(images), size=8))
        logits = adapter.forward_from_embeddings(embeddings[idx], images[idx])
        loss = torch.nn.functional.cross_entropy(logits, labels[idx], weight=weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()



@pytest.fixture(scope="module")
def trained(single_torch_thread, hippocampus_preprocessed, tmp_path_factory) -> TrainedSetup:
    """Results folder with ``decoder`` fold_0 (briefly trained) and fold_1 (other random decoder weights).

    The tiny backbone's frozen weights are the same in every build (fixed-seed random init)."""
    data = hippocampus_preprocessed
    root = tmp_path_factory.mktemp("predict")
    model_folder = root / "results" / data.dataset_name / f"{ADAPTER}__{data.plans.plans_name}"
    model_folder.mkdir(parents=True)
    data.plans.save(model_folder / "plans.json")
    shutil.copyfile(data.dataset_folder / "dataset.json", model_folder / "dataset.json")
    cases = data.case_ids
    train_cases, predict_cases = cases[:-PREDICT_CASES], cases[-PREDICT_CASES:]
    images, labels = _training_slices(data.plans, data.cache_folder, train_cases)
    for fold in (0, 1):
        torch.manual_seed(100 + fold)
        adapter = build_adapter(ADAPTER, data.plans)
        if fold == 0:
            train_briefly(adapter, images, labels, TRAIN_STEPS, seed=fold)
        save_adapter_checkpoint(adapter, model_folder / f"fold_{fold}" / "checkpoint_final", {"fold": fold})
    raw_dataset = data.raw / data.dataset_name
    input_folder, pair_folder, label_folder = root / "input", root / "pair", root / "labels"
    for folder in (input_folder, pair_folder, label_folder):
        folder.mkdir()
    for i, case in enumerate(predict_cases):
        for folder in (pair_folder, input_folder) if i == 0 else (pair_folder,):
            shutil.copyfile(raw_dataset / "imagesTr" / f"{case}_0000.nii.gz", folder / f"{case}_0000.nii.gz")
        shutil.copyfile(raw_dataset / "labelsTr" / f"{case}.nii.gz", label_folder / f"{case}.nii.gz")
    return TrainedSetup(data.raw, data.preprocessed, root / "results", data.dataset_name, input_folder, pair_folder,
                        label_folder, predict_cases)


def _predict(setup: TrainedSetup, output: Path, *extra: str, input_folder: Path | None = None) -> None:
    predict_main(["-i", str(input_folder or setup.input_folder), "-o", str(output), "-d", "4", *extra])


def _folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_fold_ensemble_is_the_mean_of_the_folds(trained, tmp_path, monkeypatch):
    trained.env(monkeypatch)
    before = _folder_state(trained.input_folder)
    _predict(trained, tmp_path / "f0", "-f", "0", "--save-probabilities", "--disable-tta")
    _predict(trained, tmp_path / "f1", "-f", "1", "--save-probabilities", "--disable-tta")
    _predict(trained, tmp_path / "both", "--save-probabilities", "--disable-tta")  # default: every fold
    assert _folder_state(trained.input_folder) == before  # inputs untouched
    for case in trained.predict_cases[:1]:
        p0 = load_probabilities(tmp_path / "f0" / f"{case}.npz")
        p1 = load_probabilities(tmp_path / "f1" / f"{case}.npz")
        both = load_probabilities(tmp_path / "both" / f"{case}.npz")
        assert np.abs(p0.probabilities - p1.probabilities).max() > 0.05  # the folds really differ
        np.testing.assert_allclose(both.probabilities, (p0.probabilities + p1.probabilities) / 2, atol=2e-3)
        labels = json.loads((trained.raw / trained.dataset_name / "dataset.json").read_text())["labels"]
        assert both.labels == labels and sorted(labels.values()) == [0, 1, 2]
        assert both.geometry.shape == both.probabilities.shape[1:]
        label_map = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "both" / f"{case}.nii.gz")))
        confident = np.sort(both.probabilities, axis=0)[-1] - np.sort(both.probabilities, axis=0)[-2] > 1e-2
        np.testing.assert_array_equal(label_map[confident], np.argmax(both.probabilities, axis=0)[confident])
    assert list((tmp_path / "both").glob("predict_*.txt"))  # log file in the output folder


def _rotated_input(setup: TrainedSetup, folder: Path, ending: str) -> sitk.Image:
    """A real case on a rotated, shifted, anisotropic grid, saved with another file format."""
    image = sitk.ReadImage(str(setup.input_folder / f"{setup.predict_cases[0]}_0000.nii.gz"))
    image.SetDirection((0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    image.SetOrigin((12.5, -40.25, 7.0))
    image.SetSpacing((1.0, 1.3, 0.8))
    folder.mkdir()
    sitk.WriteImage(image, str(folder / f"rotated_0000{ending}"))
    return image


def test_output_geometry_equals_input_geometry(trained, tmp_path, monkeypatch):
    trained.env(monkeypatch)
    source = _rotated_input(trained, tmp_path / "in", ".mha")
    _predict(trained, tmp_path / "out", "-f", "0", "--disable-tta", input_folder=tmp_path / "in")
    output = sitk.ReadImage(str(tmp_path / "out" / "rotated.mha"))
    assert output.GetSize() == source.GetSize()
    assert output.GetSpacing() == pytest.approx(source.GetSpacing(), abs=1e-6)
    assert output.GetOrigin() == pytest.approx(source.GetOrigin(), abs=1e-6)
    assert output.GetDirection() == pytest.approx(source.GetDirection(), abs=1e-6)
    assert set(np.unique(sitk.GetArrayFromImage(output))) <= {0, 1, 2}


def test_predict_then_evaluate_round_trip(trained, tmp_path, monkeypatch):
    trained.env(monkeypatch)
    _predict(trained, tmp_path / "pred", "-f", "0", "--disable-tta", input_folder=trained.pair_folder)
    evaluate_main(["-ref", str(trained.label_folder), "-pred", str(tmp_path / "pred"), "-d", "4"])
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert len(summary["metric_per_case"]) == PREDICT_CASES
    for entry in summary["metric_per_case"]:
        reference = sitk.GetArrayFromImage(sitk.ReadImage(entry["reference_file"]))
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(entry["prediction_file"]))
        direct = compute_metrics(reference, prediction, [1, 2], (1.0, 1.0, 1.0))
        assert entry["metrics"]["1"]["Dice"] == pytest.approx(direct[1]["Dice"])
        assert entry["metrics"]["2"]["TP"] == direct[2]["TP"]
    # a briefly trained model already finds the hippocampus on unseen cases (random weights give ~0)
    assert summary["foreground_mean"]["Dice"] > 0.15


def test_finished_cases_are_skipped_unless_overwrite(trained, tmp_path, monkeypatch):
    trained.env(monkeypatch)
    out = tmp_path / "out"
    _predict(trained, out, "-f", "1", "--disable-tta")
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    _predict(trained, out, "-f", "1", "--disable-tta")
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")} == first
    _predict(trained, out, "-f", "1", "--disable-tta", "--overwrite")
    again = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    assert set(again) == set(first) and all(again[k] > first[k] for k in first)


def test_postprocessing_from_inference_information_is_applied(trained, tmp_path, monkeypatch):
    trained.env(monkeypatch)
    info_path = trained.results / trained.dataset_name / "inference_information.json"
    info = InferenceInformation(trained.dataset_name, "samunetPlans", [ADAPTER], {ADAPTER: [1]}, "final", 2, 0.5, 0.6,
                                [PostprocessingStep([1, 2], 0.5, 0.6, kept=True)])
    info.save(info_path)
    try:
        # fold 1 has random weights: scattered predictions, so the largest component changes something
        _predict(trained, tmp_path / "pp", "-f", "1", "--disable-tta")
        _predict(trained, tmp_path / "raw", "-f", "1", "--disable-tta", "--no-postprocessing")
    finally:
        info_path.unlink()
    case = trained.predict_cases[0]
    processed = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pp" / f"{case}.nii.gz")))
    plain = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "raw" / f"{case}.nii.gz")))
    np.testing.assert_array_equal(processed, apply_postprocessing(plain, info.postprocessing))


def test_smoothing_from_inference_information_is_applied_before_the_components(trained, tmp_path, monkeypatch):
    trained.env(monkeypatch)
    info_path = trained.results / trained.dataset_name / "inference_information.json"
    info = InferenceInformation(trained.dataset_name, "samunetPlans", [ADAPTER], {ADAPTER: [1]}, "final", 2, 0.5, 0.6,
                                [PostprocessingStep([1, 2], 0.5, 0.6, kept=True)],
                                smoothing=[SmoothingTrial(1.0, 0.5, 0.4), SmoothingTrial(2.0, 0.5, 0.55, kept=True)])
    info.save(info_path)
    try:
        _predict(trained, tmp_path / "pp", "-f", "1", "--disable-tta", "--save-probabilities")
        _predict(trained, tmp_path / "raw", "-f", "1", "--disable-tta", "--no-postprocessing", "--save-probabilities")
    finally:
        info_path.unlink()
    case = trained.predict_cases[0]
    saved = load_probabilities(tmp_path / "raw" / f"{case}.npz")
    # the saved probabilities are the models' own, smoothed or not
    smoothed_run = load_probabilities(tmp_path / "pp" / f"{case}.npz")
    np.testing.assert_array_equal(smoothed_run.probabilities, saved.probabilities)
    image = sitk.ReadImage(str(tmp_path / "pp" / f"{case}.nii.gz"))
    spacing = image.GetSpacing()[::-1]
    expected = apply_postprocessing(saved.scheme.segmentation(smooth_probabilities(saved.probabilities, spacing, 2.0)),
                                    info.postprocessing)
    processed = sitk.GetArrayFromImage(image)
    # float16 storage of the probabilities may move a voxel sitting exactly on the decision boundary
    assert (processed != expected).mean() < 1e-3
    plain = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "raw" / f"{case}.nii.gz")))
    assert (processed != plain).any()


def _expect_error(capsys, argv, *fragments):
    with pytest.raises(SystemExit) as e:
        predict_main(argv)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert "Traceback" not in err and len(errors) == 1 and err.splitlines()[-1] == errors[0]
    assert errors[0].startswith("samunet_predict: error: ")
    for fragment in fragments:
        assert fragment in errors[0]
    return errors[0]


def test_cli_errors(trained, tmp_path, monkeypatch, capsys):
    trained.env(monkeypatch)
    source = trained.input_folder / f"{trained.predict_cases[0]}_0000.nii.gz"
    base = ["-d", "4", "--disable-tta"]
    # output folder equal to the input folder
    _expect_error(capsys, ["-i", str(trained.input_folder), "-o", str(trained.input_folder), *base], "must differ")
    # missing channel: only the _0001 file of a case
    missing = tmp_path / "missing"
    missing.mkdir()
    shutil.copyfile(source, missing / "x_0001.nii.gz")
    _expect_error(capsys, ["-i", str(missing), "-o", str(tmp_path / "o1"), *base], "x_0000.nii.gz")
    # wrong channel count: two channels for a one-channel model
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copyfile(source, extra / "x_0000.nii.gz")
    shutil.copyfile(source, extra / "x_0001.nii.gz")
    _expect_error(capsys, ["-i", str(extra), "-o", str(tmp_path / "o2"), *base], "x_0001.nii.gz", "channel")
    # unreadable file
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "y_0000.nii.gz").write_bytes(b"not an image")
    _expect_error(capsys, ["-i", str(broken), "-o", str(tmp_path / "o3"), *base], "y_0000.nii.gz")
    assert not list((tmp_path / "o3").glob("*.nii.gz"))
    # no trained fold with the requested checkpoint
    _expect_error(capsys, ["-i", str(trained.input_folder), "-o", str(tmp_path / "o4"), "-chk", "best", *base],
                  "no trained folds", "checkpoint_best")
    _expect_error(capsys, ["-i", str(trained.input_folder), "-o", str(tmp_path / "o5"), "-f", "3", *base],
                  "fold(s) [3]")


def test_fold_all_is_used_by_f_all_and_when_it_is_the_only_model(trained, tmp_path, monkeypatch):
    """nnU-Net's convention: ``-f all`` is the model trained on every case (fold_all); the default stays the
    cross-validation folds while they exist."""
    results = tmp_path / "results"
    shutil.copytree(trained.results, results)
    monkeypatch.setattr(trained, "results", results)
    trained.env(monkeypatch)
    model_folder = next((results / trained.dataset_name).iterdir())
    plans = Plans.load(model_folder / "plans.json")
    adapter = build_adapter(ADAPTER, plans)
    load_adapter_checkpoint(adapter, model_folder / "fold_1" / "checkpoint_final.safetensors")
    save_adapter_checkpoint(adapter, model_folder / "fold_all" / "checkpoint_final", {"fold": "all"})
    _predict(trained, tmp_path / "f1", "-f", "1", "--save-probabilities", "--disable-tta")
    _predict(trained, tmp_path / "all", "-f", "all", "--save-probabilities", "--disable-tta")
    _predict(trained, tmp_path / "default", "--save-probabilities", "--disable-tta")
    case = trained.predict_cases[0]
    p1, p_all, p_default = (load_probabilities(tmp_path / name / f"{case}.npz").probabilities
                            for name in ("f1", "all", "default"))
    np.testing.assert_allclose(p_all, p1, atol=1e-5)  # fold_all holds fold 1's weights
    assert np.abs(p_default - p_all).max() > 0.05  # default: folds 0 and 1, not fold_all
    for fold in ("fold_0", "fold_1"):
        shutil.rmtree(model_folder / fold)
    _predict(trained, tmp_path / "only_all", "--save-probabilities", "--disable-tta")
    np.testing.assert_allclose(load_probabilities(tmp_path / "only_all" / f"{case}.npz").probabilities, p1, atol=1e-5)


def test_a_fold_whose_validation_lost_with_mirroring_predicts_without_it(trained, tmp_path, monkeypatch):
    from samunet.evaluation.mirroring_decision import MirroringDecision, decision_file

    trained.env(monkeypatch)
    fold0 = trained.results / trained.dataset_name / f"{ADAPTER}__samunetPlans" / "fold_0"
    case = trained.predict_cases[0]
    _predict(trained, tmp_path / "plain", "-f", "0", "--save-probabilities", "--disable-tta")
    _predict(trained, tmp_path / "mirrored", "-f", "0", "--save-probabilities")  # no decision: mirrors, as before
    plain = load_probabilities(tmp_path / "plain" / f"{case}.npz").probabilities
    assert np.abs(load_probabilities(tmp_path / "mirrored" / f"{case}.npz").probabilities - plain).max() > 1e-3
    try:
        MirroringDecision.from_validations(mirrored_dice=0.77, unmirrored_dice=0.79).save(decision_file(fold0))
        _predict(trained, tmp_path / "decided", "-f", "0", "--save-probabilities")
        np.testing.assert_allclose(load_probabilities(tmp_path / "decided" / f"{case}.npz").probabilities, plain,
                                   atol=1e-6)
    finally:
        decision_file(fold0).unlink()


def test_an_ensemble_mirrors_when_most_folds_found_it_helped(tmp_path):
    from samunet.evaluation.mirroring_decision import MirroringDecision, decision_file, folds_mirror

    folds = [tmp_path / f"fold_{i}" for i in range(4)]
    for f in folds:
        f.mkdir()
    assert folds_mirror(folds)[0] is True  # nothing measured: mirroring, the behaviour before
    for f, (mirrored, unmirrored) in zip(folds[:3], [(0.77, 0.79), (0.80, 0.81), (0.85, 0.84)]):
        MirroringDecision.from_validations(mirrored, unmirrored).save(decision_file(f))
    mirror, why = folds_mirror(folds)  # lost in 2 of 4 (the fourth, unmeasured, counts as helped): a tie mirrors
    assert mirror is True and "2 of 4" in why and "0.7700 vs 0.7900" in why
    MirroringDecision.from_validations(0.70, 0.75).save(decision_file(folds[3]))
    assert folds_mirror(folds)[0] is False
    assert MirroringDecision.from_validations(0.8, 0.8).mirror is True  # a tie keeps mirroring
