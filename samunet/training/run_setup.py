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
from dataclasses import dataclass, field
from pathlib import Path

from samunet.core.paths import preprocessed_root, raw_root, resolve_dataset_name, results_root
from samunet.core.errors import SamunetUserError
from samunet.core.layout import cache_files, cache_folder, cached_case_ids, fold_folder, plans_file
from samunet.core import training_flags
from samunet.core.names import ADAPTER_NAMES, DATASET_JSON_FILE, MODEL_PLANS_FILE, model_folder_name
from samunet.core.plans import Plans
from samunet.core.training_flags import ADAPTER_PLACEHOLDER, TrainingOptions
from samunet.training.slice_dataset import CaseSlices, load_case_slices
from samunet.training.splits import fold_cases, load_or_create_splits
from samunet.training.validation import ValidationCase
from samunet.utils.atomic import copy_file
from samunet.utils.logs import get_logger

log = get_logger()


class SetupError(SamunetUserError, ValueError):
    """A user error found before training starts; the message says what to do."""


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
    """A copy of ``plans`` with the command line's values (each flag of ``TRAINING_FLAGS`` that names a plans
    field); also returns {"training.epochs": 10, ...}."""
    plans = copy.deepcopy(plans)
    overrides: dict[str, object] = {}
    flags = [f for f in training_flags.TRAINING_FLAGS if f.plans_field]
    for flag in flags:
        value = getattr(options, flag.name)
        if value is None:
            continue
        if flag.choices and value not in flag.choices:
            raise SetupError(training_flags.value_problem(flag, value))
        section, attr = _plans_section(plans, flag.plans_field, options.adapter)
        setattr(section, attr, value)
        overrides[flag.override_key(options.adapter)] = value
    for flag in flags:
        section, attr = _plans_section(plans, flag.plans_field, options.adapter)
        if flag.minimum is not None and getattr(section, attr) < flag.minimum:
            raise SetupError(f"{flag.override_key(options.adapter)} must be at least {flag.minimum:g}, "
                             f"got {getattr(section, attr)}")
    return plans, overrides


def _plans_section(plans: Plans, plans_field: str, adapter: str) -> tuple[object, str]:
    """The plans section holding ``plans_field`` ("training.epochs", "adapters.{adapter}.learning_rate") and the
    attribute's name in it."""
    section, attr = plans_field.rsplit(".", 1)
    if section == f"adapters.{ADAPTER_PLACEHOLDER}":
        return plans.adapter_config(adapter), attr
    return getattr(plans, section), attr


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
        raise SetupError(f"{cache}: no preprocessed cases; run samunet_preprocess -d {options.dataset} "
                         f"-p {options.plans_name}")
    splits = load_or_create_splits(preprocessed, case_ids, write=write_splits) if options.fold != "all" else []
    train_cases, val_cases = fold_cases(splits, options.fold, case_ids)
    model_folder = results_root() / dataset_name / model_folder_name(options.adapter, options.plans_name)
    fold_path = fold_folder(model_folder, options.fold)
    return TrainingRun(options, dataset_name, plans, overrides, preprocessed, cache, model_folder, fold_path,
                       train_cases, val_cases, seed=int(plans.training.seed))
