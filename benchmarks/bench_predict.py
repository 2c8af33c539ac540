"""Seconds per Hippocampus volume for ``samunet_predict``: 5 folds, with and without mirroring TTA.

Setup (not timed): the first ``--plan-cases`` Hippocampus cases are converted into a temporary raw folder and
planned with backbone ``litemedsam`` (input size as planned); the plans' recommended adapter (or ``--adapter``)
is built five times with different random seeds and saved as fold_0..fold_4 ``checkpoint_final`` (random
adapter weights on the real LiteMedSAM base: the cost is the same as for trained weights).
Timed: loading the 5 folds, then predicting ``--cases`` volumes through samunet_predict's own code path
(read, preprocess, 5-fold average, restore, write), once without and once with TTA.

    python benchmarks/bench_predict.py [--cases 5] [--threads 1 2] [--adapter decoder] [--backbone litemedsam]
        [--task MSD_TASK_DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS_TASK = (REPO / ".." / "shared" / "datasets" / "Task04_Hippocampus").resolve()
FOLDS = 5


def setup(work: Path, task: Path, backbone: str, adapter_name: str | None, plan_cases: int, cases: int):
    import torch

    from samunet.adapters import build_adapter
    from samunet.adapters.checkpoint import save_adapter_checkpoint
    from samunet.core.names import DATASET_JSON_FILE, MODEL_PLANS_FILE, fold_folder_name, model_folder_name
    from samunet.dataset.convert_msd import convert_msd_task, msd_cases
    from samunet.planning.cli import plan_dataset
    from samunet.utils.atomic import read_json

    for var, sub in (("SAMUNET_RAW", "raw"), ("SAMUNET_PREPROCESSED", "preprocessed"), ("SAMUNET_RESULTS", "results")):
        os.environ[var] = str(work / sub)
    training, _ = msd_cases(task, read_json(task / DATASET_JSON_FILE))
    ids = [c.case_id for c in training[: max(plan_cases, cases)]]
    raw = convert_msd_task(task, work / "raw", case_ids=ids, num_processes=1)
    plans = plan_dataset(raw.name, backbone=backbone, num_processes=1, preprocess=False, progress=False)
    adapter_name = adapter_name or plans.model.adapter
    model_folder = work / "results" / raw.name / model_folder_name(adapter_name, plans.plans_name)
    model_folder.mkdir(parents=True, exist_ok=True)
    plans.save(model_folder / MODEL_PLANS_FILE)
    shutil.copyfile(raw / DATASET_JSON_FILE, model_folder / DATASET_JSON_FILE)
    for fold in range(FOLDS):
        torch.manual_seed(fold)
        adapter = build_adapter(adapter_name, plans)
        save_adapter_checkpoint(adapter, model_folder / fold_folder_name(fold) / "checkpoint_final",
                                {"fold": fold, "seed": fold})
    inputs = work / "input"
    inputs.mkdir(exist_ok=True)
    for case in ids[-cases:]:
        shutil.copyfile(raw / "imagesTr" / f"{case}_0000.nii.gz", inputs / f"{case}_0000.nii.gz")
    return raw.name, adapter_name, plans, inputs


def time_prediction(dataset: str, adapter: str, inputs: Path, output: Path, mirror: bool) -> dict:
    import torch

    from samunet.inference.model_loading import ModelRequest, load_networks, select_models
    from samunet.inference.predictor import Predictor
    from samunet.core.layout import dataset_results_folder

    selection = select_models(dataset_results_folder(dataset), ModelRequest(adapters=[adapter]))
    device = torch.device("cpu")
    start = time.perf_counter()
    load_networks(selection, device)
    load_seconds = time.perf_counter() - start
    predictor = Predictor(selection, device, mirror=mirror, overwrite=True, progress=False)
    jobs, ending = predictor.find_jobs(inputs, output)
    start = time.perf_counter()
    predictor.predict_jobs(jobs, output, ending)
    seconds = time.perf_counter() - start
    return {"tta": mirror, "cases": len(jobs), "seconds_per_volume": round(seconds / len(jobs), 2),
            "load_5_folds_seconds": round(load_seconds, 2)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5, help="volumes predicted per setting (default 5)")
    parser.add_argument("--plan-cases", type=int, default=20, help="cases the plans are made from (default 20)")
    parser.add_argument("--backbone", default="litemedsam")
    parser.add_argument("--adapter", default=None, help="default: the plans' recommendation")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch intra-op thread counts to time (default: torch's default only)")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--task", type=Path, default=HIPPOCAMPUS_TASK, help="MSD task folder (default: Hippocampus)")
    args = parser.parse_args(argv)
    if not args.task.is_dir():
        raise SystemExit(f"{args.task} is absent: this benchmark needs the shared Hippocampus data")
    import torch

    from samunet.utils.logs import setup_logging

    setup_logging(None, "bench")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    try:
        dataset, adapter, plans, inputs = setup(work, args.task, args.backbone, args.adapter, args.plan_cases,
                                                args.cases)
        results = []
        for threads in args.threads or [torch.get_num_threads()]:
            torch.set_num_threads(threads)
            for mirror in (False, True):
                result = time_prediction(dataset, adapter, inputs, work / f"out_{threads}_{mirror}", mirror)
                results.append({"threads": threads, **result})
                print(json.dumps(results[-1]), flush=True)
        from samunet.planning.hardware import describe_cpu

        report = {"cpu": describe_cpu(), "backbone": plans.model.backbone, "input_size": plans.model.input_size,
                  "adapter": adapter, "patch_size": plans.crop.patch_size, "packing": plans.packing.mode,
                  "folds": FOLDS, "precision": plans.training.precision, "cpu_count": os.cpu_count(),
                  "load_average_1min_at_end": round(os.getloadavg()[0], 2), "results": results}
        print(json.dumps(report, indent=2))
        return report
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
