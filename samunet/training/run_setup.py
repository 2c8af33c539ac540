"""Everything a training run needs before the first step: plans with CLI overrides, folders, folds, cases.

Hyper-parameters come from the plans; command-line options override them for this run only. Overrides
that change what the model is (backbone, base checkpoint) are written into the model folder's
``plans.json`` copy, which prediction reads; that copy is shared by all folds, so a fold trained with
different model-defining plans than its siblings is refused (their ensemble would be meaningless).
Nothing is written into the results folder until the adapter is built (``write_model_folder_files``), so a
start that fails (a wrong ``--backbone``, missing weights) leaves nothing that blocks the corrected command.
"""
from __future__ import annotations

import copy
import os
import platform
import socket
import sys
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

from samunet.core.paths import preprocessed_root, raw_root, resolve_dataset_name, results_root
from samunet.core.errors import SamunetUserError
from samunet.core.layout import cache_files, cache_folder, cached_case_ids, fold_folder, plans_file
from samunet.core.names import ADAPTER_NAMES, BACKBONE_NAMES, DEFAULT_PLANS_NAME, DATASET_JSON_FILE, ENCODER_RUNTIMES, DEBUG_FILE, MODEL_PLANS_FILE, model_folder_name
from samunet.core.plans import Plans
from samunet.training.slice_dataset import CaseSlices, load_case_slices
from samunet.training.splits import fold_cases, load_or_create_splits
from samunet.training.validation import ValidationCase
from samunet.utils.atomic import copy_file, read_json, write_json
from samunet.utils.logs import get_logger

log = get_logger()


class SetupError(SamunetUserError, ValueError):
    """A user error found before training starts; the message says what to do."""


@dataclass
class TrainingOptions:
    """The command line, parsed (None: take the plans' value)."""

    dataset: str
    adapter: str
    fold: int | str
    plans_name: str = DEFAULT_PLANS_NAME
    epochs: int | None = None
    iters_per_epoch: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    backbone: str | None = None
    checkpoint: str | None = None
    device: str | None = None  # None: the plans' training.device
    encoder_runtime: str | None = None  # None: the plans' model.encoder_runtime
    resume: bool = False
    val_only: bool = False
    seed: int | None = None
    num_workers: int | None = None
    time_limit_min: float | None = None
    validate_every: int | None = None
    no_augment: bool = False
    disable_tta: bool = False


@dataclass
class TrainingRun:
    options: TrainingOptions
    dataset_name: str
    plans: Plans  # with overrides applied
    overrides: dict[str, object]
    preprocessed_folder: Path  # $SAMUNET_PREPROCESSED/DatasetXXX_Name
    cache_folder: Path  # .../<plans_name>/
    model_folder: Path  # $SAMUNET_RESULTS/DatasetXXX_Name/<adapter>__<plans_name>
    fold_folder: Path
    train_cases: list[str]
    val_cases: list[str]
    seed: int
    extra: dict = field(default_factory=dict)

    @property
    def training(self):
        return self.plans.training

    @property
    def time_limit_min(self) -> float | None:
        """The fold's wall-time limit, validation included: ``--time-limit-min`` if given (0: none), else the
        plans' ``training.time_budget_min``."""
        given = self.options.time_limit_min
        if given is not None:
            return given if given > 0 else None
        return self.plans.training.time_budget_min

    def planned_cost(self):
        """``plans.cost`` when its figures describe this run's adapter (they are measured for the recommended one)."""
        cost = self.plans.cost
        return cost if cost is not None and cost.adapter == self.options.adapter else None

    def departures_from_plan(self) -> list[str]:
        """What makes this run other than the one the plans' cost model sized to the budget (the schedule's
        overrides, a time limit other than the plans' budget); empty when it is the planned run."""
        changed = [k for k in ("training.epochs", "training.iterations_per_epoch", "training.batch_size")
                   if k in self.overrides]
        if self.time_limit_min != self.plans.training.time_budget_min:
            changed.append("time limit")
        return changed

    def case_slices(self, case_ids: list[str]) -> list[CaseSlices]:
        scheme = self.plans.label_scheme
        return [load_case_slices(self.cache_folder, c, scheme) for c in case_ids]

    def validation_cases(self) -> list[ValidationCase]:
        labels = raw_root() / self.dataset_name / "labelsTr"
        return [ValidationCase(c, *cache_files(self.cache_folder, c), labels / f"{c}{self.plans.file_ending}")
                for c in self.val_cases]


def apply_overrides(plans: Plans, options: TrainingOptions) -> tuple[Plans, dict[str, object]]:
    """A copy of ``plans`` with the command line's values; also returns {"training.epochs": 10, ...}."""
    plans = copy.deepcopy(plans)
    overrides: dict[str, object] = {}

    def put(section, attr: str, key: str, value) -> None:
        if value is not None:
            setattr(section, attr, value)
            overrides[key] = value

    put(plans.training, "epochs", "training.epochs", options.epochs)
    put(plans.training, "iterations_per_epoch", "training.iterations_per_epoch", options.iters_per_epoch)
    put(plans.training, "batch_size", "training.batch_size", options.batch_size)
    put(plans.training, "num_workers", "training.num_workers", options.num_workers)
    put(plans.training, "seed", "training.seed", options.seed)
    put(plans.training, "validate_every", "training.validate_every", options.validate_every)
    put(plans.training, "device", "training.device", options.device)
    if options.backbone is not None and options.backbone not in BACKBONE_NAMES:
        raise SetupError(f"--backbone {options.backbone!r} is unknown; choose one of {', '.join(BACKBONE_NAMES)}")
    put(plans.model, "backbone", "model.backbone", options.backbone)
    put(plans.model, "checkpoint", "model.checkpoint", options.checkpoint)
    if options.encoder_runtime is not None and options.encoder_runtime not in ENCODER_RUNTIMES:
        raise SetupError(f"--encoder-runtime {options.encoder_runtime!r} is unknown; choose one of "
                         f"{', '.join(ENCODER_RUNTIMES)}")
    put(plans.model, "encoder_runtime", "model.encoder_runtime", options.encoder_runtime)
    if options.lr is not None:
        put(plans.adapter_config(options.adapter), "learning_rate", f"adapters.{options.adapter}.learning_rate", options.lr)
    for name in ("epochs", "iterations_per_epoch", "batch_size", "validate_every"):
        if getattr(plans.training, name) < 1:
            raise SetupError(f"training.{name} must be at least 1, got {getattr(plans.training, name)}")
    return plans, overrides


