"""samunet against nnU-Net v2 at equal budget: the same dataset, fold, wall-clock budget, machine and metric code.

For one dataset: convert or link it into ``--work`` (kept between calls, so methods can be run one call each),
``samunet_plan`` (fresh plans), then samunet's ``splits_final.json`` with two more entries for the few-case runs:
the first N training cases of fold 0 with fold 0's validation cases (``--train-cases 10 5``: entries 5 and 6, which
both tools read as folds 5 and 6). The same file goes to nnU-Net's preprocessed folder.

- ``nnunet_2d``: ``nnUNetv2_plan_and_preprocess -c 2d`` once, then ``nnunet_budget_trainer.py`` (nnU-Net's trainer
  stopped by the clock, its poly schedule ending at the budget) and nnU-Net's own final validation, all in the Python
  of ``--nnunet-python`` (an environment with ``pip install torch==2.14.1 torchvision==0.29.1 nnunetv2``, the
  ``[bench]`` extra; nnU-Net is never a samunet dependency).
- ``samunet_default`` (the adapter the plans recommend), ``decoder``, ``cnnhead``, ``fusion``: ``samunet_train
  --time-limit-min BUDGET`` (the budget holds samunet's final validation; nnU-Net's comes on top of its budget).

Both are scored by ``samunet_evaluate`` on fold 0's validation cases (DRIVE: the 20 test images, predicted by each
tool's ``predict`` command). One CSV row per run in ``--csv`` (columns ``CSV_COLUMNS``); a rerun replaces the row
with the same dataset, method and train_cases.

    python benchmarks/bench_vs_nnunet.py --dataset hippocampus --methods nnunet_2d fusion \\
        --train-cases all 5 --budget-min 30 --nnunet-python /path/to/nnunet-venv/bin/python

Run it on an otherwise idle machine, one method after the other (the script never runs two at once).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_plan_promise import DATASETS, SHARED, prepare_raw, run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO / "benchmarks" / "results" / "vs_nnunet.csv"
CSV_COLUMNS = ["dataset", "method", "train_cases", "budget_min", "dice_mean", "hd95_mean", "train_min",
               "predict_s_per_case", "cpu", "date"]
DATASET_NAMES = {"hippocampus": "Hippocampus", "leftatrium": "LeftAtrium_LGE_30", "drive": "RetinaVessels_DRIVE"}
NNUNET = "nnunet_2d"
DEFAULT = "samunet_default"
FEW_CASE_FIRST_FOLD = 5  # splits_final.json entries from here on hold the few-case runs
NNUNET_ENV = {"nnUNet_def_n_proc": "2", "nnUNet_n_proc_DA": "2", "nnUNet_compile": "f"}  # shared/BASELINES.md


def methods() -> tuple[str, ...]:
    from samunet.adapters.registry import ADAPTER_CLASSES

    cached = [name for name in ("decoder", "cnnhead", "fusion") if name in ADAPTER_CLASSES]
    return (NNUNET, DEFAULT, *cached)


def cpu_kind() -> str:
    """AMX, AVX-512 or AVX2: the planner's bf16 class of the processor (planning.hardware), AVX-512 without bf16
    counted as AVX-512."""
    from samunet.planning.hardware import AMX, AVX512_BF16, cpu_bf16_capability

    kind = cpu_bf16_capability()
    if kind in (AMX, AVX512_BF16):
        return {AMX: "AMX", AVX512_BF16: "AVX-512"}[kind]
    cpuinfo = Path("/proc/cpuinfo")
    return "AVX-512" if cpuinfo.is_file() and " avx512f " in cpuinfo.read_text(errors="ignore") else "AVX2"


class Workspace:
    """The folders of one dataset's benchmark: samunet's three roots and nnU-Net's three."""

    def __init__(self, work: Path, key: str):
        self.work, self.key = work, key
        for sub in ("raw", "preprocessed", "results", "logs", "nnunet_preprocessed", "nnunet_results", "test"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "SAMUNET_RAW": str(work / "raw"), "SAMUNET_PREPROCESSED": str(work / "preprocessed"),
                    "SAMUNET_RESULTS": str(work / "results")}
        self.nnunet_env = {**self.env, **NNUNET_ENV, "nnUNet_raw": str(work / "raw"),
                           "nnUNet_preprocessed": str(work / "nnunet_preprocessed"),
                           "nnUNet_results": str(work / "nnunet_results")}
        os.environ.update({k: self.env[k] for k in ("SAMUNET_RAW", "SAMUNET_PREPROCESSED", "SAMUNET_RESULTS")})
        existing = [p.name for p in (work / "raw").iterdir() if p.name.startswith("Dataset")]
        self.name = existing[0] if existing else prepare_raw(key, work / "raw")
        self.dataset_id = DATASETS[key][0]

    def log(self, what: str) -> Path:
        return self.work / "logs" / f"{what}.txt"

    def plan(self, backbone: str | None = None) -> dict:
        from samunet.core.layout import plans_file
        from samunet.core.names import DEFAULT_PLANS_NAME

        path = plans_file(self.work / "preprocessed" / self.name, DEFAULT_PLANS_NAME)
        if not path.is_file():
            run([sys.executable, "-m", "samunet.planning.cli", "-d", self.name,
                 *(["--backbone", backbone] if backbone else [])], self.env, self.log("plan"))
        return json.loads(path.read_text())

    def write_splits(self, few_cases: list[int]) -> dict[int | str, int]:
        """samunet's folds plus one few-case fold per count; returns the fold index of each train_cases value."""
        from samunet.core.layout import cached_case_ids, cache_folder
        from samunet.core.names import DEFAULT_PLANS_NAME, SPLITS_FILE
        from samunet.training.splits import make_folds
        from samunet.utils.atomic import write_json

        preprocessed = self.work / "preprocessed" / self.name
        folds = make_folds(cached_case_ids(cache_folder(preprocessed, DEFAULT_PLANS_NAME)))
        index: dict[int | str, int] = {"all": 0}
        for n in few_cases:
            index[n] = len(folds)
            folds.append({"train": folds[0]["train"][:n], "val": folds[0]["val"]})
        assert len(folds) == FEW_CASE_FIRST_FOLD + len(few_cases)
        write_json(folds, preprocessed / SPLITS_FILE)
        return index

    def references(self) -> Path:
        test = self.key == "drive"
        return (SHARED / DATASETS[self.key][1] / "labelsTs") if test else self.work / "raw" / self.name / "labelsTr"

    def evaluate(self, predictions: Path, what: str) -> dict:
        summary = self.work / "logs" / f"summary_{what}.json"
        run([sys.executable, "-m", "samunet.evaluation.cli", "-ref", str(self.references()), "-pred",
             str(predictions), "-d", self.name, "-o", str(summary)], self.env, self.log(f"evaluate_{what}"))
        return json.loads(summary.read_text())

    # --- nnU-Net ---------------------------------------------------------------------------------------------
    def nnunet(self, python: str, fold: int, budget_min: float, what: str) -> tuple[dict, float, float, int]:
        from samunet.core.names import SPLITS_FILE

        preprocessed = self.work / "nnunet_preprocessed" / self.name
        if not (preprocessed / "nnUNetPlans.json").is_file():
            run([str(Path(python).parent / "nnUNetv2_plan_and_preprocess"), "-d", str(self.dataset_id), "-c", "2d",
                 "-np", "2"], self.nnunet_env, self.log("nnunet_plan"))
        shutil.copyfile(self.work / "preprocessed" / self.name / SPLITS_FILE, preprocessed / SPLITS_FILE)
        log = self.log(f"train_{what}")
        run([python, str(REPO / "benchmarks" / "nnunet_budget_trainer.py"), str(self.dataset_id), str(fold),
             str(budget_min)], self.nnunet_env, log)
        record = json.loads(log.read_text().strip().splitlines()[-1])
        validation = Path(record["validation_folder"])
        cases = len(list(validation.glob("*.nii.gz")) + list(validation.glob("*.png")))
        predictions, predict_s = validation, record["validation_seconds"]
        if self.key == "drive":
            predictions = self.work / "test" / what
            predict_log = self.log(f"predict_{what}")
            run([python, str(REPO / "benchmarks" / "nnunet_budget_trainer.py"), "predict", str(self.dataset_id),
                 str(fold), str(SHARED / DATASETS[self.key][1] / "imagesTs"), str(predictions)], self.nnunet_env,
                predict_log)
            predicted = json.loads(predict_log.read_text().strip().splitlines()[-1])
            predict_s, cases = predicted["prediction_seconds"], predicted["cases"]
        return self.evaluate(predictions, what), record["training_seconds"], predict_s, cases

    # --- samunet ---------------------------------------------------------------------------------------------
    def samunet(self, adapter: str, fold: int, budget_min: float, what: str) -> tuple[dict, float, float, int]:
        from samunet.core.names import DEBUG_FILE, DEFAULT_PLANS_NAME, VALIDATION_FOLDER, model_folder_name

        wall = run([sys.executable, "-m", "samunet.training.cli", self.name, adapter, str(fold), "--time-limit-min",
                    str(budget_min)], self.env, self.log(f"train_{what}"))
        folder = self.work / "results" / self.name / model_folder_name(adapter, DEFAULT_PLANS_NAME) / f"fold_{fold}"
        final = (json.loads((folder / DEBUG_FILE).read_text()).get("results") or {}).get("final_validation") or {}
        predictions, predict_s, cases = folder / VALIDATION_FOLDER, final.get("seconds", 0.0), final.get("cases", 0)
        train_s = wall - predict_s
        if self.key == "drive":
            predictions = self.work / "test" / what
            predict_s = run([sys.executable, "-m", "samunet.inference.cli", "-i",
                             str(SHARED / DATASETS[self.key][1] / "imagesTs"), "-o", str(predictions), "-d",
                             self.name, "-a", adapter, "-f", str(fold)], self.env, self.log(f"predict_{what}"))
            cases = len(list(predictions.glob("*.png")))
        return self.evaluate(predictions, what), train_s, predict_s, cases


