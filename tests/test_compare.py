"""samunet_compare on the real preprocessed Hippocampus cases (tiny backbone, one epoch of two iterations,
2 adapters x 2 folds): the leaderboard files and their numbers, skipping finished folds, completing only what an
interruption left undone, and one-line errors for bad input."""
from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest

from samunet.compare import folds as compare_folds
from samunet.compare.cli import main
from samunet.compare.leaderboard import aggregate, best_adapter, mean_std
from samunet.core.names import TRAINING_STATE_FILE
from tests.training_helpers import DATASET, fold_folder, private_roots, same_weights, weights

pytestmark = pytest.mark.usefixtures("single_torch_thread")

ADAPTERS = ("decoder", "cnnhead")
FOLDS = (0, 1)
ARGS = ["-d", "4", "-a", *ADAPTERS, "-f", *map(str, FOLDS), "--epochs", "1", "--iters-per-epoch", "2",
        "--batch-size", "2", "--num-workers", "0", "--disable-tta", "--device", "cpu"]
CLASSES = ("anterior", "posterior")  # Hippocampus' labels 1, 2


def _compare_folder(roots) -> Path:
    return Path(roots["SAMUNET_RESULTS"]) / DATASET / "compare"


def _count_training(monkeypatch) -> list[tuple[str, int, bool, bool]]:
    """Record every samunet_train run (adapter, fold, --continue, --val-only) and let it run."""
    calls = []
    real = compare_folds.train_fold

    def counting(options):
        calls.append((options.adapter, options.fold, options.resume, options.val_only))
        real(options)

    monkeypatch.setattr(compare_folds, "train_fold", counting)
    return calls


def _rows(roots) -> list[dict]:
    with open(_compare_folder(roots) / "leaderboard.csv", newline="") as f:
        return list(csv.DictReader(f))


def _mtimes(roots) -> dict[str, int]:
    return {f"{a}/{f}": (fold_folder(roots, a, str(f)) / "checkpoint_final.safetensors").stat().st_mtime_ns
            for a in ADAPTERS for f in FOLDS}


