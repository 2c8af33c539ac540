"""samunet_train DATASET ADAPTER FOLD: train one adapter on one fold (0-4, or 'all').

Hyper-parameters come from the plans; every option below overrides them for this run and is recorded in
fold_N/debug.json. Also runs under torchrun --nproc_per_node N -m samunet.training.cli ...
"""
from __future__ import annotations

import argparse
import sys

from samunet.core import nnunet_flags
from samunet.core.command import CommandParser, add_nnunet_spellings, user_command
from samunet.core.errors import InvalidValueError
from samunet.core.names import ADAPTER_NAMES, DEFAULT_PLANS_NAME
from samunet.core.training_flags import TrainingOptions, add_training_flags, flag_values

PROG = "samunet_train"


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog=PROG, description=__doc__,
        epilog="Example: samunet_train 4 ssam 0 --epochs 20 --time-limit-min 30")
    p.add_argument("dataset", help="dataset id or name: 4, 004 or Dataset004_Hippocampus")
    p.add_argument("adapter", help=" | ".join(ADAPTER_NAMES))
    p.add_argument("fold", help="0-4, or 'all' (train on every case, no validation)")
    p.add_argument("-p", "--plans", dest="plans_name", default=DEFAULT_PLANS_NAME,
                   help=f"plans name (default {DEFAULT_PLANS_NAME})")
    add_training_flags(p)
    add_nnunet_spellings(p, nnunet_flags.TRAIN)
    return p


def check_adapter(name: str) -> None:
    """Refuse an unknown adapter before any work (an nnU-Net configuration gets its samunet equivalent)."""
    if name not in ADAPTER_NAMES:
        hint = nnunet_flags.adapter_hint(name) or f"choose one of {', '.join(ADAPTER_NAMES)}"
        raise InvalidValueError(f"adapter {name!r} is unknown; {hint}")


def options_from_args(args: argparse.Namespace) -> TrainingOptions:
    from samunet.training.splits import parse_fold

    return TrainingOptions(dataset=args.dataset, adapter=args.adapter, fold=parse_fold(args.fold),
                           plans_name=args.plans_name, **flag_values(args))


@user_command(PROG, interrupted_hint="resume with --continue")
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    check_adapter(args.adapter)
    options = options_from_args(args)
    from samunet.training.ddp import launch_torchrun, launched_by_torchrun

    if args.num_gpus > 1 and not launched_by_torchrun():
        sys.exit(launch_torchrun(args.num_gpus, ["--num-gpus" if a == "-num_gpus" else a for a in argv]))
    from samunet.training.run_training import run_training

    run_training(options, argv)


if __name__ == "__main__":
    main()
