"""Do the plans keep their promise? Planned against real minutes for one fold with the defaults, and the Dice.

For each dataset: convert or link it into a fresh raw root, ``samunet_plan`` (measured cost model), then
``samunet_train D ADAPTER 0`` with nothing overridden (the plans' time budget applies), then the score: fold 0's
``validation/summary.json`` for 3D datasets, the fixed test set for DRIVE (``samunet_predict`` + ``samunet_evaluate``
against ``labelsTs``). The planned minutes come from ``plans.cost``; the real ones are the training command's wall
time (validation included, the budget covers both) and ``debug.json``'s ``timing`` section. Last,
``samunet_find_best -a ADAPTER`` on fold 0 gives its validation Dice with the postprocessing it decides.

    python benchmarks/bench_plan_promise.py [--datasets hippocampus,leftatrium,drive,synthetic320]
        [--adapter ADAPTER] [--backbone NAME] [--time-limit-min M] [--work DIR] [--json out.json]

Run it on an otherwise idle machine (a full run is about 30 min per dataset plus planning); the processor's
bf16/AMX capability and the load average before and after are printed. ``--time-limit-min`` shortens every fold
(a smoke run; its figures do not measure the default promise).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "datasets").resolve()
DATASETS = {
    "hippocampus": (4, "Task04_Hippocampus", "msd"),
    "leftatrium": (101, "LeftAtrium_LGE_30", "link"),
    "drive": (102, "RetinaVessels_DRIVE", "link"),
    "synthetic320": (103, None, "synthetic"),
}


def run(command: list[str], env: dict, log: Path) -> float:
    """Run a samunet command, its output to ``log``; returns wall seconds (exits on failure)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    took = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}); see {log}")
    return took


def prepare_raw(key: str, raw: Path) -> str:
    """The dataset in ``raw`` (nnU-Net layout); returns its DatasetXXX_Name."""
    dataset_id, folder, how = DATASETS[key]
    if how == "msd":
        from samunet.dataset.convert_msd import convert_msd_task

        return convert_msd_task(SHARED / folder, raw, num_processes=1).name
    if how == "link":
        name = f"Dataset{dataset_id:03d}_{folder}"
        (raw / name).symlink_to(SHARED / folder)
        return name
    from samunet.demo.synthetic import write_demo_dataset  # 3D volumes with 320 x 320 slices

    folder_path = write_demo_dataset(raw, num_train=20, num_test=4, shape=(24, 320, 320))
    name = f"Dataset{dataset_id:03d}_Synthetic320"
    folder_path.rename(raw / name)
    return name


