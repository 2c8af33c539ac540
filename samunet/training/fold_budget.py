"""The fold's training budget, training plus validation: the epochs and iterations the run trains, the wall-time
clock that stops it and drives the learning-rate decay, the time kept for the final validation and whether that
validation mirrors. The trainer (``trainer.FoldTrainer``) owns the loop and asks this module; nothing here
trains or validates.

    TimeBudget(limit, reserve_s)          the clock: the limit, the final validation's reserve, the share used
    epochs_that_fit(...)                  the epoch count a faster run can train in the time left
    FoldBudget(run, adapter, cache)       the fold's budget, with its clock:
        total_epochs, total_iterations    what the run trains (the decay spans them): the plans', more when fitted
        time_used(ctx, device)            share of the training time spent, the same on every rank (the learning
                                          rate's clock; 1.0 ends training)
        fit_epochs(...)                   a run faster than planned gets more epochs (``--epochs`` fixes the count)
        resume(recorded_total_epochs)     ``--continue`` goes on with the epochs an earlier process fitted
        record_validation(seconds)        a measured validation replaces the plans' estimate of the final one
        final_mirroring(...)              mirror the final validation when the time left allows, and say why

Estimates count what validation predicts: windows (a tiled slice is several) and, for mirrored views, decoder
passes where the model mirrors its embeddings, else new encodings.
"""
from __future__ import annotations

import functools
import math
import time

import numpy as np
import torch

from samunet.preprocessing.tiling import mirror_combinations, mirrors_embeddings, windows_per_slice
from samunet.training.ddp import DistributedContext, max_over_ranks
from samunet.training.embedding_cache import EmbeddingCache
from samunet.training.run_setup import TrainingRun
from samunet.utils.logs import get_logger
from samunet.utils.progress import duration_text

log = get_logger()


class TimeBudget:
    """The fold's wall-time limit (training and validation), of which ``reserve_s`` is kept for the final
    validation: training stops when the rest is used."""

    def __init__(self, limit_minutes: float | None, start: float | None = None, reserve_s: float = 0.0):
        self.limit_s = None if limit_minutes is None else float(limit_minutes) * 60.0
        self.start = time.monotonic() if start is None else start
        self.set_reserve(reserve_s)

    def set_reserve(self, reserve_s: float) -> None:
        self.reserve_s = 0.0 if self.limit_s is None else min(max(0.0, reserve_s), MAX_RESERVE_SHARE * self.limit_s)

    @property
    def limited(self) -> bool:
        return self.limit_s is not None

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float | None:
        """Seconds left of the whole limit (None without a limit)."""
        return None if self.limit_s is None else self.limit_s - self.elapsed()

    def fraction_used(self) -> float:
        """Share of the training time (the limit less the reserve) spent so far, in [0, 1] (0 without a limit)."""
        if self.limit_s is None:
            return 0.0
        return min(1.0, self.elapsed() / max(self.limit_s - self.reserve_s, 1e-9))


MAX_RESERVE_SHARE = 0.5  # an estimate gone wrong never leaves less than half the budget for training


# of the limit, kept free when a faster run is given more epochs: epochs vary by a few percent, and a run that
# overruns anyway is cut by the clock with its learning rate already decayed
FILL_MARGIN_SHARE = 0.02
# at most this many times the planned epochs when the plans' cost was measured for the adapter trained: the fill
# corrects a cost model that errs by 10-25% on a CPU; a plan off by more was made on another machine or under
# load, and the timing warning says to re-plan. Another adapter's epochs were not predicted, only its budget.
FILL_MAX_FACTOR = 1.5


