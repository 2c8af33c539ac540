"""A catalogue of bad inputs, each run through the command a user would type.

Every kind must give exactly one line on stderr that names the file or flag at fault, a non-zero exit status,
and leave no file behind (other than the command's log) that could change what the next command does.
Built on the shipped Hippocampus cases (``hippocampus_preprocessed``), small synthetic raw datasets and the
``tiny`` backbone, so the whole catalogue runs in seconds with nothing outside the repository.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from samunet.adapters import build_adapter
from samunet.adapters.checkpoint import save_adapter_checkpoint
from samunet.compare.cli import main as compare_main
from samunet.core.names import SPLITS_FILE
from samunet.dataset.convert_msd import main as convert_main
from samunet.dataset.image_io import Geometry, write_image, write_segmentation
from samunet.evaluation.cli import main as evaluate_main
from samunet.evaluation.find_best import main as find_best_main
from samunet.inference.cli import main as predict_main
from samunet.inference.ensemble_cli import main as ensemble_main
from samunet.planning.cli import plan_main
from samunet.preprocessing.cli import main as preprocess_main
from samunet.training.cli import main as train_main
from samunet.training.splits import make_folds
from tests.fixtures_pipeline import write_structured_dataset

pytestmark = pytest.mark.usefixtures("single_torch_thread")

ADAPTER = "decoder"
RAW_NAME = "Dataset100_Boxes"
LOG_FILE = re.compile(r".*_\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.txt$")


@dataclass(frozen=True)
class Lab:
    """Read-only material every case copies from: the planned Hippocampus data and one trained-shaped model."""
    raw: Path
    preprocessed: Path
    results: Path
    dataset: str
    input_folder: Path
    case: str


@pytest.fixture(scope="module")
def lab(hippocampus_preprocessed, tmp_path_factory) -> Lab:
    data = hippocampus_preprocessed
    root = tmp_path_factory.mktemp("bad_inputs_lab")
    model = root / "results" / data.dataset_name / f"{ADAPTER}__{data.plans.plans_name}"
    model.mkdir(parents=True)
    data.plans.save(model / "plans.json")
    shutil.copyfile(data.dataset_folder / "dataset.json", model / "dataset.json")
    save_adapter_checkpoint(build_adapter(ADAPTER, data.plans), model / "fold_0" / "checkpoint_final", {"fold": 0})
    case = data.case_ids[0]
    input_folder = root / "input"
    input_folder.mkdir()
    shutil.copyfile(data.raw / data.dataset_name / "imagesTr" / f"{case}_0000.nii.gz",
                    input_folder / f"{case}_0000.nii.gz")
    return Lab(data.raw, data.preprocessed, root / "results", data.dataset_name, input_folder, case)


class Workspace:
    """One case's private folders: SAMUNET_* roots pointing at copies, so damage stays in this test."""

    def __init__(self, tmp: Path, lab: Lab, monkeypatch):
        self.tmp, self.lab, self.monkeypatch = tmp, lab, monkeypatch
        self.raw, self.preprocessed, self.results = tmp / "raw", tmp / "preprocessed", tmp / "results"
        for folder in (self.raw, self.preprocessed, self.results):
            folder.mkdir()
        self._point_env()

    def _point_env(self) -> None:
        for key, folder in (("SAMUNET_RAW", self.raw), ("SAMUNET_PREPROCESSED", self.preprocessed),
                            ("SAMUNET_RESULTS", self.results)):
            self.monkeypatch.setenv(key, str(folder))

    # raw datasets for samunet_plan
    def boxes(self, **kwargs) -> Path:
        return write_structured_dataset(self.raw / RAW_NAME, **kwargs)

    def edit_dataset_json(self, folder: Path, **changes) -> Path:
        path = folder / "dataset.json"
        data = json.loads(path.read_text())
        data.update(changes)
        path.write_text(json.dumps(data))
        return path

    # the planned Hippocampus data and its model
    def planned(self) -> Path:
        shutil.rmtree(self.preprocessed)
        shutil.copytree(self.lab.preprocessed, self.preprocessed)
        self.raw.rmdir()
        self.raw.symlink_to(self.lab.raw, target_is_directory=True)
        return self.preprocessed / self.lab.dataset / "samunetPlans.json"

    def trained(self) -> Path:
        shutil.rmtree(self.results)
        shutil.copytree(self.lab.results, self.results)
        return self.results / self.lab.dataset / f"{ADAPTER}__samunetPlans"

    def input_folder(self) -> Path:
        folder = self.tmp / "input"
        shutil.copytree(self.lab.input_folder, folder)
        return folder

    def predict(self, *extra: str, input_folder: Path | None = None) -> list[str]:
        return ["-i", str(input_folder or self.input_folder()), "-o", str(self.tmp / "predictions"),
                "-d", self.lab.dataset, "--disable-tta", "--device", "cpu", *extra]

    def edit_plans(self, path: Path, edit: Callable[[dict], None]) -> Path:
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
        return path


