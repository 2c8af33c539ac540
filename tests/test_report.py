"""samunet_report on real Hippocampus cases (the shared preprocessed fixture): a fold folder's page (a table row
and an overlay per validation case, worst first, the training curve and the plans), a prediction folder scored
as samunet_evaluate scores it, a compare folder, and the one-line errors that leave no page behind."""
from __future__ import annotations

import csv
import json
import logging
import shutil
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samunet.core.names import TRAINING_STATE_FILE
from samunet.dataset.image_io import read_label, write_segmentation
from samunet.evaluation.cli import main as evaluate_main
from samunet.evaluation.evaluate_folder import evaluate_folders
from samunet.report.build import REPORT_FILE, REPORT_FILES_FOLDER, write_report_or_warn
from samunet.report.cli import main as report_main
from samunet.utils.logs import get_logger

CASES = 3  # validation cases of the hand-made fold: one perfect, one missing a structure, one shifted


@dataclass(frozen=True)
class ReportSetup:
    fold_folder: Path
    labels: Path  # the raw dataset's labelsTr
    case_ids: list[str]

    @property
    def validation(self) -> Path:
        return self.fold_folder / "validation"


def _predictions(reference: np.ndarray, kind: int) -> np.ndarray:
    """Known errors: 0 none, 1 the posterior structure (label 2) missed, 2 everything shifted one voxel in x."""
    if kind == 0:
        return reference.copy()
    if kind == 1:
        return np.where(reference == 2, 0, reference).astype(reference.dtype)
    return np.roll(reference, 1, axis=2)


@pytest.fixture(scope="module")
def fold(hippocampus_preprocessed, tmp_path_factory) -> ReportSetup:
    """A results fold as samunet_train leaves it (plans and dataset.json copies, validation label maps and
    summary.json, the resume state's history), its predictions made from the references with known errors."""
    data = hippocampus_preprocessed
    model = tmp_path_factory.mktemp("report") / "results" / data.dataset_name / f"decoder__{data.plans.plans_name}"
    validation = model / "fold_0" / "validation"
    validation.mkdir(parents=True)
    data.plans.save(model / "plans.json")
    shutil.copyfile(data.dataset_folder / "dataset.json", model / "dataset.json")
    labels = data.raw / data.dataset_name / "labelsTr"
    case_ids = data.case_ids[:CASES]
    for kind, case in enumerate(case_ids):
        reference, geometry = read_label(labels / f"{case}.nii.gz")
        write_segmentation(_predictions(reference, kind), geometry, validation / f"{case}.nii.gz")
    evaluate_folders(labels, validation, data.plans.label_scheme.evaluated(), output_file=validation / "summary.json")
    history = {"epochs": [0, 1, 2], "train_loss": [1.2, 0.9, 0.7], "learning_rate": [1e-3, 6e-4, 2e-4],
               "epoch_seconds": [3.0, 2.9, 3.1], "validation_epochs": [1, 2],
               "validation_dice": {"anterior": [0.5, 0.7], "posterior": [0.4, 0.6]},
               "validation_mean_dice": [0.45, 0.65]}
    torch.save({"history": history, "epoch": 3}, model / "fold_0" / TRAINING_STATE_FILE)
    return ReportSetup(model / "fold_0", labels, case_ids)


