"""samunet.core.paths: dataset ids resolve in every accepted spelling; unset folders fall back with one warning."""
from __future__ import annotations

import logging

import pytest

from samunet.core import paths


@pytest.fixture
def roots(tmp_path):
    raw, pre, res = (tmp_path / n for n in ("raw", "preprocessed", "results"))
    for folder in (raw, pre, res):
        folder.mkdir()
    (raw / "Dataset004_Hippocampus").mkdir()
    (pre / "Dataset007_Prostate").mkdir()
    (res / "Dataset010_Colon").mkdir()
    (raw / "not_a_dataset").mkdir()
    return [raw, pre, res]


@pytest.mark.parametrize("identifier", [4, "4", "004", "Dataset004_Hippocampus", " 004 "])
def test_every_spelling_of_an_id_resolves(roots, identifier):
    assert paths.resolve_dataset_name(identifier, roots) == "Dataset004_Hippocampus"


def test_datasets_are_found_in_preprocessed_and_results_folders(roots):
    assert paths.resolve_dataset_name(7, roots) == "Dataset007_Prostate"
    assert paths.resolve_dataset_name("10", roots) == "Dataset010_Colon"


def test_unknown_id_lists_the_datasets_that_exist(roots):
    with pytest.raises(paths.UnknownDatasetError) as info:
        paths.resolve_dataset_name(5, roots)
    message = str(info.value)
    assert "005" in message
    for name in ("Dataset004_Hippocampus", "Dataset007_Prostate", "Dataset010_Colon"):
        assert name in message
    assert "not_a_dataset" not in message


def test_folder_name_with_unknown_name_falls_back_to_its_id(roots):
    assert paths.resolve_dataset_name("Dataset004_Renamed", roots) == "Dataset004_Hippocampus"


def test_text_that_is_no_id_is_refused(roots):
    with pytest.raises(paths.UnknownDatasetError, match="not a dataset id"):
        paths.resolve_dataset_name("hippocampus", roots)


def test_two_folders_with_one_id_are_ambiguous(roots):
    (roots[1] / "Dataset004_Other").mkdir()
    with pytest.raises(paths.UnknownDatasetError, match="ambiguous"):
        paths.resolve_dataset_name(4, roots)


def test_environment_variables_choose_the_folders(samunet_dirs):
    assert paths.raw_root() == samunet_dirs["raw"]
    assert paths.preprocessed_root() == samunet_dirs["preprocessed"]
    assert paths.results_root() == samunet_dirs["results"]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_unset_variable_gives_the_default_and_warns_once(monkeypatch):
    monkeypatch.delenv("SAMUNET_RAW", raising=False)
    monkeypatch.setattr(paths, "_warned", set())
    handler = _Records()
    logger = logging.getLogger("samunet")  # setup_logging may have stopped propagation to the root logger
    logger.addHandler(handler)
    try:
        first, second = paths.raw_root(), paths.raw_root()
    finally:
        logger.removeHandler(handler)
    assert first == second == paths.DEFAULT_ROOT / "raw"
    warnings = [r for r in handler.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "SAMUNET_RAW" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()


def test_dataset_id_of_reads_the_number():
    assert paths.dataset_id_of("Dataset042_Liver") == 42
    with pytest.raises(ValueError, match="Task04_Hippocampus"):
        paths.dataset_id_of("Task04_Hippocampus")