def test_compare_writes_the_leaderboard_and_trains_only_what_is_missing(hippocampus_preprocessed, tmp_path,
                                                                        monkeypatch, capsys):
    roots = private_roots(hippocampus_preprocessed, tmp_path)
    for key, value in roots.items():
        monkeypatch.setenv(key, value)
    calls = _count_training(monkeypatch)
    main(ARGS)
    assert calls == [(a, f, False, False) for a in ADAPTERS for f in FOLDS]

    # ---- the files: a row per adapter x fold, then mean and std per adapter; every column a plain number
    folder = _compare_folder(roots)
    rows = _rows(roots)
    numeric = ([f"dice_{c}" for c in CLASSES] + ["dice_mean"] + [f"hd95_{c}" for c in CLASSES] + ["hd95_mean"] +
               ["trainable_parameters", "training_minutes", "seconds_per_volume"])
    assert list(rows[0]) == ["adapter", "fold", *numeric, "validation_cases"]
    assert [(r["adapter"], r["fold"]) for r in rows] == (
        [(a, str(f)) for a in ADAPTERS for f in FOLDS] + [(a, s) for a in ADAPTERS for s in ("mean", "std")])
    per_fold = [r for r in rows if r["fold"].isdigit()]
    for row in per_fold:
        summary = json.loads((fold_folder(roots, row["adapter"], row["fold"]) / "validation/summary.json").read_text())
        assert float(row["dice_mean"]) == pytest.approx(summary["foreground_mean"]["Dice"])
        assert float(row["dice_anterior"]) == pytest.approx(summary["mean"]["1"]["Dice"])
        assert float(row["hd95_posterior"]) == pytest.approx(summary["mean"]["2"]["HD95"], nan_ok=True)
        assert int(row["validation_cases"]) == len(summary["metric_per_case"])
        # recorded by the trainer in debug.json
        assert float(row["trainable_parameters"]) > 0 and float(row["training_minutes"]) > 0
        assert float(row["seconds_per_volume"]) > 0
    params = {a: {r["trainable_parameters"] for r in per_fold if r["adapter"] == a} for a in ADAPTERS}
    assert all(len(p) == 1 for p in params.values()) and params["decoder"] != params["cnnhead"]

    # ---- the aggregated rows are the mean and sample std of the per-fold numbers
    for adapter in ADAPTERS:
        mine = [r for r in per_fold if r["adapter"] == adapter]
        mean_row = next(r for r in rows if r["adapter"] == adapter and r["fold"] == "mean")
        std_row = next(r for r in rows if r["adapter"] == adapter and r["fold"] == "std")
        for column in numeric:
            values = [float(r[column]) for r in mine]
            if any(math.isnan(v) for v in values):
                continue
            assert float(mean_row[column]) == pytest.approx(statistics.mean(values))
            assert float(std_row[column]) == pytest.approx(statistics.stdev(values), abs=1e-9)

    markdown = (folder / "leaderboard.md").read_text()
    assert "## Mean ± std over folds" in markdown and "## Per fold" in markdown
    assert "| adapter | folds | Dice anterior | Dice posterior | Dice mean |" in markdown
    means = {a: float(next(r for r in rows if r["adapter"] == a and r["fold"] == "mean")["dice_mean"])
             for a in ADAPTERS}
    best = max(means, key=means.get)
    assert f"Best adapter (mean foreground Dice over folds): **{best}** ({means[best]:.4f})" in markdown
    assert "samunet_find_best would pick: **" in markdown
    assert not (Path(roots["SAMUNET_RESULTS"]) / DATASET / "inference_information.json").exists()
    # ... and names the command that records the pick for samunet_predict
    assert f"`samunet_find_best -d {DATASET} -a {' '.join(ADAPTERS)}` writes it for samunet_predict" in markdown
    assert (folder / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(folder.glob("compare_*.txt"))
    assert "[4/4] cnnhead fold 1: done" in capsys.readouterr().out
    leaderboard_before = (folder / "leaderboard.csv").read_text()

    # ---- a second run trains nothing and writes the same table
    before = _mtimes(roots)
    calls.clear()
    main(ARGS)
    assert calls == [] and _mtimes(roots) == before
    assert (folder / "leaderboard.csv").read_text() == leaderboard_before
    # ... also when asked for other settings: a finished fold is reused, with a warning saying how it differs
    capsys.readouterr()
    main([a if a != "1" or i != ARGS.index("--epochs") + 1 else "2" for i, a in enumerate(ARGS)])
    assert calls == [] and "training.epochs 1 (asked 2)" in capsys.readouterr().err

    # ---- an interruption: one fold gone, one killed during training, one during its final validation
    shutil.rmtree(fold_folder(roots, "cnnhead", "1"))
    killed = fold_folder(roots, "decoder", "1")
    for name in ("checkpoint_final.safetensors", "checkpoint_final.json"):
        (killed / name).unlink()
    shutil.rmtree(killed / "validation")
    assert (killed / TRAINING_STATE_FILE).is_file()
    unvalidated = fold_folder(roots, "cnnhead", "0")
    (unvalidated / "validation/summary.json").unlink()
    calls.clear()
    main(ARGS)
    assert sorted(calls) == [("cnnhead", 0, False, True), ("cnnhead", 1, False, False), ("decoder", 1, True, False)]
    after = _mtimes(roots)
    assert after["decoder/0"] == before["decoder/0"] and after["cnnhead/0"] == before["cnnhead/0"]
    # the validation-only run kept the training minutes the training recorded
    row = next(r for r in _rows(roots) if r["adapter"] == "cnnhead" and r["fold"] == "0")
    assert float(row["training_minutes"]) > 0 and len(_rows(roots)) == len(rows)


def test_aggregate_is_mean_and_sample_std_per_adapter():
    from samunet.compare.leaderboard import FoldResult

    def result(adapter, fold, a, b):
        return FoldResult(adapter, fold, {"x": a, "y": b}, {"x": 1.0, "y": math.nan}, (a + b) / 2, 1.0,
                          10.0, 2.0 + fold, 0.5, 3)

    results = [result("p", 0, 0.5, 0.7), result("p", 1, 0.7, 0.9), result("q", 0, 0.9, 0.9)]
    agg = aggregate(results, ["x", "y"])
    assert agg["p"]["dice_x"] == pytest.approx((0.6, statistics.stdev([0.5, 0.7])))
    assert agg["p"]["training_minutes"] == pytest.approx((2.5, statistics.stdev([2.0, 3.0])))
    assert math.isnan(agg["p"]["hd95_y"][0])  # no fold has the figure
    assert math.isnan(agg["q"]["dice_x"][1])  # one fold: no standard deviation
    assert best_adapter(agg) == "q"
    assert mean_std([1.0, math.nan, 3.0]) == pytest.approx((2.0, math.sqrt(2.0)))


@pytest.mark.parametrize("argv,code,needle", [
    (["-d", "4", "-a", "decoder", "nosuch"], 1, "-a 'nosuch': unknown adapter; choose from ssam"),
    (["-d", "4", "-a", "3d_fullres"], 1, "-a '3d_fullres': unknown adapter (an nnU-Net configuration"),
    (["-d", "4", "-f", "0", "7"], 2, "fold '7'"),
    (["-d", "4", "-f", "all"], 2, "fold 'all'"),
    (["-d", "4", "--epochs", "0"], 1, "--epochs must be at least 1"),
    (["-d", "4", "--backbone", "vit_x"], 1, "--backbone 'vit_x'"),
])
def test_bad_adapter_fold_or_override_is_one_line(argv, code, needle, samunet_dirs, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == code and len(err) == 1 and needle in err[0] and err[0].startswith("samunet_compare")
    assert not (samunet_dirs["results"] / DATASET / "compare").exists()


def test_unknown_dataset_is_one_line(samunet_dirs, capsys):
    with pytest.raises(SystemExit) as e:
        main(["-d", "987"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and len(err) == 1 and "987" in err[0]


def test_the_same_command_twice_gives_the_same_table(hippocampus_preprocessed, tmp_path, monkeypatch):
    """Reproducibility (documentation/commands_compare.md): with the counts fixed (--epochs, --iters-per-epoch),
    two runs from nothing give bit-identical weights and the same Dice and HD95 columns on a CPU; only the timing
    columns depend on the machine's load."""
    folds = ARGS.index("-f")
    args = ARGS[:folds + 2] + ARGS[folds + 3:]  # fold 0 only
    assert args[folds:folds + 3] == ["-f", "0", "--epochs"]
    tables, finals = [], []
    for run in ("first", "second"):
        roots = private_roots(hippocampus_preprocessed, tmp_path / run)
        for key, value in roots.items():
            monkeypatch.setenv(key, value)
        main(args)
        timing = ("training_minutes", "seconds_per_volume")
        tables.append([{k: v for k, v in row.items() if k not in timing} for row in _rows(roots)])
        finals.append({a: weights(fold_folder(roots, a, "0") / "checkpoint_final.safetensors") for a in ADAPTERS})
    assert len(tables[0]) == len(ADAPTERS) * 3  # fold 0, mean and std rows
    assert tables[0] == tables[1]
    assert all(same_weights(finals[0][a], finals[1][a]) for a in ADAPTERS)
