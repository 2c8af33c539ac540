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
from samunet.core.names import ADAPTER_NAMES, BACKBONE_NAMES, DEFAULT_PLANS_NAME, ENCODER_RUNTIMES

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
    p.add_argument("--epochs", type=int, help="number of epochs (with --continue: extends the run)")
    p.add_argument("--iters-per-epoch", type=int, help="optimizer steps per epoch")
    p.add_argument("--batch-size", type=int, help="global batch size (split across DDP processes)")
    p.add_argument("--lr", type=float, help="base learning rate of the adapter")
    p.add_argument("--backbone", help=f"override the planned backbone ({', '.join(BACKBONE_NAMES)})")
    p.add_argument("--checkpoint", help="base weights file for the backbone (default: looked up by backbone name)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: the plans' training.device)")
    p.add_argument("--encoder-runtime", help=f"how a frozen encoder runs: {', '.join(ENCODER_RUNTIMES)} "
                   "(default: the plans' model.encoder_runtime)")
    p.add_argument("--continue", dest="resume", action="store_true", help="resume from checkpoint_latest")
    p.add_argument("--val-only", action="store_true", help="only re-run the final validation of checkpoint_final")
    p.add_argument("--num-gpus", type=int, default=1, help="N > 1: launch N DDP processes through torchrun")
    p.add_argument("--seed", type=int, help="random seed (default: plans.training.seed)")
    p.add_argument("--num-workers", type=int, help="data-loading worker processes (0: load in the training process)")
    p.add_argument("--validate-every", type=int, help="epochs between 3D validations")
    p.add_argument("--time-limit-min", type=float, help="stop after this many minutes (final checkpoint + validation "
                   "follow); the learning-rate decay is fitted into the time")
    p.add_argument("--disable-tta", action="store_true", help="final validation without mirroring (4x faster; "
                   "Dice usually a little lower)")
    p.add_argument("--no-augment", action="store_true", help="train on centred, unaugmented patches")
    add_nnunet_spellings(p, nnunet_flags.TRAIN)
    return p


def check_adapter(name: str) -> None:
    """Refuse an unknown adapter before any work (an nnU-Net configuration gets its samunet equivalent)."""
    if name not in ADAPTER_NAMES:
        hint = nnunet_flags.adapter_hint(name) or f"choose one of {', '.join(ADAPTER_NAMES)}"
        raise InvalidValueError(f"adapter {name!r} is unknown; {hint}")


def options_from_args(args: argparse.Namespace):
    from samunet.training.run_setup import TrainingOptions
    from samunet.training.splits import parse_fold

    return TrainingOptions(
        dataset=args.dataset, adapter=args.adapter, fold=parse_fold(args.fold), plans_name=args.plans_name,
        epochs=args.epochs, iters_per_epoch=args.iters_per_epoch, batch_size=args.batch_size, lr=args.lr,
        backbone=args.backbone, checkpoint=args.checkpoint, device=args.device,
        encoder_runtime=args.encoder_runtime, resume=args.resume,
        val_only=args.val_only, seed=args.seed, num_workers=args.num_workers, time_limit_min=args.time_limit_min,
        validate_every=args.validate_every, no_augment=args.no_augment,
        disable_tta=args.disable_tta)


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
