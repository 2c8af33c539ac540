"""What a training run writes about itself in its fold's ``debug.json``: how it was started (``write_debug_json``),
the figures it measured (``record_results``: samunet_compare's leaderboard reads them) and its timing against the
plans' cost model (``record_timing``). Every write merges into the file and is atomic."""
from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING

from samunet.core.names import DEBUG_FILE
from samunet.utils.atomic import read_json, write_json
from samunet.utils.logs import get_logger

if TYPE_CHECKING:
    from samunet.training.run_setup import TrainingRun

log = get_logger()


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


TIMING_KEY = "timing"
TIMING_TOLERANCE = 0.25  # measured figures further than this from the plans' get a warning


def record_timing(run: TrainingRun, iterations: int, training_seconds: float, fold_seconds: float) -> dict:
    """Plan against what this run saw, into ``debug.json``'s ``timing``; one warning line when a figure is more
    than 25% off (the plans' cost model was measured on another machine, under load, or for other settings).
    The planned seconds per iteration are the cost model's for the iterations this run trained (the budget's fit
    or clock changes their count, and a cached run's first iterations pay the encodings); the planned run's own
    average is kept beside it."""
    cost = run.planned_cost()
    measured_per_iteration = training_seconds / iterations if iterations else None
    planned_per_iteration = cost.seconds_per_iteration_at(iterations, run.training.batch_size) if cost else None
    no_cost = f"none for adapter {run.options.adapter}" + (f" (plans.cost is for {run.plans.cost.adapter})"
                                                           if run.plans.cost else "")
    timing = {
        "planned_seconds_per_iteration": float(f"{planned_per_iteration:.6g}") if cost else None,
        "planned_seconds_per_iteration_of_planned_run": cost.seconds_per_iteration if cost else None,
        "measured_seconds_per_iteration": round(measured_per_iteration, 4) if measured_per_iteration else None,
        "planned_minutes_per_fold": cost.predicted_minutes_per_fold if cost else None,
        "measured_minutes_per_fold": round(fold_seconds / 60, 2),
        "iterations": iterations,
        "time_limit_min": run.time_limit_min,
        "plans_cost_source": cost.source if cost else no_cost,
    }
    # the plans' figures describe the planned run: a shorter limit or another schedule is not comparable
    changed = run.departures_from_plan()
    timing["comparable"] = not changed
    timing["not_comparable_because"] = changed
    off = []
    for what, planned, measured in (
            ("seconds per iteration", timing["planned_seconds_per_iteration"], measured_per_iteration),
            ("minutes per fold", timing["planned_minutes_per_fold"], fold_seconds / 60)):
        if planned and measured and abs(measured / planned - 1) > TIMING_TOLERANCE:
            off.append(f"{what} {measured:.3g} vs {planned:.3g} planned")
    if off and not changed:
        log.warning("Timing differs from the plans by more than %d%%: %s (re-plan on this machine if it is not the "
                    "one that planned, or if it was busy)", round(TIMING_TOLERANCE * 100), "; ".join(off))
    _update_debug_json(run.fold_folder, TIMING_KEY, timing)
    return timing


def write_debug_json(run: TrainingRun, argv: list[str], device: str, precision: str, world_size: int) -> None:
    """``debug.json``: what this run used, so a result can be reproduced or explained."""
    packages = ("samunet", "torch", "numpy", "segment-anything", "batchgeneratorsv2", "SimpleITK", "safetensors",
                "openvino")
    earlier = _read_debug_json(run.fold_folder)
    write_json({
        "command": [Path(sys.argv[0]).name] + list(argv),
        "dataset": run.dataset_name,
        "adapter": run.options.adapter,
        "fold": run.options.fold,
        "plans_name": run.options.plans_name,
        "overrides": run.overrides,
        "seed": run.seed,
        "device": device,
        "precision": precision,
        "world_size": world_size,
        "num_train_cases": len(run.train_cases),
        "num_val_cases": len(run.val_cases),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in packages},
        "plans": run.plans.to_dict(),
        **run.extra,
        # what earlier runs of this fold measured (a --val-only run must not lose the training time)
        **{key: earlier[key] for key in (RESULTS_KEY, TIMING_KEY) if key in earlier},
    }, run.fold_folder / DEBUG_FILE)


# debug.json's section of figures measured by the run (samunet_compare's leaderboard reads them):
# training_seconds (sum of the epochs' seconds, without validations), epochs, iterations, stopped_by_time,
# trainable_parameters, and final_validation {seconds, cases, mirroring} (wall time of the final validation)
RESULTS_KEY = "results"


def _read_debug_json(fold_folder: Path) -> dict:
    path = Path(fold_folder) / DEBUG_FILE
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except ValueError:  # damaged: rewritten whole by the next write_debug_json
        return {}
    return data if isinstance(data, dict) else {}


def record_results(fold_folder: Path, **figures) -> None:
    """Merge ``figures`` into debug.json's ``results`` section (atomic rewrite)."""
    _update_debug_json(fold_folder, RESULTS_KEY, figures)


def _update_debug_json(fold_folder: Path, section: str, figures: dict) -> None:
    """Merge ``figures`` into one section of debug.json (atomic rewrite)."""
    data = _read_debug_json(fold_folder)
    data[section] = {**data.get(section, {}), **figures}
    write_json(data, Path(fold_folder) / DEBUG_FILE)