def check_model_folder(run: TrainingRun) -> None:
    """Refuse a model folder whose ``plans.json`` was written for other plans (read-only)."""
    plans_copy = run.model_folder / MODEL_PLANS_FILE
    if plans_copy.is_file() and Plans.load(plans_copy).sha256() != run.plans.sha256():
        raise SetupError(
            f"{plans_copy} was written for other plans (other folds were trained with a different backbone, "
            "checkpoint or preprocessing). Train every fold with the same plans, or delete that folder to start over")


def write_model_folder_files(run: TrainingRun) -> None:
    """The fold folder, and plans.json / dataset.json next to the folds (prediction reads them)."""
    check_model_folder(run)
    run.fold_folder.mkdir(parents=True, exist_ok=True)
    plans_copy = run.model_folder / MODEL_PLANS_FILE
    if not plans_copy.is_file():
        run.plans.save(plans_copy)
    dataset_json = run.preprocessed_folder / DATASET_JSON_FILE
    if dataset_json.is_file() and not (run.model_folder / DATASET_JSON_FILE).is_file():
        copy_file(dataset_json, run.model_folder / DATASET_JSON_FILE)


def load_plans(options: TrainingOptions) -> tuple[str, Path, Plans, dict[str, object]]:
    """(dataset name, its preprocessed folder, the plans with the command line's overrides, the overrides);
    reads only."""
    if options.adapter not in ADAPTER_NAMES:
        raise SetupError(f"adapter {options.adapter!r} is unknown; choose one of {', '.join(ADAPTER_NAMES)}")
    dataset_name = resolve_dataset_name(options.dataset)
    preprocessed = preprocessed_root() / dataset_name
    plans_path = plans_file(preprocessed, options.plans_name)
    if not plans_path.is_file():
        raise SetupError(f"{plans_path}: no plans; run samunet_plan -d {options.dataset} first")
    plans, overrides = apply_overrides(Plans.load(plans_path), options)
    if plans.dataset_name != dataset_name:
        raise SetupError(f"{plans_path}: dataset_name is {plans.dataset_name!r}, but these plans sit in "
                         f"{dataset_name}'s folder; plans are made per dataset: run samunet_plan -d {options.dataset}")
    plans.adapter_config(options.adapter)  # a clear error when the plans have no entry for it
    return dataset_name, preprocessed, plans, overrides


def prepare_run(options: TrainingOptions, write_splits: bool = True) -> TrainingRun:
    """Resolve the dataset, load plans, apply overrides, split folds (writing the default splits when
    ``write_splits``), list cases. Writes nothing into the results folder."""
    dataset_name, preprocessed, plans, overrides = load_plans(options)
    cache = cache_folder(preprocessed, options.plans_name)
    case_ids = cached_case_ids(cache)
    if not case_ids:
        raise SetupError(f"{cache}: no preprocessed cases; run samunet_preprocess -d {options.dataset} -p {options.plans_name}")
    splits = load_or_create_splits(preprocessed, case_ids, write=write_splits) if options.fold != "all" else []
    train_cases, val_cases = fold_cases(splits, options.fold, case_ids)
    model_folder = results_root() / dataset_name / model_folder_name(options.adapter, options.plans_name)
    fold_path = fold_folder(model_folder, options.fold)
    return TrainingRun(options, dataset_name, plans, overrides, preprocessed, cache, model_folder, fold_path,
                       train_cases, val_cases, seed=int(plans.training.seed))


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
    timing = {
        "planned_seconds_per_iteration": (float(f"{cost.seconds_per_iteration_at(iterations, run.training.batch_size):.6g}")
                                          if cost else None),
        "planned_seconds_per_iteration_of_planned_run": cost.seconds_per_iteration if cost else None,
        "measured_seconds_per_iteration": round(measured_per_iteration, 4) if measured_per_iteration else None,
        "planned_minutes_per_fold": cost.predicted_minutes_per_fold if cost else None,
        "measured_minutes_per_fold": round(fold_seconds / 60, 2),
        "iterations": iterations,
        "time_limit_min": run.time_limit_min,
        "plans_cost_source": (cost.source if cost else
                              f"none for adapter {run.options.adapter}" + (f" (plans.cost is for {run.plans.cost.adapter})"
                                                                          if run.plans.cost else "")),
    }
    # the plans' figures describe the planned run: a shorter limit or another schedule is not comparable
    changed = run.departures_from_plan()
    timing["comparable"] = not changed
    timing["not_comparable_because"] = changed
    off = []
    for what, planned, measured in (("seconds per iteration", timing["planned_seconds_per_iteration"], measured_per_iteration),
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
