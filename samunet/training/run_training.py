"""Wire one training run together: device, process group, run set-up, fold lock, adapter, trainer."""
from __future__ import annotations

import contextlib
import os

import torch

from samunet.training.ddp import DistributedContext, barrier, init_distributed, shutdown_distributed
from samunet.training.fold_lock import FoldLock
from samunet.training.run_setup import TrainingOptions, TrainingRun, prepare_run, write_debug_json
from samunet.training.train_step import precision_policy, resolve_device
from samunet.training.trainer import FoldTrainer
from samunet.core.names import TRAINING_STATE_FILE
from samunet.training.training_state import CheckpointError, checkpoint_path
from samunet.utils.logs import get_logger, setup_logging

log = get_logger()


def _set_threads(ctx: DistributedContext) -> None:
    """CPU processes of one node share its cores (torch would give each of them all of them)."""
    if ctx.enabled:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def build_adapter_for(run: TrainingRun, device: torch.device) -> torch.nn.Module:
    from samunet.adapters import build_adapter

    torch.manual_seed(run.seed)  # identical initial weights on every rank and every run with this seed
    return build_adapter(run.options.adapter, run.plans).to(device)


def _prepare(options: TrainingOptions, ctx: DistributedContext) -> TrainingRun:
    """Rank 0 writes splits and copies first; the other ranks read them after the barrier."""
    run = prepare_run(options, write_files=True) if ctx.is_main else None
    barrier(ctx)
    return run if run is not None else prepare_run(options, write_files=False)


def run_training(options: TrainingOptions, argv: list[str]) -> None:
    setup_logging(None)  # console only until the fold folder is known
    device = resolve_device(options.device)
    ctx = init_distributed(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    _set_threads(ctx)
    try:
        run = _prepare(options, ctx)
        setup_logging(run.fold_folder if ctx.is_main else None, prefix="training_log")
        lock = FoldLock(run.fold_folder) if ctx.is_main else contextlib.nullcontext()
        with lock:
            adapter = build_adapter_for(run, device)
            trainer = FoldTrainer(run, adapter, device, ctx)
            if ctx.is_main:
                write_debug_json(run, argv, str(device), precision_policy(device, run.plans.training.precision).name,
                                 ctx.world_size)
            if options.val_only:
                _validate_only(trainer, run)
                return
            resumable = (run.fold_folder / TRAINING_STATE_FILE).is_file()
            if options.resume:
                if resumable:
                    trainer.resume()
                else:
                    log.warning("--continue: nothing to resume in %s yet; starting a new training", run.fold_folder)
            elif resumable and ctx.is_main:
                log.warning("%s already has checkpoints: starting over and overwriting them (use --continue to resume)",
                            run.fold_folder)
            trainer.train()
    finally:
        shutdown_distributed()


def _validate_only(trainer: FoldTrainer, run: TrainingRun) -> None:
    from samunet.adapters.checkpoint import load_adapter_checkpoint

    path = checkpoint_path(run.fold_folder, "final")
    if not path.is_file():
        raise CheckpointError(f"{path}: no final checkpoint to validate; finish the training first (or --continue it)")
    if trainer.ctx.is_main:
        load_adapter_checkpoint(trainer.adapter, path, expected=trainer.expected())
        trainer.final_validation()