class _Page(HTMLParser):
    """Tables (rows of (text, data-value) cells, the <img> sources of each row) and every <img> source."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[tuple[str, str | None]]]] = []
        self.row_images: list[list[list[str]]] = []
        self.images: list[str] = []
        self.headers: list[list[str]] = []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
            self.row_images.append([])
            self.headers.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
            self.row_images[-1].append([])
        elif tag in ("td", "th"):
            self._cell = [tag, "", attrs.get("data-value")]
        elif tag == "img":
            self.images.append(attrs["src"])
            if self._cell is not None:
                self.row_images[-1][-1].append(attrs["src"])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            kind, text, value = self._cell
            if kind == "th":
                self.headers[-1].append(text.strip())
            else:
                self.tables[-1][-1].append((text.strip(), value))
            self._cell = None


def _page(folder: Path) -> _Page:
    page = _Page()
    page.feed((folder / REPORT_FILE).read_text())
    return page


def _case_table(page: _Page) -> tuple[list[str], list[list[tuple[str, str | None]]], list[list[str]]]:
    """(header, body rows, images per row) of the per-case table (the one whose first header is "case")."""
    index = next(i for i, h in enumerate(page.headers) if h and h[0] == "case")
    rows = [r for r in page.tables[index] if r]  # the header row has no <td>
    images = [im for r, im in zip(page.tables[index], page.row_images[index]) if r]
    return page.headers[index], rows, images


def _assert_valid_png(path: Path) -> None:
    assert path.is_file(), path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 50


def test_fold_report_shows_each_validation_case_worst_first_with_its_overlay(fold, tmp_path, monkeypatch,
                                                                             hippocampus_preprocessed):
    hippocampus_preprocessed.set_env(monkeypatch)
    report_main([str(fold.fold_folder), "-o", str(tmp_path)])
    page = _page(tmp_path)
    header, rows, images = _case_table(page)
    summary = json.loads((fold.validation / "summary.json").read_text())
    assert len(rows) == len(summary["metric_per_case"]) == CASES
    assert sorted(r[0][0] for r in rows) == sorted(fold.case_ids)
    mean_dice = [float(r[header.index("mean Dice")][1]) for r in rows]
    assert mean_dice == sorted(mean_dice) and mean_dice[-1] == 1.0  # worst first, the perfect case last
    by_case = {Path(c["prediction_file"]).name[: -len(".nii.gz")]: c["metrics"] for c in summary["metric_per_case"]}
    for row in rows:  # the table shows summary.json's figures
        assert float(row[header.index("Dice posterior")][1]) == by_case[row[0][0]]["2"]["Dice"]
    assert rows[0][0][0] == fold.case_ids[1]  # the case that misses a whole structure
    for row_images in images:
        assert len(row_images) == 1
        _assert_valid_png(tmp_path / row_images[0])
    for source in page.images:  # the gallery, the training curve: every picture is beside the page
        _assert_valid_png(tmp_path / source)
    assert f"{REPORT_FILES_FOLDER}/training_curve.png" in page.images
    decisions = next(t for h, t in zip(page.headers, page.tables) if h[:1] == ["decision"])
    assert {r[0][0] for r in decisions if r} >= {"backbone", "input size", "patch", "slicing", "adapter", "batch",
                                                   "budget"}
    assert list(tmp_path.glob("report_*.txt"))  # the command's log file
    assert not list(tmp_path.glob(".*"))  # no staging folder left


def test_prediction_folder_report_scores_as_samunet_evaluate(fold, tmp_path, hippocampus_preprocessed, monkeypatch):
    hippocampus_preprocessed.set_env(monkeypatch)
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for case in fold.case_ids:
        shutil.copyfile(fold.validation / f"{case}.nii.gz", predictions / f"{case}.nii.gz")
    report_main([str(predictions), "-r", str(fold.labels)])
    evaluate_main(["-ref", str(fold.labels), "-pred", str(predictions), "-o", str(tmp_path / "evaluated.json")])
    evaluated = json.loads((tmp_path / "evaluated.json").read_text())
    header, rows, images = _case_table(_page(predictions))
    assert len(rows) == CASES and all(len(im) == 1 for im in images)
    for case in evaluated["metric_per_case"]:
        row = next(r for r in rows if r[0][0] == Path(case["prediction_file"]).name[: -len(".nii.gz")])
        assert float(row[header.index("Dice anterior")][1]) == case["metrics"]["1"]["Dice"]
        assert float(row[header.index("HD95 posterior (mm)")][1]) == case["metrics"]["2"]["HD95"]


def test_compare_folder_report_shows_the_leaderboard_and_its_plot(tmp_path):
    compare = tmp_path / "Dataset004_Hippocampus" / "compare"
    compare.mkdir(parents=True)
    rows = [["adapter", "fold", "dice_anterior", "dice_mean", "hd95_mean", "validation_cases"],
            ["decoder", "0", "0.8123456", "0.81", "2.5", "52"], ["ssam", "0", "nan", "nan", "nan", "52"]]
    with open(compare / "leaderboard.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    (compare / "leaderboard.md").write_text("# x\n\n| a |\n|---|\n| 1 |\n\nBest adapter: **decoder** (0.81)\n")
    Image.new("RGB", (120, 80), "white").save(compare / "leaderboard.png")
    fold_page = compare.parent / "decoder__samunetPlans" / "fold_0" / REPORT_FILE  # what samunet_train wrote
    fold_page.parent.mkdir(parents=True)
    fold_page.write_text("<html></html>")
    report_main([str(compare)])
    page = _page(compare)
    board = next(t for h, t in zip(page.headers, page.tables) if h[:2] == ["adapter", "fold"])
    assert [r[0][0] for r in board if r] == ["decoder", "ssam"]
    assert [r[2][0] for r in board if r] == ["0.8123", "n/a"]
    assert page.images == [f"{REPORT_FILES_FOLDER}/leaderboard.png"]
    _assert_valid_png(compare / page.images[0])
    text = (compare / REPORT_FILE).read_text()
    assert "<strong>decoder</strong>" in text  # the Markdown's conclusion
    assert text.count('href="../decoder__samunetPlans/fold_0/report.html"') == 1  # fold 0's row, not its mean


def _fails(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        report_main(argv)
    assert exit_info.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("samunet_report: error: "), errors
    return errors[0]


def _copy_fold(fold: ReportSetup, target: Path) -> Path:
    """A private copy of the model folder (its fold_0 returned) that a test may damage."""
    shutil.copytree(fold.fold_folder.parent, target / fold.fold_folder.parent.name)
    return target / fold.fold_folder.parent.name / "fold_0"


def _no_page(root: Path) -> None:
    assert not list(root.rglob(REPORT_FILE)) and not list(root.rglob(REPORT_FILES_FOLDER))
    assert not list(root.rglob(f".{REPORT_FILES_FOLDER}*"))  # nor a staging folder


def test_missing_folder(tmp_path, capsys):
    line = _fails([str(tmp_path / "absent")], capsys)
    assert f"{tmp_path / 'absent'}: folder does not exist" in line
    assert not (tmp_path / "absent").exists()


def test_fold_without_validation(tmp_path, capsys):
    fold_folder = tmp_path / "decoder__samunetPlans" / "fold_1"
    fold_folder.mkdir(parents=True)
    line = _fails([str(fold_folder)], capsys)
    assert f"{fold_folder / 'validation' / 'summary.json'}: the fold has no validation yet" in line
    _no_page(tmp_path)


def test_predictions_without_references(fold, tmp_path, capsys):
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    shutil.copyfile(fold.validation / f"{fold.case_ids[0]}.nii.gz", predictions / f"{fold.case_ids[0]}.nii.gz")
    line = _fails([str(predictions)], capsys)
    assert str(predictions) in line and "-r labelsTr/" in line
    _no_page(tmp_path)


def test_prediction_without_a_reference_of_its_name(fold, tmp_path, capsys):
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    shutil.copyfile(fold.validation / f"{fold.case_ids[0]}.nii.gz", predictions / "renamed_case.nii.gz")
    line = _fails([str(predictions), "-r", str(fold.labels)], capsys)
    assert f"{predictions / 'renamed_case.nii.gz'}: no reference" in line
    _no_page(tmp_path)


def test_validation_label_map_not_in_its_summary(fold, tmp_path, capsys, hippocampus_preprocessed, monkeypatch):
    hippocampus_preprocessed.set_env(monkeypatch)
    fold_copy = _copy_fold(fold, tmp_path)
    extra = fold_copy / "validation" / "not_a_case.nii.gz"
    shutil.copyfile(fold_copy / "validation" / f"{fold.case_ids[0]}.nii.gz", extra)
    line = _fails([str(fold_copy)], capsys)
    assert f"{extra}: a label map that" in line
    _no_page(tmp_path)


def test_label_value_the_plans_do_not_know(fold, tmp_path, capsys, hippocampus_preprocessed, monkeypatch):
    """The damaged case is the last one read: the overlays already drawn are removed with the staging folder."""
    hippocampus_preprocessed.set_env(monkeypatch)
    fold_copy = _copy_fold(fold, tmp_path)
    damaged = fold_copy / "validation" / f"{fold.case_ids[-1]}.nii.gz"
    labels, geometry = read_label(damaged)
    labels[labels.shape[0] // 2, 0, 0] = 7
    write_segmentation(labels, geometry, damaged)
    line = _fails([str(fold_copy)], capsys)
    assert f"{damaged}: label value(s) 7 not defined in {fold_copy.parent / 'plans.json'}" in line
    _no_page(tmp_path)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_the_hook_writes_a_fold_report_and_only_warns_on_failure(fold, tmp_path, hippocampus_preprocessed,
                                                                  monkeypatch):
    hippocampus_preprocessed.set_env(monkeypatch)
    warnings = _Records()
    get_logger().addHandler(warnings)
    try:
        _hook_checks(fold, tmp_path, warnings)
    finally:
        get_logger().removeHandler(warnings)


def _hook_checks(fold: ReportSetup, tmp_path: Path, warnings: _Records) -> None:
    fold_copy = _copy_fold(fold, tmp_path)
    assert write_report_or_warn(fold_copy) == fold_copy / REPORT_FILE
    assert len(_case_table(_page(fold_copy))[1]) == CASES
    (fold_copy / "validation" / "summary.json").write_text("{not json")
    assert write_report_or_warn(fold_copy) is None  # the previous page stays, the run goes on
    assert any("no report.html written" in m for m in warnings.messages)
    no_validation = tmp_path / "fold_all"
    no_validation.mkdir()
    assert write_report_or_warn(no_validation) is None and not (no_validation / REPORT_FILE).exists()