def write_row(path: Path, row: dict) -> None:
    """Append ``row``, replacing the row of the same dataset, method and train_cases (atomically)."""
    from samunet.utils.atomic import atomic_path

    rows = []
    if path.is_file():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f)
                    if (r["dataset"], r["method"], r["train_cases"]) != (row["dataset"], row["method"],
                                                                        str(row["train_cases"]))]
    rows.append({k: row[k] for k in CSV_COLUMNS})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def plot(table: Path, png: Path) -> None:
    """Dice per method, one group of bars per dataset and training-case count (the results page shows it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from samunet.utils.atomic import atomic_path

    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    groups = sorted({(r["dataset"], r["train_cases"]) for r in rows}, key=lambda g: (g[0], g[1] != "all", g[1]))
    names = [m for m in methods() if any(r["method"] == m for r in rows)]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(groups) * max(1, len(names)) / 3), 3.2))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        dice = {(r["dataset"], r["train_cases"]): float(r["dice_mean"]) for r in rows if r["method"] == name}
        xs = [g for g, key in enumerate(groups) if key in dice]
        ax.bar([x + i * width for x in xs], [dice[groups[x]] for x in xs], width, label=name)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{d}\n{c} cases" for d, c in groups], fontsize=8)
    ax.set_ylabel("fold-0 Dice (DRIVE: test set)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(DATASET_NAMES))
    p.add_argument("--methods", nargs="+", default=list(methods()), choices=methods())
    p.add_argument("--train-cases", nargs="+", default=["all", "10", "5"], help="'all' or numbers of training cases")
    p.add_argument("--budget-min", type=float, default=30.0)
    p.add_argument("--nnunet-python", default=os.environ.get("NNUNET_PYTHON", sys.executable))
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a folder per dataset in /tmp)")
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    p.add_argument("--backbone", default=None, help="samunet's backbone (default: the planner's choice)")
    args = p.parse_args(argv)
    work = args.work or Path("/tmp") / f"samunet_vs_nnunet_{args.dataset}"
    space = Workspace(work, args.dataset)
    plans = space.plan(args.backbone)
    few = sorted({int(n) for n in args.train_cases if n != "all"}, reverse=True)
    fold_of = space.write_splits(few)
    print(f"{space.name}: CPU {cpu_kind()}, budget {args.budget_min:g} min, plans recommend "
          f"{plans['model']['adapter']}; work folder {work}", flush=True)
    done: dict[tuple[str, str], dict] = {}  # (adapter, train_cases) -> row, so samunet_default reuses its adapter's run
    for train_cases in args.train_cases:
        cases = "all" if train_cases == "all" else int(train_cases)
        fold = fold_of[cases]
        for method in args.methods:
            adapter = plans["model"]["adapter"] if method == DEFAULT else method
            what = f"{method}_{train_cases}"
            started = time.monotonic()
            if (adapter, train_cases) in done:
                row = {**done[(adapter, train_cases)], "method": method}
            else:
                if method == NNUNET:
                    summary, train_s, predict_s, n = space.nnunet(args.nnunet_python, fold, args.budget_min, what)
                else:
                    summary, train_s, predict_s, n = space.samunet(adapter, fold, args.budget_min, what)
                mean = summary.get("foreground_mean", {})
                row = {"dataset": DATASET_NAMES[args.dataset], "method": method, "train_cases": train_cases,
                       "budget_min": f"{args.budget_min:g}", "dice_mean": f"{mean.get('Dice', float('nan')):.4f}",
                       "hd95_mean": f"{mean.get('HD95', float('nan')):.2f}", "train_min": f"{train_s / 60:.1f}",
                       "predict_s_per_case": f"{predict_s / max(n, 1):.2f}", "cpu": cpu_kind(),
                       "date": datetime.date.today().isoformat()}
                if method != NNUNET:
                    done[(adapter, train_cases)] = row
            write_row(args.csv, row)
            print(f"{method} ({train_cases} training cases): Dice {row['dice_mean']}, HD95 {row['hd95_mean']}, "
                  f"trained {row['train_min']} min, {row['predict_s_per_case']} s per predicted case "
                  f"({(time.monotonic() - started) / 60:.1f} min in all)", flush=True)
            plot(args.csv, args.csv.with_suffix(".png"))


if __name__ == "__main__":
    main()