@dataclass(frozen=True)
class BadInput:
    kind: str
    prepare: Callable[[Workspace], tuple[Callable, list[str], str]]  # -> (command main, argv, what the line names)


def _missing_dataset_json(ws):
    folder = ws.boxes()
    (folder / "dataset.json").unlink()
    return plan_main, ["-d", "100", "--backbone", "tiny"], str(folder / "dataset.json")


def _invalid_dataset_json(ws):
    folder = ws.boxes()
    (folder / "dataset.json").write_text('{"labels": {"background": 0,')
    return plan_main, ["-d", "100", "--backbone", "tiny"], str(folder / "dataset.json")


def _no_background_label(ws):
    folder = ws.boxes()
    path = ws.edit_dataset_json(folder, labels={"box": 1, "slab": 2})
    return plan_main, ["-d", "100", "--backbone", "tiny"], str(path)


def _non_consecutive_labels(ws):
    folder = ws.boxes()
    path = ws.edit_dataset_json(folder, labels={"background": 0, "box": 1, "slab": 2, "rim": 4})
    return plan_main, ["-d", "100", "--backbone", "tiny"], str(path)


def _missing_label_file(ws):
    folder = ws.boxes()
    (folder / "labelsTr" / "case_001.nii.gz").unlink()
    return plan_main, ["-d", "100", "--backbone", "tiny"], "case_001"


def _wrong_num_training(ws):
    folder = ws.boxes()
    path = ws.edit_dataset_json(folder, numTraining=7)
    return plan_main, ["-d", "100", "--backbone", "tiny"], str(path)


def _geometry_mismatch(ws):
    folder = ws.boxes()
    label = folder / "labelsTr" / "case_002.nii.gz"
    shape = (6, 20, 16)
    write_segmentation(np.zeros(shape, dtype=np.uint8), Geometry((3.0, 1.0, 1.0), (0.0, 0.0, 0.0),
                                                                 np.eye(3).ravel(), shape), label)
    return plan_main, ["-d", "100", "--backbone", "tiny"], str(label)


def _nan_image(ws):
    folder = ws.boxes()
    image = folder / "imagesTr" / "case_000_0000.nii.gz"
    shape = (6, 20, 16)
    values = np.ones(shape, dtype=np.float32)
    values[3, 5, 5] = np.nan
    write_image(values, Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3).ravel(), shape), image)
    return plan_main, ["-d", "100", "--backbone", "tiny"], str(image)


def _unlisted_label_value(ws):
    folder = ws.boxes()
    label = folder / "labelsTr" / "case_001.nii.gz"
    shape = (6, 20, 16)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[2, 2, 2] = 5
    write_segmentation(seg, Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3).ravel(), shape), label)
    return plan_main, ["-d", "100", "--backbone", "tiny"], str(label)


def _unreadable_training_image(ws):
    folder = ws.boxes()
    image = folder / "imagesTr" / "case_001_0000.nii.gz"
    image.write_bytes(b"not a NIfTI file")
    return plan_main, ["-d", "100", "--backbone", "tiny"], str(image)


def _unknown_dataset_id(ws):
    ws.boxes()
    return plan_main, ["-d", "999", "--backbone", "tiny"], "999"


def _plans_invalid_json(ws):
    plans = ws.planned()
    plans.write_text(plans.read_text()[:-40])
    return preprocess_main, ["-d", "4"], str(plans)


def _plans_wrong_schema_version(ws):
    plans = ws.edit_plans(ws.planned(), lambda d: d.update(schema_version=99))
    return preprocess_main, ["-d", "4"], str(plans)


def _plans_unknown_field(ws):
    plans = ws.edit_plans(ws.planned(), lambda d: d["training"].update(epochz=3))
    return preprocess_main, ["-d", "4"], str(plans)


def _plans_wrong_type(ws):
    plans = ws.edit_plans(ws.planned(), lambda d: d["training"].update(epochs="ten"))
    return preprocess_main, ["-d", "4"], str(plans)


def _plans_missing(ws):
    ws.planned()
    return preprocess_main, ["-d", "4", "-p", "otherPlans"], "otherPlans.json"


def _train_missing_base_checkpoint(ws):
    ws.planned()
    missing = ws.tmp / "missing.pth"
    return train_main, ["4", ADAPTER, "0", "--checkpoint", str(missing), "--device", "cpu"], str(missing)


