"""The benchmarks call samunet's internals; a rename there must fail here, not silently in the next timing run.

Each benchmark runs its own code path end to end on what a fresh clone has: the ``tiny`` backbone and the 8
Hippocampus cases shipped in tests/data. The figures they print are not checked (timings belong to an idle
machine, not to a test); that they are produced, from the work the benchmark says it does, is.
"""
from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, TEST_DATA

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture
def load_benchmark(monkeypatch):
    """Import ``benchmarks/<name>.py`` as its own script would see it (its folder on sys.path: bench_encoder
    imports bench_plan_promise, and spawned workers re-import the module by name)."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    return importlib.import_module


def test_training_benchmark_times_the_real_step_at_the_batch_asked(hippocampus_preprocessed, monkeypatch,
                                                                   load_benchmark):
    hippocampus_preprocessed.set_env(monkeypatch)
    bench = load_benchmark("bench_training")
    result = bench.measure("decoder", steps=1, warmup=1, threads=None, batch_size=2)
    assert result["batch_size"] == 2 != hippocampus_preprocessed.plans.training.batch_size
    assert result["slices_per_s"] > 0 and result["slices_per_s_cold"] > 0  # cached adapter: cold and warm timed
    assert result["trainable_params"] > 0


def test_adapters_benchmark_times_each_precision_and_the_ssam_ratios(monkeypatch, load_benchmark):
    bench = load_benchmark("bench_adapters")
    monkeypatch.setattr(bench, "SIZE", 64)  # the tiny backbone at a test's size; the script times 256
    row = bench.worker_adapter("ssam", "tiny", batch=1, repeats=1, global_attention=False)
    assert row["trainable"] > 0
    assert all(row[f"{kind}_{precision}"] > 0 for kind in ("fwd", "train") for precision in ("fp32", "bf16"))
    ratios = bench.worker_ratios("tiny", batch=1, repeats=1, global_attention=False)
    # the plain model keeps S-SAM's other parameters trainable but not the singular-value affine
    assert 0 < ratios["trainable_plain"] < ratios["trainable_ssam"]
    assert all(ratios[f"{key}_{p}"]["ratio"] > 0 for key in ("train", "infer_unmerged", "infer_merged")
               for p in ("fp32", "bf16"))
    report = bench.format_report([row], [ratios])
    assert "ssam" in report and "(target <= 1.3x)" in report and "(target <= 1.05x)" in report


def test_encoder_benchmark_measures_each_runtime_against_eager_fp32(load_benchmark):
    bench = load_benchmark("bench_encoder")
    result = bench.main(["--backbones", "tiny", "--sizes", "64", "--batches", "1", "--runtimes", "eager_fp32,eager",
                         "--repeats", "1", "--threads", "1", "--gemm-seconds", "0.05"])
    rows = {row["runtime"]: row for row in result["rows"]}
    assert set(rows) == {"eager_fp32", "eager"}  # each way ran in its own process and reported back
    assert rows["eager_fp32"]["max_abs_embedding_error"] == 0  # the reference against itself: same seeded weights
    assert rows["eager"]["precision"] == bench.planner_precision()
    for row in rows.values():
        assert row["seconds_per_slice"] > 0 and row["gflops"] > 0 and row["peak_rss_mib"] > 0


def test_plan_benchmark_plans_the_task_it_is_given(hippocampus_task, tmp_path, load_benchmark, seed_cost_cache):
    from samunet.dataset.convert_msd import target_folder

    bench = load_benchmark("bench_plan")
    work = tmp_path / "work"
    # its samunet_plan subprocess reads this worker's timings from the root the benchmark will plan into
    seed_cost_cache(work / f"preprocessed_{target_folder(hippocampus_task, work / 'raw').name}")
    result = bench.main(["--task", str(hippocampus_task), "--backbone", "tiny", "--np", "1", "--keep", str(work)])
    assert result["cases"] == 8 and result["plans_written"]
    assert result["wall_seconds"] > 0 and result["peak_rss_bytes"] > 0
    assert result["stages"]["preprocess"]["peak_rss_bytes"] > 0  # every log marker was seen, in order


def test_plan_benchmark_reports_each_stage_on_synthetic_datasets_of_each_count(load_benchmark):
    bench = load_benchmark("bench_plan")
    # fixed cost estimates: the task test above already runs the cost measurement
    result = bench.main(["--synthetic", "2", "3", "--shape", "3", "24", "24", "--backbone", "tiny", "--np", "1",
                         "--no-measure"])
    assert [run["cases"] for run in result["runs"]] == [2, 3]
    for run in result["runs"]:
        assert run["plans_written"] and run["plans"]["model"]["backbone"] == "tiny"
        assert list(run["stages"]) == ["verify", "fingerprint", "plan", "preprocess"]
        assert all(stage["peak_rss_bytes"] > 0 and stage["seconds"] > 0 for stage in run["stages"].values())
        # PSS counts a page shared by the tree's processes once: never above their summed RSS
        assert all(0 < stage["peak_pss_bytes"] <= stage["peak_rss_bytes"] for stage in run["stages"].values())
        assert max(stage["peak_rss_bytes"] for stage in run["stages"].values()) == run["peak_rss_bytes"]
        # the kernel's own high-water mark of the largest single process in the tree
        assert 0 < run["largest_process_bytes"]


def test_plan_promise_benchmark_reports_planned_and_real_minutes_and_the_dice(samunet_dirs, tmp_path, monkeypatch,
                                                                              load_benchmark, seed_cost_cache):
    bench = load_benchmark("bench_plan_promise")
    seed_cost_cache(tmp_path / "work" / "preprocessed")  # its samunet_plan subprocess reads this run's timings
    monkeypatch.setattr(bench, "SHARED", TEST_DATA)  # its "hippocampus" entry: the shipped 8-case MSD task
    row = bench.bench_dataset("hippocampus", tmp_path / "work", adapter="decoder", time_limit=0.1, backbone="tiny")
    assert row["adapter"] == "decoder" and row["scored_on"] == "fold 0"
    assert row["planned_minutes"] > 0 and row["real_minutes"] > 0
    assert row["timing"]["measured_seconds_per_iteration"] > 0
    assert 0 <= row["dice"] <= 1
    # find_best decides its postprocessing on these same fold-0 cases and keeps only what raises their Dice
    assert row["dice"] - 1e-6 <= row["fold0_dice_postprocessed"] <= 1
    assert row["smoothing_sigma"] is None or row["smoothing_sigma"] > 0
    assert (tmp_path / "work" / "results" / "Dataset004_Hippocampus" / "inference_information.json").is_file()
    assert "| hippocampus | decoder |" in bench.format_table([row])


def test_predict_benchmark_predicts_with_five_folds_with_and_without_mirroring(samunet_dirs, tmp_path,
                                                                              hippocampus_task, load_benchmark):
    bench = load_benchmark("bench_predict")
    work = tmp_path / "work"
    report = bench.main(["--task", str(hippocampus_task), "--backbone", "tiny", "--adapter", "decoder",
                         "--plan-cases", "5", "--cases", "1", "--threads", "1", "--keep", str(work)])
    assert report["folds"] == 5 and [r["tta"] for r in report["results"]] == [False, True]
    assert all(r["cases"] == 1 and r["seconds_per_volume"] > 0 for r in report["results"])
    for tta in (False, True):
        assert len(list((work / f"out_1_{tta}").glob("*.nii.gz"))) == 1


def test_postprocessing_benchmark_smooths_in_place_without_a_second_copy(load_benchmark):
    bench = load_benchmark("bench_postprocessing")
    probabilities = bench.synthetic_probabilities(3, (12, 20, 16))
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, rtol=1e-5)
    assert set(np.unique(probabilities.argmax(axis=0))) == {0, 1, 2}  # every class wins voxels: steps have work
    row = bench.bench_shape("hippocampus", sigma=0.75, repeats=1)
    assert row["smoothing_copy_extra_mib"] >= row["probabilities_mib"] > 0  # validation's path: a new array
    assert row["smoothing_in_place_extra_mib"] < 0.1 * row["probabilities_mib"]  # prediction's: none
    assert row["largest_component_s"] >= 0 and row["voxels"] == 36 * 50 * 35


def test_vs_nnunet_benchmark_scores_samunet_on_fold_0_and_a_few_case_fold(samunet_dirs, tmp_path, monkeypatch,
                                                                         load_benchmark, seed_cost_cache):
    """The samunet side of bench_vs_nnunet on the shipped 8 Hippocampus cases (nnU-Net is not installed here):
    fold 0 and a 2-case fold with fold 0's validation cases, one CSV row each."""
    import csv

    monkeypatch.setattr(load_benchmark("bench_plan_promise"), "SHARED", TEST_DATA)
    bench = load_benchmark("bench_vs_nnunet")
    table = tmp_path / "vs.csv"
    seed_cost_cache(tmp_path / "work" / "preprocessed")
    bench.main(["--dataset", "hippocampus", "--methods", "fusion", "--train-cases", "all", "2", "--budget-min",
                "0.1", "--work", str(tmp_path / "work"), "--csv", str(table), "--backbone", "tiny"])
    splits = json.loads((tmp_path / "work" / "preprocessed" / "Dataset004_Hippocampus" / "splits_final.json")
                        .read_text())
    assert len(splits) == 6 and splits[5]["train"] == splits[0]["train"][:2] and splits[5]["val"] == splits[0]["val"]
    with open(table, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == bench.CSV_COLUMNS
    assert [(r["dataset"], r["method"], r["train_cases"]) for r in rows] == [("Hippocampus", "fusion", "all"),
                                                                             ("Hippocampus", "fusion", "2")]
    assert all(0 <= float(r["dice_mean"]) <= 1 and float(r["train_min"]) > 0 for r in rows)
    assert all(r["cpu"] in ("AMX", "AVX-512", "AVX2") for r in rows)
    assert table.with_suffix(".png").stat().st_size > 0  # the results page's plot
    # a rerun replaces the row of the same dataset, method and train_cases, and keeps the others
    bench.write_row(table, {**rows[1], "dice_mean": "0.5000"})
    with open(table, newline="") as f:
        again = list(csv.DictReader(f))
    assert len(again) == 2 and again[0] == rows[0] and again[1]["dice_mean"] == "0.5000"
