"""Sharing models: samunet_export_model -> samunet_install_model into a fresh results root -> samunet_predict -m
gives what samunet_predict -d gave; altered zips, unsafe paths and overwrites are refused; base weights are
found by name and checked by sha256; -num_parts/-part_id split the cases exactly once."""
from __future__ import annotations

import copy
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from samunet.adapters import build_adapter
from samunet.adapters.checkpoint import save_adapter_checkpoint
from samunet.core.names import MODEL_ZIP_MANIFEST_FILE, MODEL_ZIP_README_FILE
from samunet.evaluation.probabilities_io import load_probabilities
from samunet.inference.cli import main as predict_main
from samunet.inference.prediction_parts import PartError, check_part, part_of
from samunet.modeling.checkpoints import file_digest
from samunet.sharing.cli import export_main, install_main
from tests.fixtures_models import write_tiny_sam_checkpoint

pytestmark = pytest.mark.usefixtures("single_torch_thread")

ADAPTER = "decoder"
BASE_NAME = "sam_tiny_lab.pth"
PREDICT_CASES = 3


@dataclass
class ExportSetup:
    results: Path  # the exporting lab's results root
    dataset_name: str
    base_weights: Path  # the plans' explicit base checkpoint
    input_folder: Path
    case_ids: list[str]

    @property
    def model_folder(self) -> Path:
        return self.results / self.dataset_name / f"{ADAPTER}__samunetPlans"


@pytest.fixture(scope="module")
def lab(hippocampus_preprocessed, tmp_path_factory) -> ExportSetup:
    """A results folder with two folds of the ``decoder`` adapter (different random heads) on base weights named
    in the plans, training by-products beside them, and an input folder of three real cases."""
    data = hippocampus_preprocessed
    root = tmp_path_factory.mktemp("sharing")
    (root / "lab_checkpoints").mkdir()
    base = write_tiny_sam_checkpoint(root / "lab_checkpoints" / BASE_NAME, seed=3)
    plans = copy.deepcopy(data.plans)
    plans.model.checkpoint = str(base)
    setup = ExportSetup(root / "results", data.dataset_name, base, root / "input", data.case_ids[-PREDICT_CASES:])
    folder = setup.model_folder
    folder.mkdir(parents=True)
    plans.save(folder / "plans.json")
    shutil.copyfile(data.dataset_folder / "dataset.json", folder / "dataset.json")
    for fold in (0, 1):
        torch.manual_seed(200 + fold)
        adapter = build_adapter(ADAPTER, plans)
        fold_folder = folder / f"fold_{fold}"
        save_adapter_checkpoint(adapter, fold_folder / "checkpoint_final", {"fold": fold})
        (fold_folder / "progress.png").write_bytes(b"\x89PNG fake plot")
        (fold_folder / "validation").mkdir()
        (fold_folder / "validation" / "summary.json").write_text("{}")
        (fold_folder / "checkpoint_latest_state.pt").write_bytes(b"optimizer state: never exported")
    setup.input_folder.mkdir()
    for case in setup.case_ids:
        shutil.copyfile(data.raw / data.dataset_name / "imagesTr" / f"{case}_0000.nii.gz",
                        setup.input_folder / f"{case}_0000.nii.gz")
    return setup