def _train_backbone_without_weights(ws):
    ws.planned()
    ws.monkeypatch.setenv("SAMUNET_CHECKPOINTS", str(ws.tmp / "no_weights_here"))
    return train_main, ["4", ADAPTER, "0", "--backbone", "vit_b", "--device", "cpu"], "vit_b"


def _corrupt_safetensors(ws):
    model = ws.trained()
    weights = model / "fold_0" / "checkpoint_final.safetensors"
    weights.write_bytes(b"\x00" * 64)
    return predict_main, ws.predict(), str(weights)


def _checkpoint_of_another_backbone(ws):
    model = ws.trained()
    sidecar = model / "fold_0" / "checkpoint_final.json"
    meta = json.loads(sidecar.read_text())
    meta["backbone"] = "vit_b"
    sidecar.write_text(json.dumps(meta))
    return predict_main, ws.predict(), str(sidecar)


def _missing_checkpoint(ws):
    ws.trained()
    return predict_main, ws.predict("-chk", "best"), "checkpoint_best"


def _missing_fold(ws):
    ws.trained()
    return predict_main, ws.predict("-f", "3"), "fold(s) [3]"


def _no_trained_model(ws):
    ws.trained()
    return predict_main, ws.predict("-a", "samed"), "samed"


def _empty_input_folder(ws):
    ws.trained()
    empty = ws.tmp / "empty"
    empty.mkdir()
    return predict_main, ws.predict(input_folder=empty), str(empty)


def _wrong_channel_count(ws):
    ws.trained()
    folder = ws.input_folder()
    source = folder / f"{ws.lab.case}_0000.nii.gz"
    second = folder / f"{ws.lab.case}_0001.nii.gz"
    shutil.copyfile(source, second)
    return predict_main, ws.predict(input_folder=folder), second.name


def _unreadable_input(ws):
    ws.trained()
    folder = ws.input_folder()
    broken = folder / "broken_0000.nii.gz"
    broken.write_bytes(b"garbage")
    return predict_main, ws.predict(input_folder=folder), str(broken)


def _missing_input_folder(ws):
    missing = ws.tmp / "no_such_folder"
    return predict_main, ws.predict(input_folder=missing), str(missing)


def _output_is_input(ws):
    folder = ws.input_folder()
    return predict_main, ["-i", str(folder), "-o", str(folder), "-d", "4"], str(folder)


def _unknown_adapter(ws):
    ws.planned()
    return train_main, ["4", "nonsense", "0"], "nonsense"


def _nnunet_configuration_as_adapter(ws):
    ws.planned()
    return train_main, ["4", "3d_fullres", "0"], "3d_fullres"


def _bad_fold(ws):
    ws.planned()
    return train_main, ["4", ADAPTER, "7", "--device", "cpu"], "fold 7"


def _bad_fold_text(ws):
    return predict_main, ws.predict("-f", "zero"), "-f"


def _nnunet_flag_with_another_meaning(ws):
    return predict_main, ws.predict("-c", "3d_fullres"), "-c"


def _abbreviated_flag(ws):
    ws.planned()
    return train_main, ["4", ADAPTER, "0", "-pl", "nnUNetPlannerResEncM"], "-pl"


def _unknown_device(ws):
    ws.trained()
    return predict_main, ws.predict("--device", "tpu"), "tpu"


def _unknown_encoder_runtime(ws):
    ws.planned()
    return train_main, ["4", ADAPTER, "0", "--encoder-runtime", "tensorrt"], "tensorrt"


def _compare_unknown_adapter(ws):
    ws.planned()
    return compare_main, ["-d", "4", "-a", ADAPTER, "nonsense", "-f", "0"], "nonsense"


def _compare_bad_time_limit(ws):
    ws.planned()
    return compare_main, ["-d", "4", "-a", ADAPTER, "-f", "0", "--time-limit-min", "0"], "--time-limit-min"


def _compare_without_plans(ws):
    plans = ws.planned()
    plans.unlink()
    return compare_main, ["-d", "4", "-a", ADAPTER, "-f", "0", "--epochs", "1"], str(plans)


def _evaluate_missing_prediction_folder(ws):
    missing = ws.tmp / "no_predictions"
    return evaluate_main, ["-ref", str(ws.tmp), "-pred", str(missing)], str(missing)


def _ensemble_folder_without_probabilities(ws):
    first, second = ws.tmp / "a", ws.tmp / "b"
    first.mkdir()
    return ensemble_main, ["-i", str(first), str(second), "-o", str(ws.tmp / "out")], str(second)


def _find_best_without_validation(ws):
    ws.trained()
    return find_best_main, ["-d", "4"], "validation"


def _convert_msd_without_dataset_json(ws):
    task = ws.tmp / "Task09_Spleen"
    (task / "imagesTr").mkdir(parents=True)
    return convert_main, ["-i", str(task), "-o", str(ws.raw)], str(task / "dataset.json")