def epochs_that_fit(budget: TimeBudget, epochs_done: int, total_epochs: int, seconds_per_epoch: float,
                    reserve_s: float, most_epochs: int | None) -> int:
    """The epoch count that trains for the budget: ``total_epochs``, or more (up to ``most_epochs``; None: as
    many as the time holds) when the time left, less ``reserve_s`` for the final validation and a small margin,
    holds more epochs of ``seconds_per_epoch``. Never fewer: a slower run is ended on time by the clock-driven
    decay."""
    if not budget.limited or seconds_per_epoch <= 0:
        return total_epochs
    left = budget.limit_s * (1.0 - FILL_MARGIN_SHARE) - reserve_s - budget.elapsed()
    fitted = epochs_done + int(left // seconds_per_epoch)
    return max(total_epochs, fitted if most_epochs is None else min(most_epochs, fitted))

# mirroring may overrun the budget by this share: it gains Dice (+0.015 on Hippocampus fold 0), the plans'
# promise is kept within 25%, and the estimate is an upper bound (an image-mirrored view counted as a new encoding)
MIRROR_SLACK_SHARE = 0.05
# a run given more epochs to fill its budget keeps room for the mirrored final validation when it costs at most
# this share of the budget (grid models mirror embeddings: decoder passes only), else for the unmirrored one
MIRROR_RESERVE_SHARE = 0.15
# a plan predicting less than this share of its budget was capped by something else (the planner's most epochs):
# its epochs are not grown to fill the budget
SIZED_TO_BUDGET_SHARE = 0.9
# the fit projects the median of this many recent epochs: one epoch's time varies by 30% on a shared CPU
# (Hippocampus: 15-25 s), and the fastest of them alone fitted more epochs than the budget held
FILL_RECENT_EPOCHS = 3


class FoldBudget:
    def __init__(self, run: TrainingRun, adapter: torch.nn.Module, cache: EmbeddingCache | None,
                 clock: TimeBudget | None = None):
        self.run, self.adapter, self.cache = run, adapter, cache
        # seconds of each validation without mirroring, less the first encodings the cache keeps for the next
        self.validation_seconds: list[float] = []
        self.clock = clock or TimeBudget(run.time_limit_min, reserve_s=self.final_validation_reserve_s())
        # the plans' epochs were sized to this budget, so a faster run may be given more (--epochs fixes the count)
        self.fills = self.sized_to_budget()
        self.total_epochs = run.training.epochs  # the plans', more once fitted

    # ---- what the run trains, and its clock ------------------------------------------------------------
    @property
    def total_iterations(self) -> int:
        """The iterations the learning-rate decay spans."""
        return self.total_epochs * self.run.training.iterations_per_epoch

    def time_used(self, ctx: DistributedContext, device: torch.device) -> float:
        """Share of the training time spent (0 without a limit; 1.0: stop): the learning rate's clock. The largest
        of all ranks' (their clocks differ slightly), so DDP copies stay identical."""
        return max_over_ranks(ctx, self.clock.fraction_used(), device) if self.clock.limited else 0.0

    def fit_epochs(self, epoch_seconds: list[float], epochs_done: int, ctx: DistributedContext,
                   device: torch.device) -> None:
        """Give a run that is faster than planned more epochs (``epochs_to_fit``, from this process's
        ``epoch_seconds``), so the budget trains instead of ending early; every rank takes the smallest count.
        The decay stretches over the new total."""
        fitted, seconds_per_epoch = self.epochs_to_fit(epoch_seconds, epochs_done, self.total_epochs)
        fitted = int(-max_over_ranks(ctx, -float(fitted), device))
        if fitted > self.total_epochs:
            log.info("Faster than planned (%.1f s per recent epoch): %d epochs instead of %d fit the %s budget "
                     "(--epochs fixes the count)", seconds_per_epoch, fitted, self.total_epochs,
                     duration_text(self.clock.limit_s))
            self.total_epochs = fitted

    def resume(self, recorded_total_epochs: int) -> None:
        """``--continue``: the epochs an earlier process fitted to its budget, so the decay goes on from there."""
        if self.fills:
            self.total_epochs = max(self.total_epochs, recorded_total_epochs)

    # ---- the plans' cost, the fill and the final validation ---------------------------------------------
    @property
    def sizing_cost(self):
        """The cost figures the plans were sized with (``plans.cost``, measured for the recommended adapter). They
        stand in for every adapter trained on these plans when sizing its budget (whether to fill it, the reserve
        for the final validation before one is measured), so adapters compared on one plan get the same budget;
        timing comparisons (debug.json) use ``run.planned_cost()``, which is only this adapter's."""
        return self.run.plans.cost

    @functools.cached_property
    def _validation_inputs(self) -> tuple[int, int]:
        """(slices, windows) one unmirrored validation predicts: each slice's windows are 1 when the slice fits the
        patch (DRIVE's 565x584 images at a 256 patch: 16). Read once from the cache's case files."""
        patch = tuple(int(p) for p in self.run.plans.crop.patch_size)
        cases = self.run.case_slices(self.run.val_cases)
        return (sum(c.num_slices for c in cases),
                sum(c.num_slices * windows_per_slice(c.slice_shape, patch) for c in cases))

    @property
    def validation_windows(self) -> int:
        return self._validation_inputs[1]

    def record_validation(self, seconds: float) -> None:
        """A measured unmirrored validation: it replaces the plans' estimate of the final one in the reserve."""
        self.validation_seconds.append(seconds)
        if self.clock.limited:
            self.clock.set_reserve(self.final_validation_reserve_s())

    def sized_to_budget(self) -> bool:
        """Whether the plans' epochs were sized by the cost model to fill this run's budget (the planned schedule
        and budget, a cost that predicts most of the budget), so more may be fitted. The cost may be the
        recommended adapter's: another adapter trained on the same plans (``samunet_compare``) gets the same
        budget to fill, not only the epochs sized for the recommended one (cnnhead on Hippocampus stopped after 20
        of its 30 minutes); a slower one is ended by the clock as before."""
        cost = self.sizing_cost
        return (self.clock.limited and not self.run.departures_from_plan() and cost is not None
                and cost.predicted_minutes_per_fold >= SIZED_TO_BUDGET_SHARE * self.clock.limit_s / 60)

    def epochs_to_fit(self, epoch_seconds: list[float], epochs_done: int, total_epochs: int) -> tuple[int, float]:
        """(epochs that fit, seconds per epoch projected) from this process's ``epoch_seconds``: the median of
        the recent ones (the embedding cache fills during the first) plus the mid-run validations' share."""
        seconds_per_epoch = float(np.median(epoch_seconds[-FILL_RECENT_EPOCHS:]))
        if self.validation_seconds:
            seconds_per_epoch += self.validation_seconds[-1] / self.run.training.validate_every
        fitted = epochs_that_fit(self.clock, epochs_done, total_epochs, seconds_per_epoch,
                                 self.final_validation_reserve_when_filling(), most_epochs=self.most_epochs())
        return fitted, seconds_per_epoch

    def most_epochs(self) -> int | None:
        """The most epochs a fill may give: ``FILL_MAX_FACTOR`` times the planned ones when the plans' cost was
        measured for this adapter (the fill then corrects that prediction), else no cap but the budget: the
        epochs were sized for the recommended adapter, and a cheaper one (cnnhead on Hippocampus: 0.07 s per
        iteration against the decoder's 0.12) stopped at the cap with 3-6 of its 30 minutes unused."""
        if self.run.planned_cost() is None:
            return None
        return math.ceil(FILL_MAX_FACTOR * self.run.training.epochs)

    def final_validation_reserve_s(self) -> float:
        """Seconds kept out of the training time for the final validation without mirroring: the last mid-run
        validation's measured time less the encodings the cache kept when there was one, else the plans'
        seconds per validation case (first encoding included; ``sizing_cost``) times the cases."""
        if not self.run.val_cases:
            return 0.0
        if self.validation_seconds:
            return self.validation_seconds[-1]
        cost = self.sizing_cost
        return 0.0 if cost is None else cost.seconds_per_validation_case * len(self.run.val_cases)

    def mirror_views(self) -> int:
        """Views of a mirrored validation: every combination of the plans' mirror axes, the original included."""
        return len(mirror_combinations(self.run.plans.augmentation.mirror_axes))

    def final_mirroring(self, last_epoch_unvalidated: bool = False) -> bool:
        """Mirror the final validation when the time left allows it (all of it without a time limit), and say
        which was chosen and why. ``last_epoch_unvalidated``: mirroring then also costs an unmirrored validation
        of the last epoch first (checkpoint_best compares unmirrored validations); without mirroring the final
        validation is that validation."""
        variants = self.mirror_views()
        if self.run.options.disable_tta or variants == 1:
            log.info("Final validation without mirroring (%s)", "--disable-tta" if variants > 1 else "no mirror axes")
            return False
        remaining = self.clock.remaining()
        if remaining is None:
            log.info("Final validation with %d mirrorings (no time limit; --disable-tta skips them)", variants)
            return True
        needed = self.mirrored_final_validation_seconds(last_epoch_unvalidated)
        mirror = needed <= remaining + MIRROR_SLACK_SHARE * self.clock.limit_s
        log.info("Final validation %s mirroring: about %s with %d mirrorings, %s left of the %s budget",
                 "with" if mirror else "without", duration_text(needed), variants, duration_text(max(0.0, remaining)),
                 duration_text(self.clock.limit_s))
        return mirror

    def mirrored_final_validation_seconds(self, last_epoch_unvalidated: bool) -> float:
        """Estimated seconds of a mirrored final validation (plus the last epoch's unmirrored one when asked)."""
        single = self.validation_seconds[-1] if self.validation_seconds else self.final_validation_reserve_s()
        needed = single + (self.mirror_views() - 1) * self._seconds_per_mirrored_view(single)
        return needed + single if last_epoch_unvalidated else needed

    def final_validation_reserve_when_filling(self) -> float:
        """What a run given more epochs keeps for its final validation: the mirrored one when it would mirror
        and that costs at most ``MIRROR_RESERVE_SHARE`` of the budget, else the unmirrored one. The last epoch
        may end unvalidated: that validation is counted, so the choice holds either way."""
        unmirrored = self.final_validation_reserve_s()
        if not self.run.options.disable_tta and self.mirror_views() > 1 and self.run.val_cases:
            mirrored = self.mirrored_final_validation_seconds(last_epoch_unvalidated=True)
            if mirrored <= MIRROR_RESERVE_SHARE * self.clock.limit_s:
                return mirrored
        return unmirrored

    def _seconds_per_mirrored_view(self, single: float) -> float:
        """What one more mirrored view adds to the final validation: decoder passes where the embedding is
        mirrored (each window is encoded once), else a new encoding of every window; without a per-window figure,
        a whole validation."""
        windows, cost = self.validation_windows, self.run.planned_cost()
        if mirrors_embeddings(self.adapter, self.run.plans):
            return windows * cost.seconds_per_decoded_slice(self.run.training.batch_size) if cost else single
        per_encode = (self.cache.seconds_per_encode() if self.cache is not None else None) or (
            cost.seconds_per_encoded_slice if cost else None)
        return windows * per_encode if per_encode else single

    def announce_final_validation(self, mirror: bool) -> None:
        """How much work the final validation is (it can dwarf a short CPU training), and how to cut it."""
        if not self.run.val_cases:
            return
        slices, windows = self._validation_inputs
        unit = "window" if windows > slices else "slice"
        variants = self.mirror_views() if mirror else 1
        message = f"Final validation: {len(self.run.val_cases)} cases, {windows} {unit}s x {variants} mirroring(s)"
        per_encode = self.cache.seconds_per_encode() if self.cache is not None else None
        encodings = 1 if mirrors_embeddings(self.adapter, self.run.plans) else variants
        if per_encode is not None:
            # inputs already encoded by earlier validations are reused, so this is an upper bound
            message += (f", at most {duration_text(windows * encodings * per_encode)} of encoding ({per_encode:.2f} s "
                        f"per {unit}{', mirrored in embedding space' if encodings < variants else ''})")
        if variants > 1:
            message += "; --disable-tta skips the mirroring"
        log.info(message)
