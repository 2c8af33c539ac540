"""samunet_train's options, each written once in ``TRAINING_FLAGS``.

samunet_train's parser, ``TrainingOptions``, the plans overrides (``training.run_setup.apply_overrides``),
samunet_compare's parser and forwarding (``compare.folds.training_argv``) and nnU-Net's spellings of these flags
(``core.nnunet_flags.TRAIN``) are all derived from the table, so adding a flag is one row here and its line in
documentation/training.md; the code that acts on it reads ``options.<name>``. The table sits in core because
``nnunet_flags`` (core) derives from it; only the standard library is imported, so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

from samunet.core.errors import InvalidValueError
from samunet.core.names import BACKBONE_NAMES, DEFAULT_PLANS_NAME, ENCODER_RUNTIMES

ADAPTER_PLACEHOLDER = "{adapter}"  # in a plans field: the trained adapter's entry (adapters.{adapter}.learning_rate)


@dataclass(frozen=True)
class TrainingFlag:
    flag: str  # "--epochs"
    help: str
    type: Callable[[str], object] | None = None  # None: a switch (off unless given)
    plans_field: str | None = None  # the plans field it overrides for this run; not given: the plans' value
    default: object = None  # the value when not given (None with a plans field: the plans' value)
    default_help: str = ""  # what --help says of the default when the plans field or ``default`` do not say it
    name: str = ""  # the TrainingOptions attribute; "": the flag without dashes, "-" read as "_"
    choices: tuple[str, ...] = ()  # the known values
    minimum: float | None = None  # the smallest value of the flag and of the plans field it overrides
    nnunet: str = ""  # nnU-Net's spelling of the same option (accepted as an alias)
    not_in_compare: str = ""  # why samunet_compare refuses the flag ("": it forwards it to every fold)
    compare_reuse_check: bool = False  # samunet_compare warns when it reuses a fold trained with another value

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", self.flag.lstrip("-").replace("-", "_"))
        if self.type is None and self.default is None:
            object.__setattr__(self, "default", False)

    @property
    def is_switch(self) -> bool:
        return self.type is None

    def override_key(self, adapter: str) -> str:
        """The plans field this flag overrides, as recorded in debug.json's ``overrides``."""
        return self.plans_field.replace(ADAPTER_PLACEHOLDER, adapter)

    def help_text(self) -> str:
        if self.default_help:
            return f"{self.help} (default: {self.default_help})"
        if self.plans_field:
            return f"{self.help} (default: the plans' {self.plans_field.replace(ADAPTER_PLACEHOLDER, 'ADAPTER')})"
        if not self.is_switch and self.default is not None:
            return f"{self.help} (default {self.default})"
        return self.help


TRAINING_FLAGS: tuple[TrainingFlag, ...] = (
    TrainingFlag("--epochs", "number of epochs (with --continue: extends the run)", int, "training.epochs",
                 minimum=1, compare_reuse_check=True),
    TrainingFlag("--iters-per-epoch", "optimizer steps per epoch", int, "training.iterations_per_epoch",
                 minimum=1, compare_reuse_check=True),
    TrainingFlag("--batch-size", "global batch size (split across DDP processes)", int, "training.batch_size",
                 minimum=1, compare_reuse_check=True),
    TrainingFlag("--lr", "base learning rate of the adapter", float, f"adapters.{ADAPTER_PLACEHOLDER}.learning_rate",
                 compare_reuse_check=True),
    TrainingFlag("--backbone", f"override the planned backbone ({', '.join(BACKBONE_NAMES)})", str, "model.backbone",
                 choices=BACKBONE_NAMES, compare_reuse_check=True),
    TrainingFlag("--checkpoint", "base weights file for the backbone", str, "model.checkpoint",
                 default_help="the plans' model.checkpoint, else looked up by backbone name",
                 compare_reuse_check=True),
    TrainingFlag("--device", "auto, cpu, cuda, cuda:N or mps", str, "training.device", nnunet="-device"),
    TrainingFlag("--encoder-runtime", f"how a frozen encoder runs: {', '.join(ENCODER_RUNTIMES)}", str,
                 "model.encoder_runtime", choices=ENCODER_RUNTIMES),
    TrainingFlag("--continue", "resume from checkpoint_latest", name="resume", nnunet="--c",
                 not_in_compare="samunet_compare continues an unfinished fold by itself"),
    TrainingFlag("--val-only", "only re-run the final validation of checkpoint_final", nnunet="--val",
                 not_in_compare="samunet_compare validates a trained fold that lacks its validation by itself"),
    TrainingFlag("--num-gpus", "N > 1: launch N DDP processes through torchrun", int, default=1, nnunet="-num_gpus",
                 not_in_compare="samunet_compare trains each fold in its own process on one device"),
    TrainingFlag("--seed", "random seed", int, "training.seed"),
    TrainingFlag("--num-workers", "data-loading worker processes (0: load in the training process)", int,
                 "training.num_workers"),
    TrainingFlag("--validate-every", "epochs between 3D validations", int, "training.validate_every", minimum=1),
    TrainingFlag("--time-limit-min", "stop after this many minutes (final checkpoint + validation follow); the "
                 "learning-rate decay is fitted into the time", float,
                 default_help="the plans' training.time_budget_min; 0: no limit"),
    TrainingFlag("--disable-tta", "final validation without mirroring (4x faster; Dice usually a little lower)"),
    TrainingFlag("--no-augment", "train on centred, unaugmented patches"),
)