CATALOGUE = [
    # raw datasets (samunet_plan)
    BadInput("dataset.json missing", _missing_dataset_json),
    BadInput("dataset.json not valid JSON", _invalid_dataset_json),
    BadInput("labels without background 0", _no_background_label),
    BadInput("label values not consecutive", _non_consecutive_labels),
    BadInput("label file missing", _missing_label_file),
    BadInput("numTraining differs from the files", _wrong_num_training),
    BadInput("label geometry differs from its image", _geometry_mismatch),
    BadInput("NaN in an image", _nan_image),
    BadInput("label value not in dataset.json", _unlisted_label_value),
    BadInput("training image unreadable", _unreadable_training_image),
    BadInput("unknown dataset id", _unknown_dataset_id),
    # plans (samunet_preprocess)
    BadInput("plans not valid JSON", _plans_invalid_json),
    BadInput("plans of another schema_version", _plans_wrong_schema_version),
    BadInput("plans with an unknown field", _plans_unknown_field),
    BadInput("plans field of the wrong type", _plans_wrong_type),
    BadInput("plans file missing", _plans_missing),
    # base weights and adapter checkpoints
    BadInput("--checkpoint file missing", _train_missing_base_checkpoint),
    BadInput("--backbone without its weights", _train_backbone_without_weights),
    BadInput("adapter safetensors corrupted", _corrupt_safetensors),
    BadInput("checkpoint of another backbone", _checkpoint_of_another_backbone),
    BadInput("-chk best not trained", _missing_checkpoint),
    BadInput("-f of an untrained fold", _missing_fold),
    BadInput("-a of an untrained adapter", _no_trained_model),
    # prediction inputs
    BadInput("input folder empty", _empty_input_folder),
    BadInput("input with the wrong channel count", _wrong_channel_count),
    BadInput("input file unreadable", _unreadable_input),
    BadInput("input folder missing", _missing_input_folder),
    BadInput("output folder is the input folder", _output_is_input),
    # flags
    BadInput("unknown adapter", _unknown_adapter),
    BadInput("nnU-Net configuration as adapter", _nnunet_configuration_as_adapter),
    BadInput("fold out of range", _bad_fold),
    BadInput("-f not a fold", _bad_fold_text),
    BadInput("nnU-Net flag with another meaning", _nnunet_flag_with_another_meaning),
    BadInput("flag prefix of another flag", _abbreviated_flag),
    BadInput("unknown device", _unknown_device),
    BadInput("unknown encoder runtime", _unknown_encoder_runtime),
    # other commands
    BadInput("evaluate: prediction folder missing", _evaluate_missing_prediction_folder),
    BadInput("ensemble: input folder missing", _ensemble_folder_without_probabilities),
    BadInput("find_best: no validation outputs", _find_best_without_validation),
    BadInput("convert_msd: task without dataset.json", _convert_msd_without_dataset_json),
    BadInput("compare: unknown adapter", _compare_unknown_adapter),
    BadInput("compare: time limit not positive", _compare_bad_time_limit),
    BadInput("compare: dataset not planned", _compare_without_plans),
]


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` but the commands' own log files and nnU-Net's default folds (checked apart):
    relative path -> (size, mtime)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.name == SPLITS_FILE:
            continue
        if path.is_file() and not path.is_symlink() and not LOG_FILE.match(path.name):
            stat = path.stat()
            found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return found


def test_the_catalogue_has_at_least_25_kinds():
    assert len({case.kind for case in CATALOGUE}) == len(CATALOGUE) >= 25


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.kind for c in CATALOGUE])
def test_bad_input_gives_one_line_naming_it_and_leaves_nothing(case, lab, tmp_path, monkeypatch, capsys):
    (tmp_path / "ws").mkdir()
    ws = Workspace(tmp_path / "ws", lab, monkeypatch)
    main, argv, named = case.prepare(ws)
    before = _files(ws.tmp)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code not in (0, None)
    assert len(err) == 1, "\n".join(err)
    assert named in err[0] and "Traceback" not in err[0], err[0]
    assert err[0].startswith("samunet_"), err[0]  # which command speaks
    assert _files(ws.tmp) == before  # nothing written, changed or removed but the log
    _splits_are_the_default_ones(ws)


def _splits_are_the_default_ones(ws: Workspace) -> None:
    """samunet_train writes splits_final.json early, as nnU-Net does; a failed start may leave it only with the
    folds the next run would write anyway (nnU-Net's default split of the cases present)."""
    for path in ws.preprocessed.rglob(SPLITS_FILE):
        case_ids = sorted(p.name[: -len(".json")] for p in (path.parent / "samunetPlans").glob("*.json"))
        assert json.loads(path.read_text()) == make_folds(case_ids), path
