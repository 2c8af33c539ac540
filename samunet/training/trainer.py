"""The training loop for one fold: epochs of sampled batches, 3D validation, checkpoints, final validation.

Small on purpose: data (data_loader), the step (train_step), checkpoints (training_state), validation
(validation), curves (progress), time limit (time_budget) and DDP (ddp) live in their own modules.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from samunet.utils.progress import progress as progress_bar

from samunet.training.data_loader import BatchSpec, EpochSampler, TrainingBatches, make_loader
from samunet.training.embedding_cache import CachedEncoderAdapter, EmbeddingCache, EmbeddingHead
from samunet.training.ddp import DistributedContext, barrier, max_over_ranks, wrap_model
from samunet.training.losses import build_loss
from samunet.training.lr_schedule import build_optimizer, learning_rate_at, set_learning_rate
from samunet.training.progress import TrainingHistory, plot_progress
from samunet.training.run_setup import TrainingRun
from samunet.training.time_budget import TimeBudget
from samunet.training.train_step import StepRunner, precision_policy
from samunet.training.training_state import load_latest, restore_rng, save_checkpoint, save_latest
from samunet.inference.volume_predictor import mirror_combinations
from samunet.training.validation import dice_per_class, is_improvement, mean_foreground_dice, validate
from samunet.utils.logs import get_logger

log = get_logger()


class FoldTrainer:
    def __init__(self, run: TrainingRun, adapter: torch.nn.Module, device: torch.device, ctx: DistributedContext,
                 budget: TimeBudget | None = None):
        self.run, self.adapter, self.device, self.ctx = run, adapter, device, ctx
        plans, name = run.plans, run.options.adapter
        self.config = plans.adapter_config(name)
        self.policy = precision_policy(device, plans.training.precision)
        self.cache = None
        if self.config.cache_embeddings and adapter.supports_embedding_cache:
            # frozen encoder: each distinct input is encoded once; only the head after the embedding trains
            self.cache = EmbeddingCache(adapter, device, autocast_dtype=self.policy.autocast_dtype)
            self.model = wrap_model(EmbeddingHead(adapter, tuple(plans.crop.patch_size)), ctx, device)
        else:
            if self.config.cache_embeddings:
                log.info("cache_embeddings is set but adapter '%s' trains before the embedding: not caching", name)
            self.model = wrap_model(adapter, ctx, device)
        self.optimizer = build_optimizer(adapter.trainable_parameters(), self.config, self.config.learning_rate)
        self.loss_fn = build_loss(self.config, adapter.output_kind, plans.label_scheme)
        self.steps = StepRunner(self.model, self.loss_fn, self.optimizer, device, self.policy)
        self.budget = budget or TimeBudget(run.options.time_limit_min)
        self.history = TrainingHistory()
        self.epoch = 0  # epochs completed
        self.iteration = 0
        self.best: float | None = None
        self.stopped_by_time = False

    # ---- state ---------------------------------------------------------------------------------------
    def metadata(self, **extra) -> dict:
        return {"adapter": self.run.options.adapter, "plans_sha256": self.run.plans.sha256(),
                "dataset": self.run.dataset_name, "fold": self.run.options.fold, "epoch": self.epoch,
                "iteration": self.iteration, "backbone": self.run.plans.model.backbone, **extra}

    def resume(self) -> None:
        state = load_latest(self.adapter, self.run.fold_folder, self.expected())
        self.optimizer.load_state_dict(state.optimizer)
        if self.steps.scaler is not None and state.grad_scaler:
            self.steps.scaler.load_state_dict(state.grad_scaler)
        restore_rng(state)
        self.epoch, self.iteration, self.best = state.epoch, state.iteration, state.best_metric
        self.history = TrainingHistory.from_dict(state.history)
        log.info("Resumed from checkpoint_latest: %d epoch(s), %d iteration(s) done", self.epoch, self.iteration)

    def expected(self) -> dict:
        return {"adapter": self.run.options.adapter, "plans_sha256": self.run.plans.sha256()}

    # ---- training ------------------------------------------------------------------------------------
    def _loader(self):
        t = self.run.training
        per_rank_batch = max(1, math.ceil(t.batch_size / self.ctx.world_size))
        spec = BatchSpec(self.run.case_slices(self.run.train_cases), self.run.plans, per_rank_batch,
                         self.run.seed, self.ctx.rank, augment=not self.run.options.no_augment,
                         cached=self.cache is not None)
        self.sampler = EpochSampler(t.iterations_per_epoch)
        return make_loader(TrainingBatches(spec), self.sampler, t.num_workers)

    def _train_epoch(self, loader) -> float:
        t = self.run.training
        self.sampler.set_epoch(self.epoch)
        total = t.epochs * t.iterations_per_epoch
        losses = []
        self.model.train()
        bar = progress_bar(loader, total=t.iterations_per_epoch, desc=f"epoch {self.epoch}", unit="it",
                           disable=not self.ctx.is_main, leave=False, lines=False, mininterval=2.0)
        for batch in bar:
            # the same value on every rank (the clocks differ slightly), so DDP copies stay identical
            time_used = max_over_ranks(self.ctx, self.budget.fraction_used(), self.device) if self.budget.limited else 0.0
            if time_used >= 1.0:
                self.stopped_by_time = True
                break
            lr = learning_rate_at(self.iteration, self.config.learning_rate, total, self.config.warmup_iterations,
                                  self.config.lr_schedule, self.config.poly_power, time_fraction=time_used)
            set_learning_rate(self.optimizer, lr)
            inputs = batch["images"] if self.cache is None else self.cache.embeddings(batch["images"])
            losses.append(self.steps.step(inputs, batch["seg"]))
            self.iteration += 1
            bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
        bar.close()
        if self.cache is not None:
            log.info("  %s", self.cache.summary())
        return float(np.mean(losses)) if losses else float("nan")

    def _validate(self, final: bool) -> dict | None:
        if not self.run.val_cases:
            return None
        folder = self.run.fold_folder / "validation" if final else None
        mirror = final and not self.run.options.disable_tta
        model = self.adapter if self.cache is None else CachedEncoderAdapter(self.adapter, self.cache)
        summary = validate(model, self.run.validation_cases(), self.run.plans, mirror=mirror,
                           batch_size=max(1, self.run.training.batch_size), output_folder=folder, progress=True)
        per_class, mean = dice_per_class(summary, self.run.plans), mean_foreground_dice(summary)
        log.info("  %s validation (3D, %d cases): mean foreground Dice %.4f | %s", "final" if final else "epoch",
                 len(self.run.val_cases), mean, ", ".join(f"{k} {v:.4f}" for k, v in per_class.items()))
        return summary

    def _save_latest(self) -> None:
        save_latest(self.adapter, self.run.fold_folder, self.metadata(), self.optimizer, self.steps.scaler,
                    self.history.to_dict(), self.best)

    def _announce_final_validation(self) -> None:
        """How much work the final validation is (it can dwarf a short CPU training), and how to cut it."""
        if not self.run.val_cases:
            return
        slices = sum(c.num_slices for c in self.run.case_slices(self.run.val_cases))
        variants = 1 if self.run.options.disable_tta else len(mirror_combinations(self.run.plans.augmentation.mirror_axes))
        message = f"Final validation: {len(self.run.val_cases)} cases, {slices} slices x {variants} mirroring(s)"
        per_encode = self.cache.seconds_per_encode() if self.cache is not None else None
        if per_encode is not None:
            # inputs already encoded by earlier validations are reused, so this is an upper bound
            message += f", at most {slices * variants * per_encode / 60:.0f} min of encoding ({per_encode:.2f} s per slice)"
        if variants > 1:
            message += "; --disable-tta skips the mirroring"
        log.info(message)

    def _end_of_epoch(self, loss: float, seconds: float, lr: float) -> None:
        self.history.add_epoch(self.epoch, loss, lr, seconds)
        self.epoch += 1
        # a run cut by the time limit goes straight to the final validation instead
        validate_now = self.epoch % self.run.training.validate_every == 0 and not self.stopped_by_time
        if self.ctx.is_main:
            log.info("epoch %d: loss %.4f, lr %.2e, %.1f s", self.epoch - 1, loss, lr, seconds)
            self._save_latest()  # before validating: a kill during a long validation loses nothing
            if validate_now:
                self._record_validation(self._validate(final=False))
            self._plot_progress()
        barrier(self.ctx)

    def _plot_progress(self) -> None:
        plot_progress(self.history, self.run.fold_folder / "progress.png")

    def _record_validation(self, summary: dict | None) -> None:
        """Add a no-mirroring validation of the current weights to the history; keep them as best if better."""
        if summary is None:
            return
        mean = mean_foreground_dice(summary)
        self.history.add_validation(self.epoch - 1, dice_per_class(summary, self.run.plans), mean)
        if is_improvement(mean, self.best):
            self.best = mean
            save_checkpoint(self.adapter, self.run.fold_folder, "best", self.metadata(val_mean_dice=mean))
            log.info("  new best mean foreground Dice %.4f: checkpoint_best written", mean)
        self._save_latest()  # with the validation in its history

    def _last_epoch_unvalidated(self) -> bool:
        """True when the final weights were never compared for checkpoint_best (time limit, or an epoch count
        that is not a multiple of validate_every)."""
        if not self.run.val_cases or self.epoch == 0:
            return False
        return not self.history.validation_epochs or self.history.validation_epochs[-1] != self.epoch - 1

    def train(self) -> None:
        t = self.run.training
        loader = self._loader()
        log.info("Training %s on fold %s: %d train / %d val cases, %d epochs x %d iterations, batch %d, %s on %s",
                 self.run.options.adapter, self.run.options.fold, len(self.run.train_cases), len(self.run.val_cases),
                 t.epochs, t.iterations_per_epoch, t.batch_size, self.policy.name, self.device)
        try:
            while self.epoch < t.epochs and not self.stopped_by_time:
                started = time.monotonic()
                loss = self._train_epoch(loader)
                seconds = time.monotonic() - started
                if self.stopped_by_time:
                    log.info("Time limit reached during epoch %d (iteration %d): finishing", self.epoch, self.iteration)
                    if math.isnan(loss):  # not a single step in this epoch: nothing to record
                        break
                self._end_of_epoch(loss, seconds, self.optimizer.param_groups[0]["lr"])
        finally:
            del loader  # shuts the worker processes down
        self.finish()

    def finish(self) -> None:
        """``checkpoint_final`` and the final validation (rank 0 only)."""
        if self.ctx.is_main:
            save_checkpoint(self.adapter, self.run.fold_folder, "final", self.metadata(final=True))
            if self._last_epoch_unvalidated():
                self._validate_last_epoch_and_final()
            else:
                self.final_validation()
        barrier(self.ctx)

    def _validate_last_epoch_and_final(self) -> None:
        """Let checkpoint_best pick the final weights, on the footing of the epoch validations (no mirroring)."""
        if self.run.options.disable_tta:  # the final validation is such a validation itself
            self._record_validation(self.final_validation())
        else:
            log.info("Validating the last epoch without mirroring, so checkpoint_best can pick it")
            self._record_validation(self._validate(final=False))
            self.final_validation()
        self._plot_progress()

    def final_validation(self) -> dict | None:
        self._announce_final_validation()
        summary = self._validate(final=True)
        if summary is not None:
            log.info("Validation outputs: %s", self.run.fold_folder / "validation")
        return summary