def nnunet_spellings() -> dict[str, str]:
    """nnU-Net flag -> the samunet_train flag with the same meaning."""
    return {f.nnunet: f.flag for f in TRAINING_FLAGS if f.nnunet}


class _RefusedInCompare(argparse.Action):
    """A samunet_train flag samunet_compare decides by itself: stop with one line saying so."""

    def __init__(self, option_strings, dest, reason: str = "", **kwargs):
        self.reason = reason
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        raise InvalidValueError(f"{option_string} is not taken by samunet_compare: {self.reason}")


def add_training_flags(parser: argparse.ArgumentParser, compare: bool = False) -> None:
    """Every flag of the table on ``parser``; for samunet_compare (``compare``) the ones it decides by itself
    stop the command with the reason."""
    for f in TRAINING_FLAGS:
        if compare and f.not_in_compare:
            parser.add_argument(f.flag, dest=f.name, action=_RefusedInCompare, reason=f.not_in_compare,
                                nargs=0 if f.is_switch else None, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        elif f.is_switch:
            parser.add_argument(f.flag, dest=f.name, action="store_true", help=f.help_text())
        else:
            parser.add_argument(f.flag, dest=f.name, type=f.type, default=f.default, help=f.help_text())


def flag_values(args: argparse.Namespace) -> dict[str, object]:
    """The table's values in a parsed namespace (``TrainingOptions``' keyword arguments)."""
    return {f.name: getattr(args, f.name) for f in TRAINING_FLAGS if hasattr(args, f.name)}


def value_problem(flag: TrainingFlag, value) -> str:
    """Why ``value`` is refused for ``flag`` (an unknown name, below the minimum); "" when it is fine or not given."""
    if value is None or flag.is_switch:
        return ""
    if flag.choices and value not in flag.choices:
        return f"{flag.flag} {value!r} is unknown; choose one of {', '.join(flag.choices)}"
    if flag.minimum is not None and value < flag.minimum:
        return f"{flag.flag} must be at least {flag.minimum:g}, got {value}"
    return ""


def flag_argv(options: TrainingOptions) -> list[str]:
    """The flags of the command line that gives ``options`` (a flag at its default is left out)."""
    argv: list[str] = []
    for f in TRAINING_FLAGS:
        value = getattr(options, f.name)
        if f.is_switch:
            argv += [f.flag] if value else []
        elif value is not None and value != f.default:
            argv += [f.flag, str(value)]
    return argv


class TrainingOptions(SimpleNamespace):
    """A training run as the command line asks for it: the dataset, adapter, fold and plans name, and one
    attribute per flag of ``TRAINING_FLAGS`` (the flag's default when not given: None takes the plans' value)."""

    def __init__(self, dataset: str, adapter: str, fold: int | str, plans_name: str = DEFAULT_PLANS_NAME,
                 **values):
        known = {f.name: f.default for f in TRAINING_FLAGS}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise TypeError(f"TrainingOptions has no training flag {', '.join(unknown)}")
        super().__init__(dataset=dataset, adapter=adapter, fold=fold, plans_name=plans_name, **{**known, **values})

    def replace(self, **changes) -> TrainingOptions:
        return TrainingOptions(**{**vars(self), **changes})
