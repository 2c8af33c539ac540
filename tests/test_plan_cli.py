"""samunet_plan and samunet_preprocess: outputs, kept user edits, refusal on a bad dataset, resume."""
from __future__ import annotations

import json
import os

import pytest

from samunet.planning.cli import plan_main
from samunet.core.plans import Plans
from samunet.preprocessing.cli import main as preprocess_main
from samunet.preprocessing.runner import CaseOutputs, preprocess_dataset
from tests.fixtures_pipeline import write_structured_dataset

NAME = "Dataset100_Boxes"


@pytest.fixture
def raw_boxes(samunet_dirs):
    write_structured_dataset(samunet_dirs["raw"] / NAME, num_cases=3)
    return samunet_dirs


def run_plan(*args):
    plan_main(["-d", "100", "-np", "1", *args])


def test_plan_writes_fingerprint_plans_cache_and_log(raw_boxes):
    run_plan()
    out = raw_boxes["preprocessed"] / NAME
    assert (json.loads((out / "dataset.json").read_text())
            == json.loads((raw_boxes["raw"] / NAME / "dataset.json").read_text()))
    assert (out / "dataset_fingerprint.json").is_file()
    plans = Plans.load(out / "samunetPlans.json")
    assert plans.dataset_name == NAME
    for case in ("case_000", "case_001", "case_002"):
        outputs = CaseOutputs.of(out / "samunetPlans", case)
        assert outputs.image.is_file() and outputs.seg.is_file() and outputs.properties.is_file()
    logs = list((out / "logs").glob("plan_*.txt"))
    assert logs and "plans written" in logs[0].read_text()


def test_named_plans_and_no_preprocess(raw_boxes):
    run_plan("-p", "myPlans", "--no-preprocess", "--backbone", "tiny")
    out = raw_boxes["preprocessed"] / NAME
    plans = Plans.load(out / "myPlans.json")
    assert plans.plans_name == "myPlans" and plans.model.backbone == "tiny"
    assert not (out / "myPlans").exists()


def test_rerun_keeps_edited_plans_unless_overwrite(raw_boxes, capsys):
    run_plan("--no-preprocess")
    path = raw_boxes["preprocessed"] / NAME / "samunetPlans.json"
    data = json.loads(path.read_text())
    planned_epochs = data["training"]["epochs"]
    data["training"]["epochs"] = planned_epochs + 7
    path.write_text(json.dumps(data))
    capsys.readouterr()
    run_plan("--no-preprocess")
    assert Plans.load(path).training.epochs == planned_epochs + 7
    assert "keeping the existing plans" in capsys.readouterr().out  # information goes to stdout
    run_plan("--no-preprocess", "--overwrite")
    assert Plans.load(path).training.epochs == planned_epochs


def test_verification_failure_writes_nothing(raw_boxes, capsys):
    (raw_boxes["raw"] / NAME / "labelsTr" / "case_001.nii.gz").unlink()
    (raw_boxes["raw"] / NAME / "imagesTr" / "case_002_0000.nii.gz").write_bytes(b"garbage")
    with pytest.raises(SystemExit) as exit_info:
        run_plan()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "case_001" in err and "case_002_0000.nii.gz" in err  # every problem, each naming its file
    assert not (raw_boxes["preprocessed"] / NAME).exists()


def test_unknown_dataset_is_one_clear_error(raw_boxes, capsys):
    with pytest.raises(SystemExit) as exit_info:
        plan_main(["-d", "999"])
    assert exit_info.value.code == 1
    assert "no dataset with id 999" in capsys.readouterr().err


def test_resume_skips_finished_cases_and_redoes_changed_plans(raw_boxes):
    run_plan()
    out = raw_boxes["preprocessed"] / NAME
    plans = Plans.load(out / "samunetPlans.json")
    finished = CaseOutputs.of(out / "samunetPlans", "case_000")
    stamp = finished.image.stat().st_mtime_ns
    CaseOutputs.of(out / "samunetPlans", "case_002").properties.unlink()  # as if interrupted before its JSON
    assert preprocess_dataset(NAME, plans, num_processes=1, progress=False) == {"processed": 1, "skipped": 2}
    assert finished.image.stat().st_mtime_ns == stamp
    plans.crop.crop_to_nonzero = False  # a decision that changes the arrays: every case is stale
    assert preprocess_dataset(NAME, plans, num_processes=1, progress=False) == {"processed": 3, "skipped": 0}


def test_preprocess_cli_names_the_failing_case_and_keeps_the_others(raw_boxes, capsys):
    run_plan("--no-preprocess")
    (raw_boxes["raw"] / NAME / "imagesTr" / "case_001_0000.nii.gz").write_bytes(b"garbage")
    with pytest.raises(SystemExit) as exit_info:
        preprocess_main(["-d", "100", "-np", "1"])
    assert exit_info.value.code == 1
    assert "case_001" in capsys.readouterr().err
    cache = raw_boxes["preprocessed"] / NAME / "samunetPlans"
    assert sorted(os.listdir(cache)) == sorted(f"{c}{s}" for c in ("case_000", "case_002")
                                               for s in (".json", "_image.npy", "_seg.npy"))


def test_preprocess_cli_with_worker_processes(raw_boxes):
    run_plan("--no-preprocess")
    preprocess_main(["-d", NAME, "-np", "2", "--overwrite"])
    cache = raw_boxes["preprocessed"] / NAME / "samunetPlans"
    assert len(list(cache.glob("*.json"))) == 3
    assert list((raw_boxes["preprocessed"] / NAME / "logs").glob("preprocess_*.txt"))


def test_the_planner_process_never_loads_torch(raw_boxes, seed_cost_cache):
    """Each cost measurement loads torch in a child process of its own and the device is found by another: the
    planner holding torch beside a measurement would count it twice in the plan's peak memory
    (documentation/commands_plan.md#memory). A fresh interpreter plans as samunet_plan does."""
    import subprocess
    import sys

    seed_cost_cache(raw_boxes["preprocessed"])  # the cached path of the cost model runs, and any measuring one
    code = ("import sys\nfrom samunet.planning.cli import plan_main\n"
            "plan_main(['-d', '100', '-np', '1', '--backbone', 'tiny', '--no-preprocess'])\n"
            "print('torch in the planner:', 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch in the planner: False" in result.stdout
    plans = Plans.load(raw_boxes["preprocessed"] / NAME / "samunetPlans.json")
    assert plans.cost.source == "measured" and plans.cost.machine.startswith("cpu|")