def bench_dataset(key: str, work: Path, adapter: str | None, time_limit: float | None,
                  backbone: str | None = None) -> dict:
    for sub in ("raw", "preprocessed", "results", "logs"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SAMUNET_RAW": str(work / "raw"), "SAMUNET_PREPROCESSED": str(work / "preprocessed"),
           "SAMUNET_RESULTS": str(work / "results")}
    os.environ.update({k: env[k] for k in ("SAMUNET_RAW", "SAMUNET_PREPROCESSED", "SAMUNET_RESULTS")})
    from samunet.core.layout import plans_file
    from samunet.core.names import (
        DEBUG_FILE, DEFAULT_PLANS_NAME, INFERENCE_INFORMATION_FILE, SUMMARY_FILE, VALIDATION_FOLDER, model_folder_name,
    )
    from samunet.evaluation.inference_information import InferenceInformation

    name = prepare_raw(key, work / "raw")
    plan = [sys.executable, "-m", "samunet.planning.cli", "-d", name]
    plan += ["--backbone", backbone] if backbone else []
    plan_s = run(plan, env, work / "logs" / "plan.txt")
    plans = json.loads(plans_file(work / "preprocessed" / name, DEFAULT_PLANS_NAME).read_text())
    adapter = adapter or plans["model"]["adapter"]
    train = [sys.executable, "-m", "samunet.training.cli", name, adapter, "0"]
    if time_limit is not None:
        train += ["--time-limit-min", str(time_limit)]
    train_s = run(train, env, work / "logs" / "train.txt")
    fold = work / "results" / name / model_folder_name(adapter, DEFAULT_PLANS_NAME) / "fold_0"
    debug = json.loads((fold / DEBUG_FILE).read_text())
    if key == "drive":
        out = work / "drive_test"
        run([sys.executable, "-m", "samunet.inference.cli", "-i", str(SHARED / "RetinaVessels_DRIVE" / "imagesTs"),
             "-o", str(out), "-d", name, "-a", adapter, "-f", "0"], env, work / "logs" / "predict.txt")
        run([sys.executable, "-m", "samunet.evaluation.cli", "-ref", str(SHARED / "RetinaVessels_DRIVE" / "labelsTs"),
             "-pred", str(out), "-d", name], env, work / "logs" / "evaluate.txt")
        summary, scored_on = json.loads((out / SUMMARY_FILE).read_text()), "test set"
    else:
        summary, scored_on = json.loads((fold / VALIDATION_FOLDER / SUMMARY_FILE).read_text()), "fold 0"
    # fold 0's validation with the postprocessing find_best decides on it (smoothing, largest component); after
    # the test prediction, so DRIVE's test figure stays the trained model's own
    run([sys.executable, "-m", "samunet.evaluation.find_best", "-d", name, "-a", adapter], env,
        work / "logs" / "find_best.txt")
    info = InferenceInformation.load(work / "results" / name / INFERENCE_INFORMATION_FILE)
    cost = plans.get("cost") or {}
    return {
        "dataset": key, "adapter": adapter, "input_size": plans["model"]["input_size"],
        "patch": plans["crop"]["patch_size"], "slicing_mode": plans["slicing"]["mode"],
        "precision": plans["training"]["precision"], "plan_seconds": round(plan_s, 1),
        "planned_minutes": cost.get("predicted_minutes_per_fold"), "real_minutes": round(train_s / 60, 2),
        "timing": debug.get("timing"), "epochs": (debug.get("results") or {}).get("epochs"),
        "planned_epochs": (debug.get("results") or {}).get("planned_epochs"),
        "dice": summary.get("foreground_mean", {}).get("Dice"), "scored_on": scored_on,
        "fold0_dice_postprocessed": info.mean_dice_postprocessed, "smoothing_sigma": info.smoothing_sigma,
    }


def _postprocessed(row: dict) -> str:
    sigma = row.get("smoothing_sigma")
    return f"{row['fold0_dice_postprocessed']:.3f} ({f'smoothing sigma {sigma:g}' if sigma else 'no smoothing'})"


def format_table(rows: list[dict]) -> str:
    """The markdown table of planning.md: one row per dataset."""
    # a run faster than planned is given more epochs (fitted to the budget): real minutes then match the budget,
    # and the seconds per iteration, planned against measured, say how good the plan was
    lines = ["| dataset | adapter | input | patch | mode | precision | planned min | real min | real/planned "
             "| s/it planned / real | epochs planned / run | Dice | on | fold 0 + find_best's postprocessing |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["real_minutes"] / r["planned_minutes"] if r["planned_minutes"] else float("nan")
        dice = f"{r['dice']:.3f}" if r["dice"] is not None else "-"
        timing = r["timing"] or {}
        lines.append(f"| {r['dataset']} | {r['adapter']} | {r['input_size']} | {r['patch']} | {r['slicing_mode']} | "
                     f"{r['precision']} | {r['planned_minutes']} | {r['real_minutes']} | {ratio:.2f} | "
                     f"{timing.get('planned_seconds_per_iteration')} / {timing.get('measured_seconds_per_iteration')}"
                     f" | {r['planned_epochs']} / {r['epochs']} | {dice} | {r['scored_on']} | {_postprocessed(r)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: " + ", ".join(DATASETS))
    p.add_argument("--adapter", help="default: the plans' recommended adapter")
    p.add_argument("--backbone", help="passed to samunet_plan (default: the planner's choice)")
    p.add_argument("--time-limit-min", type=float, help="shorter folds for a smoke run (not the promise)")
    p.add_argument("--work", type=Path, help="keep everything here (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = p.parse_args(argv)
    keys = [k.strip() for k in args.datasets.split(",") if k.strip()]
    unknown = [k for k in keys if k not in DATASETS]
    if unknown:
        sys.exit(f"--datasets: unknown {unknown}; known: {', '.join(DATASETS)}")
    from samunet.planning.hardware import describe_cpu

    print(f"{describe_cpu()}; load average before: {os.getloadavg()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.work or Path(tmp)
        for key in keys:
            print(f"[{key}] planning and training fold 0 ...", flush=True)
            rows.append(bench_dataset(key, base / key, args.adapter, args.time_limit_min, args.backbone))
            print(json.dumps(rows[-1]), flush=True)
    print(f"load average after: {os.getloadavg()}")
    print("\n" + format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
