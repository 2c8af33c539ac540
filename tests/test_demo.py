"""The demo end to end, in its reduced (--quick) mode: every user command runs in its own process."""
from __future__ import annotations

import json

import SimpleITK as sitk

from samunet.demo.cli import main as demo_main
from samunet.demo.synthetic import DEMO_DATASET_NAME, make_case

import numpy as np


def test_synthetic_case_has_both_structures_inside_the_head():
    case = make_case(np.random.default_rng(0), shape=(12, 48, 48))
    assert set(np.unique(case.label)) == {0, 1, 2}
    core, rim = case.image[case.label == 1].mean(), case.image[case.label == 2].mean()
    tissue = case.image[(case.label == 0) & (case.image > 20)].mean()
    assert core > tissue > rim, "structures must differ in intensity from tissue to be learnable"


def test_quick_demo_runs_the_whole_pipeline(tmp_path, seed_cost_cache):
    out = tmp_path / "demo"
    seed_cost_cache(out / "preprocessed")  # its samunet_plan subprocess reads this worker's timings
    demo_main(["--quick", "-o", str(out)])
    summary = json.loads((out / "evaluation_summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}
    assert len(summary["metric_per_case"]) == 2
    predictions = sorted((out / "predictions").glob("*.nii.gz"))
    assert [p.name for p in predictions] == ["demo_008.nii.gz", "demo_009.nii.gz"]
    for prediction in predictions:
        source = sitk.ReadImage(str(out / "raw" / DEMO_DATASET_NAME / "imagesTs"
                                    / prediction.name.replace(".nii.gz", "_0000.nii.gz")))
        written = sitk.ReadImage(str(prediction))
        assert written.GetSize() == source.GetSize()
        assert written.GetSpacing() == source.GetSpacing()
    assert list(out.glob("demo_*.txt")), "the demo logs to a file in its output folder"
