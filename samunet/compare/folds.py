"""What each adapter x fold of a comparison still needs, and running it through samunet_train's own entry point.

A fold is *done* when it has ``checkpoint_final`` and ``validation/summary.json``: it is reused as it is.
A fold with ``checkpoint_final`` but no summary (killed during the final validation) is validated only
(``samunet_train --val-only``). A fold with a resume state but no final checkpoint (killed during training)
is continued (``samunet_train --continue``: exact resume of weights, optimizer, RNG and history; a time limit
starts afresh for the continued part, as with ``--continue``). Anything else is trained from the start.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from samunet.core import training_flags
from samunet.core.layout import checkpoint_file, fold_folder
from samunet.core.names import DEBUG_FILE, SUMMARY_FILE, TRAINING_STATE_FILE, VALIDATION_FOLDER
from samunet.core.training_flags import TrainingOptions

DONE, VALIDATE, CONTINUE, TRAIN = "done", "validate only", "continue", "train"


@dataclass(frozen=True)
class FoldJob:
    adapter: str
    fold: int
    folder: Path  # fold_N of <adapter>__<plans>

    def summary_file(self) -> Path:
        return self.folder / VALIDATION_FOLDER / SUMMARY_FILE

    def state(self) -> str:
        """DONE, VALIDATE, CONTINUE or TRAIN (see the module docstring)."""
        if checkpoint_file(self.folder, "final").is_file():
            return DONE if self.summary_file().is_file() else VALIDATE
        return CONTINUE if (self.folder / TRAINING_STATE_FILE).is_file() else TRAIN


def fold_jobs(model_folders: dict[str, Path], folds: list[int]) -> list[FoldJob]:
    """Adapter-major order: each adapter's folds in a row (its model folder's plans.json is written once)."""
    return [FoldJob(adapter, fold, fold_folder(folder, fold)) for adapter, folder in model_folders.items()
            for fold in folds]


def reuse_differences(job: FoldJob, base: TrainingOptions) -> list[str]:
    """How a finished fold's recorded overrides differ from this comparison's (a fair table trains all alike)."""
    from samunet.utils.atomic import read_json

    path = job.folder / DEBUG_FILE
    try:
        recorded = read_json(path).get("overrides", {}) if path.is_file() else {}
    except ValueError:
        return [f"{path} is unreadable"]
    asked = {f.override_key(job.adapter): getattr(base, f.name) for f in training_flags.TRAINING_FLAGS
             if f.compare_reuse_check}
    return [f"{key} {recorded.get(key, 'as planned')} (asked {value})" for key, value in asked.items()
            if value is not None and recorded.get(key) != value]


def training_argv(options: TrainingOptions) -> list[str]:
    """The samunet_train command line equivalent to ``options`` (recorded in the fold's debug.json)."""
    return ([str(options.dataset), options.adapter, str(options.fold), "-p", options.plans_name] +
            training_flags.flag_argv(options))


def options_for(job: FoldJob, base: TrainingOptions) -> TrainingOptions:
    """``base`` (the comparison's overrides) for this adapter and fold, continued or validated as its state asks."""
    state = job.state()
    return base.replace(adapter=job.adapter, fold=job.fold, resume=state == CONTINUE, val_only=state == VALIDATE)


def train_fold(options: TrainingOptions) -> None:
    """One samunet_train run, in this process (``run_training`` is samunet_train's entry point after parsing)."""
    from samunet.training.run_training import run_training

    run_training(options, training_argv(options))