@pytest.fixture(scope="module")
def model_zip(lab, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zip") / "model.zip"
    mp = pytest.MonkeyPatch()
    mp.setenv("SAMUNET_RESULTS", str(lab.results))
    try:
        export_main(["-d", "4", "-a", ADAPTER, "-o", str(out)])
    finally:
        mp.undo()
    return out


def _labels(folder: Path, case: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{case}.nii.gz")))


def _error_line(capsys) -> str:
    """The one error line a failed command printed (info lines may precede it)."""
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(errors) == 1, errors
    return errors[0]


def _install(zip_path: Path, results: Path, monkeypatch, *extra: str) -> None:
    monkeypatch.setenv("SAMUNET_RESULTS", str(results))
    install_main([str(zip_path), *extra])


def test_zip_holds_adapters_plans_and_readme_never_base_weights(lab, model_zip):
    with zipfile.ZipFile(model_zip) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read(MODEL_ZIP_MANIFEST_FILE))
        readme = zf.read(MODEL_ZIP_README_FILE).decode()
        contents = {name: zf.read(name) for name in names}
    prefix = f"{lab.dataset_name}/{ADAPTER}__samunetPlans"
    per_fold = ["checkpoint_final.safetensors", "checkpoint_final.json", "progress.png", "validation/summary.json"]
    payload = {f"{prefix}/plans.json", f"{prefix}/dataset.json"} | {
        f"{prefix}/fold_{fold}/{name}" for fold in (0, 1) for name in per_fold}
    assert names == payload | {MODEL_ZIP_MANIFEST_FILE, MODEL_ZIP_README_FILE}
    assert set(manifest["files"]) == payload
    for name in payload:  # the manifest's hashes are those of the files
        assert manifest["files"][name]["sha256"] == file_digest(lab.results / name)
    base_sha = file_digest(lab.base_weights)
    assert manifest["base_checkpoint_sha256"] == base_sha and manifest["base_checkpoint_file"] == BASE_NAME
    assert base_sha in readme and "tiny" in readme and BASE_NAME in readme
    base_bytes = lab.base_weights.read_bytes()
    assert not any(data == base_bytes for data in contents.values())
    assert model_zip.stat().st_size < lab.base_weights.stat().st_size  # adapters only


def test_round_trip_predicts_what_the_dataset_id_predicts(lab, model_zip, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMUNET_RESULTS", str(lab.results))
    predict_main(["-i", str(lab.input_folder), "-o", str(tmp_path / "by_id"), "-d", "4", "--disable-tta",
                  "--save-probabilities"])
    fresh = tmp_path / "fresh_results"
    _install(model_zip, fresh, monkeypatch)
    installed = fresh / lab.dataset_name / f"{ADAPTER}__samunetPlans"
    assert (installed / "fold_1" / "checkpoint_final.safetensors").is_file()
    assert not (installed / "fold_0" / "checkpoint_latest_state.pt").exists()
    assert [p.name for p in fresh.iterdir() if p.name.startswith(".")] == []  # no staging left
    monkeypatch.setenv("SAMUNET_RESULTS", str(tmp_path / "elsewhere"))  # -m needs no results root
    predict_main(["-i", str(lab.input_folder), "-o", str(tmp_path / "by_folder"), "-m", str(installed),
                  "--disable-tta", "--save-probabilities"])
    predict_main(["-i", str(lab.input_folder), "-o", str(tmp_path / "by_dataset_folder"), "-m",
                  str(installed.parent), "--disable-tta"])
    for case in lab.case_ids:
        expected = _labels(tmp_path / "by_id", case)
        np.testing.assert_array_equal(_labels(tmp_path / "by_folder", case), expected)
        np.testing.assert_array_equal(_labels(tmp_path / "by_dataset_folder", case), expected)
        np.testing.assert_array_equal(load_probabilities(tmp_path / "by_folder" / f"{case}.npz").probabilities,
                                      load_probabilities(tmp_path / "by_id" / f"{case}.npz").probabilities)


def test_base_weights_are_found_by_name_and_checked_by_sha256(lab, model_zip, tmp_path, monkeypatch, capsys):
    fresh, checkpoints = tmp_path / "results", tmp_path / "checkpoints"
    _install(model_zip, fresh, monkeypatch)
    capsys.readouterr()
    checkpoints.mkdir()
    monkeypatch.setenv("SAMUNET_CHECKPOINTS", str(checkpoints))
    installed = fresh / lab.dataset_name / f"{ADAPTER}__samunetPlans"
    args = ["-i", str(lab.input_folder), "-m", str(installed), "--disable-tta", "-f", "0"]
    moved = tmp_path / "away.pth"
    shutil.move(lab.base_weights, moved)  # the recipient does not have the lab's path
    try:
        with pytest.raises(SystemExit) as exc:
            predict_main([*args, "-o", str(tmp_path / "absent")])
        err = _error_line(capsys)
        assert exc.value.code == 1
        assert BASE_NAME in err and str(checkpoints) in err and "not found" in err
        write_tiny_sam_checkpoint(checkpoints / BASE_NAME, seed=4)  # right name, other weights
        with pytest.raises(SystemExit):
            predict_main([*args, "-o", str(tmp_path / "wrong")])
        err = _error_line(capsys)
        assert "sha256" in err and file_digest(moved) in err
        assert not list((tmp_path / "wrong").glob("*.nii.gz"))
        shutil.copyfile(moved, checkpoints / BASE_NAME)  # the right file, by name
        predict_main([*args, "-o", str(tmp_path / "found")])
        assert sorted(p.name for p in (tmp_path / "found").glob("*.nii.gz")) == [f"{c}.nii.gz" for c in lab.case_ids]
    finally:
        shutil.move(moved, lab.base_weights)


def _rewrite_zip(source: Path, target: Path, change) -> None:
    """Copy ``source`` to ``target`` passing each (name, bytes) through ``change`` (None drops it); ``change`` may
    return a list of (name, bytes) to add several."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for name in zin.namelist():
            result = change(name, zin.read(name))
            for item in (result if isinstance(result, list) else [result] if result else []):
                zout.writestr(*item)


def _refused(zip_path: Path, results: Path, monkeypatch, capsys, *extra: str) -> str:
    with pytest.raises(SystemExit) as exc:
        _install(zip_path, results, monkeypatch, *extra)
    err = _error_line(capsys)
    assert exc.value.code == 1
    assert not any(p.is_dir() for p in results.iterdir()) if results.is_dir() else True  # nothing installed
    return err


def test_altered_or_unsafe_zips_install_nothing(model_zip, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    tampered = tmp_path / "tampered.zip"

    def flip_weights(name, data):
        if name.endswith("fold_1/checkpoint_final.safetensors"):
            data = data[:-1] + bytes([data[-1] ^ 1])
        return name, data
    _rewrite_zip(model_zip, tampered, flip_weights)
    assert "does not match its sha256" in _refused(tampered, results, monkeypatch, capsys)

    extra = tmp_path / "extra.zip"
    _rewrite_zip(model_zip, extra, lambda n, d: [(n, d), ("Dataset004_Hippocampus/run.py", b"import os")]
                 if n == MODEL_ZIP_README_FILE else (n, d))
    assert "is not listed" in _refused(extra, results, monkeypatch, capsys)

    for evil in ("../evil.json", "/tmp/evil.json", "Dataset004_Hippocampus/../../evil.json", "notadataset/x.json"):
        slip = tmp_path / "slip.zip"

        def add_evil(name, data):
            if name != MODEL_ZIP_MANIFEST_FILE:
                return name, data
            manifest = json.loads(data)
            manifest["files"][evil] = {"sha256": "0" * 64, "size": 2}
            return [(name, json.dumps(manifest).encode()), (evil, b"{}")]
        _rewrite_zip(model_zip, slip, add_evil)
        assert "refusing to install" in _refused(slip, results, monkeypatch, capsys)
    assert not (tmp_path / "evil.json").exists()

    no_manifest = tmp_path / "plain.zip"
    _rewrite_zip(model_zip, no_manifest, lambda n, d: None if n == MODEL_ZIP_MANIFEST_FILE else (n, d))
    assert MODEL_ZIP_MANIFEST_FILE in _refused(no_manifest, results, monkeypatch, capsys)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    assert "not a zip file" in _refused(tmp_path / "junk.zip", results, monkeypatch, capsys)


def test_existing_model_is_kept_unless_force(lab, model_zip, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    _install(model_zip, results, monkeypatch)
    installed = results / lab.dataset_name / f"{ADAPTER}__samunetPlans"
    _install(model_zip, results, monkeypatch)  # again, identical: kept (an interrupted install re-runs)
    assert "already installed, identical" in capsys.readouterr().out  # information is on stdout
    marker = installed / "fold_0" / "my_notes.txt"
    marker.write_text("a colleague's file")
    summary = installed / "fold_0" / "validation" / "summary.json"
    summary.write_text('{"edited": true}')
    with pytest.raises(SystemExit):
        _install(model_zip, results, monkeypatch)
    assert "already exists" in capsys.readouterr().err and marker.is_file() and "edited" in summary.read_text()
    _install(model_zip, results, monkeypatch, "--force")
    assert not marker.exists() and (installed / "fold_0" / "checkpoint_final.safetensors").is_file()
    assert [p.name for p in results.iterdir() if p.name.startswith(".")] == []


def test_export_errors_are_one_line_and_write_nothing(lab, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAMUNET_RESULTS", str(lab.results))
    for args, expected in ((["-a", "ssam"], "no trained model for adapter ssam"),
                           (["-a", ADAPTER, "-f", "3"], "fold(s) 3 lack"),
                           (["-a", ADAPTER, "-chk", "best"], "no fold has checkpoint(s) best"),
                           (["-a", ADAPTER, "-chk", "latest"], "-chk latest"),
                           (["-a", ADAPTER, "-chk", "checkpoint_best.pth"], "no fold has checkpoint(s) best")):
        with pytest.raises(SystemExit) as exc:
            export_main(["-d", "4", "-o", str(tmp_path / "m.zip"), *args])
        err = _error_line(capsys)
        assert exc.value.code == 1 and expected in err, err
        assert not list(tmp_path.glob("*.zip")) and not list(tmp_path.glob(".m.zip*"))


# ---- -num_parts / -part_id ------------------------------------------------------------------------------

def test_parts_cover_every_case_exactly_once():
    cases = [f"case_{i:03d}" for i in range(11)][::-1]
    for num_parts in (1, 2, 3, 4, 11, 13):
        parts = [part_of(cases, num_parts, k) for k in range(num_parts)]
        assert sorted(c for part in parts for c in part) == sorted(cases)
        assert all(part == sorted(cases)[k::num_parts] for k, part in enumerate(parts))  # nnU-Net's split
    for num_parts, part_id in ((2, 2), (2, -1), (0, 0), (3, 5)):
        with pytest.raises(PartError):
            check_part(num_parts, part_id)


def test_predict_parts_share_a_folder(lab, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAMUNET_RESULTS", str(lab.results))
    out = tmp_path / "out"
    base = ["-i", str(lab.input_folder), "-o", str(out), "-m", str(lab.model_folder), "--disable-tta", "-f", "0"]
    seen = []
    for part_id in (1, 0):
        before = set(p.name for p in out.glob("*.nii.gz")) if out.is_dir() else set()
        predict_main([*base, "-num_parts", "2", "-part_id", str(part_id)])
        new = sorted(set(p.name for p in out.glob("*.nii.gz")) - before)
        assert new == [f"{c}.nii.gz" for c in sorted(lab.case_ids)[part_id::2]]
        seen += new
    assert sorted(seen) == sorted(f"{c}.nii.gz" for c in lab.case_ids)
    with pytest.raises(SystemExit) as exc:
        predict_main([*base, "-num_parts", "2", "-part_id", "2"])
    assert exc.value.code == 1 and "-part_id 2" in _error_line(capsys)
