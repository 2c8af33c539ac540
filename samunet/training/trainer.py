"""The training of one fold, read top to bottom: set-up, the loop with its named hooks, the finish.

    FoldTrainer(run, adapter, device, ctx)   set-up: model (DDP, embedding cache), loss, optimizer, step runner
    train():
        for each epoch:
            on_epoch_start()                 sampler epoch, train mode, clock
            train_step(batch) per batch      learning rate, forward/backward/step (``train_step.StepRunner``)
            on_epoch_end(loss, seconds)      history, checkpoint_latest, on_validation() every validate_every
        finish()                             checkpoint_final, final validation (checkpoint_best may pick it)

The recipe hooks ``build_loss``, ``build_optimizer`` and ``learning_rate`` read the plans' names through the
registries (``losses``, ``optimizers``, ``lr_schedule``); a subclass may override any hook. Data
(``data_loader``), checkpoints (``training_state``), validation (``validation``), curves (``progress``), the
training budget (``fold_budget``: the epochs and iterations, the clock that stops training and drives the decay,
the final validation's reserve and mirroring) and DDP (``ddp``) live in their own modules.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from samunet.utils.progress import progress as progress_bar

from samunet.core.names import PROGRESS_PLOT_FILE, VALIDATION_FOLDER
from samunet.core.plans import PlansError
from samunet.evaluation.mirroring_decision import MirroringDecision, decision_file
from samunet.modeling.runtime import precision_policy
from samunet.training.data_loader import BatchSpec, EpochSampler, TrainingBatches, make_loader, variant_memo_bytes
from samunet.training.ddp import DistributedContext, barrier, wrap_model
from samunet.training.embedding_cache import CachedEncoderAdapter, EmbeddingCache, EmbeddingHead, head_inputs
from samunet.training.losses import build_loss
from samunet.training.fold_budget import FoldBudget, TimeBudget
from samunet.training.lr_schedule import learning_rate_at, set_learning_rate
from samunet.training.optimizers import build_optimizer
from samunet.training.progress import TrainingHistory, plot_progress
from samunet.training.run_records import record_results
from samunet.training.run_setup import TrainingRun
from samunet.training.train_step import StepRunner
from samunet.training.training_state import load_latest, restore_rng, save_checkpoint, save_latest
from samunet.training.validation import dice_per_class, is_improvement, mean_foreground_dice, validate
from samunet.utils.logs import get_logger

log = get_logger()


class FoldTrainer:
    # ---- set-up --------------------------------------------------------------------------------------
    def __init__(self, run: TrainingRun, adapter: torch.nn.Module, device: torch.device, ctx: DistributedContext,
                 budget: TimeBudget | None = None):
        self.run, self.adapter, self.device, self.ctx = run, adapter, device, ctx
        plans, name = run.plans, run.options.adapter
        self.config = plans.adapter_config(name)
        self.policy = precision_policy(device, plans.training.precision)
        self.cache = None
        if self.config.cache_embeddings and adapter.supports_embedding_cache:
            # frozen encoder: each distinct input is encoded once; only the head after the embedding trains
            self.cache = EmbeddingCache(adapter, device, policy=self.policy)
            runtime = adapter.use_encoder_runtime(plans.model.encoder_runtime, self.policy)
            log.info("Frozen encoder runs through %s (model.encoder_runtime)", runtime)
            self.model = wrap_model(EmbeddingHead(adapter), ctx, device)
        else:
            if self.config.cache_embeddings:
                raise PlansError(f"adapters.{name}.cache_embeddings is true, but the {name} adapter trains its "
                                 "encoder, so there is nothing to cache; set it to false")
            self.model = wrap_model(adapter, ctx, device)
        self.optimizer = self.build_optimizer()
        self.loss_fn = self.build_loss()
        self.steps = StepRunner(self.model, self.loss_fn, self.optimizer, device, self.policy)
        # epochs and iterations to train, the clock, the final validation's reserve and mirroring
        self.fold_budget = FoldBudget(run, adapter, self.cache, clock=budget)
        self.history = TrainingHistory()
        self.epoch = 0  # epochs completed
        self.iteration = 0
        self._started_at = (0, 0)  # (iteration, epochs recorded) when this process's training began
        self.best: float | None = None
        self.stopped_by_time = False
        self.sampler: EpochSampler | None = None
        self._time_used = 0.0  # share of --time-limit-min spent, as of the current batch
        self._last_loss = float("nan")
        self.learning_rate(0.0)  # an unknown lr_schedule fails here, before the run writes anything

    @property
    def budget(self) -> TimeBudget:
        """The fold's clock: its limit, the final validation's reserve, the time used."""
        return self.fold_budget.clock

    def build_loss(self) -> torch.nn.Module:
        """The loss named by ``adapters.<adapter>.loss`` (``losses.LOSSES``)."""
        return build_loss(self.run.plans, self.run.options.adapter)

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer named by ``adapters.<adapter>.optimizer`` (``optimizers.OPTIMIZERS``)."""
        return build_optimizer(self.adapter.trainable_parameters(), self.config, self.config.learning_rate,
                               f"adapters.{self.run.options.adapter}.optimizer")

    def learning_rate(self, time_used: float) -> float:
        """The learning rate of the next step: warm-up, then ``adapters.<adapter>.lr_schedule``."""
        return learning_rate_at(self.iteration, self.config, self.fold_budget.total_iterations, time_used,
                                f"adapters.{self.run.options.adapter}")

    def make_loader(self):
        """Batches of this rank: a pure function of (seed, rank, epoch, index), so resuming is exact."""
        t = self.run.training
        per_rank_batch = max(1, math.ceil(t.batch_size / self.ctx.world_size))
        spec = BatchSpec(self.run.case_slices(self.run.train_cases), self.run.plans, per_rank_batch,
                         self.run.seed, self.ctx.rank, augment=not self.run.options.no_augment,
                         cached=self.cache is not None, variant_memo_bytes=variant_memo_bytes(t.num_workers),
                         image_branch=self.cache is not None and self.adapter.uses_images_after_encoder)
        self.sampler = EpochSampler(t.iterations_per_epoch)
        return make_loader(TrainingBatches(spec), self.sampler, t.num_workers)

    def resume(self) -> None:
        state = load_latest(self.adapter, self.run.fold_folder, self.expected())
        self.optimizer.load_state_dict(state.optimizer)
        if self.steps.scaler is not None and state.grad_scaler:
            self.steps.scaler.load_state_dict(state.grad_scaler)
        restore_rng(state)
        self.epoch, self.iteration, self.best = state.epoch, state.iteration, state.best_metric
        self.fold_budget.resume(int(state.metadata.get("total_epochs", 0)))
        self.history = TrainingHistory.from_dict(state.history)
        log.info("Resumed from checkpoint_latest: %d epoch(s), %d iteration(s) done", self.epoch, self.iteration)

    # ---- the loop ------------------------------------------------------------------------------------
    def train(self) -> None:
        t = self.run.training
        self._started_at = (self.iteration, len(self.history.epoch_seconds))
        loader = self.make_loader()
        log.info("Training %s on fold %s: %d train / %d val cases, %d epochs x %d iterations, batch %d, %s on %s",
                 self.run.options.adapter, self.run.options.fold, len(self.run.train_cases), len(self.run.val_cases),
                 self.fold_budget.total_epochs, t.iterations_per_epoch, t.batch_size, self.policy.name, self.device)
        try:
            while self.epoch < self.fold_budget.total_epochs and not self.stopped_by_time:
                started = self.on_epoch_start()
                losses = [self.train_step(batch) for batch in self._epoch_batches(loader)]
                if self.cache is not None:
                    log.info("  %s", self.cache.summary())
                if self.stopped_by_time:
                    log.info("Time limit reached during epoch %d (iteration %d): finishing", self.epoch, self.iteration)
                    if not losses:  # not a single step in this epoch: nothing to record
                        break
                self.on_epoch_end(float(np.mean(losses)) if losses else float("nan"), time.monotonic() - started)
        finally:
            del loader  # shuts the worker processes down
        self.finish()

    def timing(self) -> tuple[int, float]:
        """Iterations and training seconds (validations excluded) of this process's run."""
        iteration, epochs = self._started_at
        return self.iteration - iteration, float(sum(self.history.epoch_seconds[epochs:]))

    def on_epoch_start(self) -> float:
        """Point the sampler at this epoch's batches and switch to training mode; returns the start time."""
        self.sampler.set_epoch(self.epoch)
        self.model.train()
        return time.monotonic()

    def _epoch_batches(self, loader):
        """This epoch's batches with a progress bar; stops early when the time limit is used up."""
        bar = progress_bar(loader, total=self.run.training.iterations_per_epoch, desc=f"epoch {self.epoch}",
                           unit="it", disable=not self.ctx.is_main, leave=False, lines=False, mininterval=2.0)
        for batch in bar:
            self._time_used = self.fold_budget.time_used(self.ctx, self.device)
            if self._time_used >= 1.0:
                self.stopped_by_time = True
                break
            yield batch
            bar.set_postfix(loss=f"{self._last_loss:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        bar.close()

    def train_step(self, batch: dict) -> float:
        """Set the learning rate, then one optimisation step on ``batch``; returns its loss."""
        set_learning_rate(self.optimizer, self.learning_rate(self._time_used))
        if self.cache is None:
            inputs = batch["images"]
        else:
            inputs = head_inputs(self.cache, batch)
        self._last_loss = self.steps.step(inputs, batch["seg"])
        self.iteration += 1
        return self._last_loss

    def on_epoch_end(self, loss: float, seconds: float) -> None:
        """Record the epoch, write checkpoint_latest, validate every ``validate_every`` epochs (rank 0)."""
        lr = self.optimizer.param_groups[0]["lr"]
        self.history.add_epoch(self.epoch, loss, lr, seconds)
        self.epoch += 1
        # a run cut by the time limit goes straight to the final validation instead
        validate_now = self.validates_after(self.epoch) and not self.stopped_by_time
        if self.ctx.is_main:
            log.info("epoch %d: loss %.4f, lr %.2e, %.1f s", self.epoch - 1, loss, lr, seconds)
            self._save_latest()  # before validating: a kill during a long validation loses nothing
            if validate_now:
                self.on_validation()
            self._plot_progress()
        barrier(self.ctx)
        if self.fold_budget.fills and not self.stopped_by_time:
            self.fit_epochs_to_budget()

    def fit_epochs_to_budget(self) -> None:
        """More epochs for a run faster than planned (``FoldBudget.fit_epochs``), from this process's epochs (a
        resumed run's earlier ones ran elsewhere)."""
        _, first = self._started_at
        self.fold_budget.fit_epochs(self.history.epoch_seconds[first:], self.epoch, self.ctx, self.device)

    def validates_after(self, epochs_done: int) -> bool:
        """Whether a whole-volume validation follows the epoch that completes ``epochs_done`` epochs."""
        return epochs_done % self.run.training.validate_every == 0

    def on_validation(self) -> None:
        """Validate the current weights without mirroring; keep them as checkpoint_best when better."""
        self._record_validation(self._validate(final=False))

    # ---- finish --------------------------------------------------------------------------------------
    def finish(self) -> None:
        """``checkpoint_final`` and the final validation (rank 0 only)."""
        if self.ctx.is_main:
            save_checkpoint(self.adapter, self.run.fold_folder, "final", self.metadata(final=True))
            record_results(self.run.fold_folder, training_seconds=float(sum(self.history.epoch_seconds)),
                           epochs=self.epoch, planned_epochs=self.run.training.epochs,
                           iterations=self.iteration, stopped_by_time=self.stopped_by_time,
                           trainable_parameters=self.adapter.parameter_counts()["trainable"])
            decision_file(self.run.fold_folder).unlink(missing_ok=True)  # an earlier run's decision is not this one's
            mirror = bool(self.run.val_cases) and self.fold_budget.final_mirroring(self._last_epoch_unvalidated())
            if self._last_epoch_unvalidated():
                self._validate_last_epoch_and_final(mirror)
            else:
                summary = self.final_validation(mirror)
                if mirror:
                    self._keep_mirroring_if_it_helps(summary)
        barrier(self.ctx)

    def final_validation(self, mirror: bool) -> dict | None:
        self.fold_budget.announce_final_validation(mirror)
        started = time.monotonic()
        summary = self._validate(final=True, mirror=mirror)
        if summary is not None:
            log.info("Validation outputs: %s", self.run.fold_folder / VALIDATION_FOLDER)
            record_results(self.run.fold_folder, final_validation={
                "seconds": time.monotonic() - started, "cases": len(self.run.val_cases), "mirroring": mirror})
        return summary

    def _last_epoch_unvalidated(self) -> bool:
        """True when the final weights were never compared for checkpoint_best (time limit, or an epoch count
        that is not a multiple of validate_every)."""
        if not self.run.val_cases or self.epoch == 0:
            return False
        return not self.history.validation_epochs or self.history.validation_epochs[-1] != self.epoch - 1

    def _validate_last_epoch_and_final(self, mirror: bool) -> None:
        """Let checkpoint_best pick the final weights, on the footing of the epoch validations (no mirroring)."""
        if not mirror:  # the final validation is such a validation itself
            self._record_validation(self.final_validation(mirror=False))
        else:
            log.info("Validating the last epoch without mirroring, so checkpoint_best can pick it")
            self.on_validation()
            self._keep_mirroring_if_it_helps(self.final_validation(mirror=True))
        self._plot_progress()

    def _keep_mirroring_if_it_helps(self, mirrored: dict | None) -> None:
        """Compare the mirrored final validation with the same weights' unmirrored one (the last epoch's) and write
        the fold's decision (``evaluation.mirroring_decision``); when mirroring lost, validate again without it,
        so the fold's outputs and summary.json are what samunet_predict will do for this fold."""
        history = self.history
        if mirrored is None or not history.validation_epochs or history.validation_epochs[-1] != self.epoch - 1:
            return
        decision = MirroringDecision.from_validations(mean_foreground_dice(mirrored), history.validation_mean_dice[-1])
        decision.save(decision_file(self.run.fold_folder))
        if not decision.mirror:
            log.info("Mirroring lowered the final weights' validation Dice (%.4f against %.4f without): validating "
                     "again without it; samunet_predict will not mirror this fold (%s)", decision.mirrored_dice,
                     decision.unmirrored_dice, decision_file(self.run.fold_folder).name)
            self.final_validation(mirror=False)

    def _validation_model(self):
        """What validation predicts with: the adapter, reading its embeddings from the cache when it has one."""
        return self.adapter if self.cache is None else CachedEncoderAdapter(self.adapter, self.cache)

    # ---- validation and checkpoints ------------------------------------------------------------------
    def _validate(self, final: bool, mirror: bool = False) -> dict | None:
        if not self.run.val_cases:
            return None
        folder = self.run.fold_folder / VALIDATION_FOLDER if final else None
        model = self._validation_model()
        encoded_before = self.cache.encode_seconds if self.cache is not None else 0.0
        started = time.monotonic()
        summary = validate(model, self.run.validation_cases(), self.run.plans, mirror=mirror,
                           batch_size=max(1, self.run.training.batch_size), output_folder=folder, progress=True)
        if not mirror:
            seconds = time.monotonic() - started
            if self.cache is not None and not self.cache.full:
                # the next validation finds these slices encoded: what it costs is this one less its encoding
                # (Hippocampus: 116 s for the first, 93 s of which encoded the 1,861 validation slices)
                seconds -= self.cache.encode_seconds - encoded_before
            self.fold_budget.record_validation(seconds)
        per_class, mean = dice_per_class(summary, self.run.plans), mean_foreground_dice(summary)
        log.info("  %s validation (3D, %d cases): mean foreground Dice %.4f | %s", "final" if final else "epoch",
                 len(self.run.val_cases), mean, ", ".join(f"{k} {v:.4f}" for k, v in per_class.items()))
        return summary

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

    def _plot_progress(self) -> None:
        plot_progress(self.history, self.run.fold_folder / PROGRESS_PLOT_FILE)

    def metadata(self, **extra) -> dict:
        return {"adapter": self.run.options.adapter, "plans_sha256": self.run.plans.sha256(),
                "dataset": self.run.dataset_name, "fold": self.run.options.fold, "epoch": self.epoch,
                "iteration": self.iteration, "total_epochs": self.fold_budget.total_epochs,
                "backbone": self.run.plans.model.backbone, **extra}

    def expected(self) -> dict:
        return {"adapter": self.run.options.adapter, "plans_sha256": self.run.plans.sha256()}

    def _save_latest(self) -> None:
        save_latest(self.adapter, self.run.fold_folder, self.metadata(), self.optimizer, self.steps.scaler,
                    self.history.to_dict(), self.best)
