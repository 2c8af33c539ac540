"""One training run, top to bottom: set-up, then the trainer's loop (``FoldTrainer.train``), then its finish.

Set-up order matters: everything that can fail on a user's input (plans, device, folds, the adapter and its
training recipe) runs before anything is written into the results folder, so a failed start leaves nothing
behind that blocks the corrected command.
"""
from __future__ import annotations

import contextlib
import os

import torch

from samunet.core.names import TRAINING_STATE_FILE
from samunet.modeling.runtime import resolve_device
from samunet.report.build import write_report_or_warn
from samunet.training.ddp import DistributedContext, barrier, init_distributed, shutdown_distributed
from samunet.training.fold_lock import FoldLock
from samunet.training.run_records import record_timing, write_debug_json
from samunet.training.run_setup import (TrainingOptions, TrainingRun, check_model_folder, load_plans, prepare_run,
                                        write_model_folder_files)
from samunet.training.trainer import FoldTrainer
from samunet.training.training_state import CheckpointError, checkpoint_path
from samunet.utils.logs import get_logger, setup_logging

log = get_logger()


def run_training(options: TrainingOptions, argv: list[str]) -> None:
    setup_logging(None)  # console only until the fold folder exists
    # 1. plans (with the command line's overrides) decide the device, which decides the process group
    device = training_device(options)
    ctx = init_distributed(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    _set_threads(ctx)
    try:
        # 2. folds and cases; the adapter and the trainer (loss, optimizer, schedule): still nothing in results
        run = _prepare(options, ctx)
        check_model_folder(run)
        adapter = build_adapter_for(run, device)
        trainer = FoldTrainer(run, adapter, device, ctx)
        # 3. the model folder, its log, the fold lock; then train (or only validate)
        if ctx.is_main:
            write_model_folder_files(run)
            setup_logging(run.fold_folder, prefix="training_log")
        barrier(ctx)
        with FoldLock(run.fold_folder) if ctx.is_main else contextlib.nullcontext():
            if ctx.is_main:
                write_debug_json(run, argv, str(device), trainer.policy.name, ctx.world_size)
            if options.val_only:
                _validate_only(trainer, run)
                return
            _resume_if_asked(trainer, run, options.resume, ctx)
            trainer.train()
            if ctx.is_main:
                iterations, training_seconds = trainer.timing()
                record_timing(run, iterations, training_seconds, trainer.budget.elapsed())
                write_report_or_warn(run.fold_folder)  # report.html of the final validation; never fails
    finally:
        shutdown_distributed()


def training_device(options: TrainingOptions) -> torch.device:
    """``--device``, else the plans' ``training.device``; one the machine lacks is an error naming which."""
    _, _, plans, _ = load_plans(options)
    source = "--device" if options.device is not None else f"training.device (plans {options.plans_name})"
    return resolve_device(plans.training.device, source)


def _set_threads(ctx: DistributedContext) -> None:
    """CPU processes of one node share its cores (torch would give each of them all of them)."""
    if ctx.enabled:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def _prepare(options: TrainingOptions, ctx: DistributedContext) -> TrainingRun:
    """Rank 0 writes the default splits first; the other ranks read them after the barrier."""
    run = prepare_run(options, write_splits=True) if ctx.is_main else None
    barrier(ctx)
    return run if run is not None else prepare_run(options, write_splits=False)


def build_adapter_for(run: TrainingRun, device: torch.device) -> torch.nn.Module:
    from samunet.adapters import build_adapter

    torch.manual_seed(run.seed)  # identical initial weights on every rank and every run with this seed
    return build_adapter(run.options.adapter, run.plans).to(device)


def _resume_if_asked(trainer: FoldTrainer, run: TrainingRun, resume: bool, ctx: DistributedContext) -> None:
    resumable = (run.fold_folder / TRAINING_STATE_FILE).is_file()
    if resume:
        if resumable:
            trainer.resume()
        else:
            log.warning("--continue: nothing to resume in %s yet; starting a new training", run.fold_folder)
    elif resumable and ctx.is_main:
        log.warning("%s already has checkpoints: starting over and overwriting them (use --continue to resume)",
                    run.fold_folder)


def _validate_only(trainer: FoldTrainer, run: TrainingRun) -> None:
    from samunet.adapters.checkpoint import load_adapter_checkpoint

    path = checkpoint_path(run.fold_folder, "final")
    if not path.is_file():
        raise CheckpointError(f"{path}: no final checkpoint to validate; finish the training first (or --continue it)")
    if trainer.ctx.is_main:
        load_adapter_checkpoint(trainer.adapter, path, expected=trainer.expected())
        trainer.final_validation(trainer.fold_budget.final_mirroring())
        write_report_or_warn(run.fold_folder)
