"""Folds by case, identical to nnU-Net's (sklearn KFold(5, shuffle, 12345) over sorted case ids)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import TEST_DATA

from samunet.training.splits import SplitsError, fold_cases, load_or_create_splits, make_folds, parse_fold


def _ids(n):
    return [f"case_{i:03d}" for i in range(n)]


def _sklearn_hippocampus_folds() -> list[list[str]]:
    """Validation ids of sklearn's KFold(5, shuffle=True, random_state=12345) over the 260 sorted MSD Hippocampus
    ids, as published by another project (tests/data/README.md): a reference computed by sklearn itself, so the
    check needs no sklearn here."""
    return json.loads((TEST_DATA / "hippocampus_sklearn_folds.json").read_text())["val"]


def test_folds_equal_sklearn_kfold_on_the_hippocampus_ids():
    reference = _sklearn_hippocampus_folds()
    ids = sorted(case for val in reference for case in val)
    assert len(ids) == len(set(ids)) == 260
    folds = make_folds(list(reversed(ids)))  # input order does not matter: ids are sorted first
    assert [f["val"] for f in folds] == reference
    assert [f["train"] for f in folds] == [[c for c in ids if c not in set(val)] for val in reference]


def test_folds_partition_cases_and_sizes():
    ids = _ids(13)
    folds = make_folds(ids)
    vals = [set(f["val"]) for f in folds]
    assert [len(v) for v in vals] == [3, 3, 3, 2, 2]  # n // 5, first n % 5 folds one larger
    assert set().union(*vals) == set(ids)
    for f in folds:
        assert not set(f["train"]) & set(f["val"])
        assert set(f["train"]) | set(f["val"]) == set(ids)


@pytest.mark.slow
def test_shared_hippocampus_gives_the_reference_folds(hippocampus_task_full):
    ids = sorted(p.name[: -len(".nii.gz")] for p in (hippocampus_task_full / "labelsTr").glob("hippocampus_*.nii.gz"))
    assert len(ids) == 260
    folds = make_folds(ids)
    assert [len(f["val"]) for f in folds] == [52] * 5
    assert [f["val"] for f in folds] == _sklearn_hippocampus_folds()
    assert all(f["val"] == sorted(f["val"]) and f["train"] == sorted(f["train"]) for f in folds)


def test_written_once_and_user_edits_respected(tmp_path):
    ids = _ids(10)
    first = load_or_create_splits(tmp_path, ids)
    path = tmp_path / "splits_final.json"
    assert json.loads(path.read_text()) == first
    edited = [{"train": ids[:8], "val": ids[8:]}]
    path.write_text(json.dumps(edited))
    assert load_or_create_splits(tmp_path, ids) == edited
    assert fold_cases(edited, 0, ids) == (ids[:8], ids[8:])
    with pytest.raises(SplitsError, match="fold 1 does not exist"):
        fold_cases(edited, 1, ids)


def test_bad_splits_file_is_a_clear_error(tmp_path):
    ids = _ids(10)
    path = tmp_path / "splits_final.json"
    path.write_text("[{")
    with pytest.raises(SplitsError, match="not valid JSON"):
        load_or_create_splits(tmp_path, ids)
    path.write_text(json.dumps([{"train": ids[:8] + ["ghost"], "val": ids[8:]}]))
    with pytest.raises(SplitsError, match="ghost"):
        load_or_create_splits(tmp_path, ids)
    path.write_text(json.dumps([{"train": ids, "val": ids[:1]}]))
    with pytest.raises(SplitsError, match="both train and val"):
        load_or_create_splits(tmp_path, ids)


def test_fold_all_and_parse():
    ids = _ids(7)
    assert fold_cases([], "all", ids) == (ids, [])
    assert parse_fold("3") == 3 and parse_fold("all") == "all"
    with pytest.raises(SplitsError):
        parse_fold("x")
    with pytest.raises(SplitsError, match="cannot make 5 folds"):
        make_folds(_ids(3))
