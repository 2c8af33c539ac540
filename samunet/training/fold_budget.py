"""The fold's time budget, training plus validation: what the final validation is expected to cost, whether it
mirrors, and how many epochs fit when the run proves faster than planned.

    FoldBudget(run, adapter, cache)      the clock (``lr_schedule.TimeBudget``) with the final validation reserved
        record_validation(seconds)       a measured validation replaces the plans' estimate of the final one
        epochs_to_fit(...)               the epoch count a faster run can train (``lr_schedule.epochs_that_fit``)
        final_mirroring(...)             mirror the final validation when the time left allows, and say why

Estimates count what validation predicts: windows (a tiled slice is several) and, for mirrored views, decoder
passes where the model mirrors its embeddings, else new encodings. The trainer (``trainer.FoldTrainer``) owns the
loop and asks this object; nothing here trains or validates.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from samunet.inference.volume_predictor import mirrors_embeddings
from samunet.preprocessing.tiling import mirror_combinations, windows_per_slice
from samunet.training.embedding_cache import EmbeddingCache
from samunet.training.lr_schedule import FILL_MAX_FACTOR, TimeBudget, epochs_that_fit
from samunet.training.run_setup import TrainingRun
from samunet.utils.logs import get_logger

log = get_logger()
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
        log.info("Final validation %s mirroring: about %.1f min with %d mirrorings, %.1f min left of the %.0f-min "
                 "budget", "with" if mirror else "without", needed / 60, variants, max(0.0, remaining) / 60,
                 self.clock.limit_s / 60)
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
            message += (f", at most {windows * encodings * per_encode / 60:.0f} min of encoding ({per_encode:.2f} s "
                        f"per {unit}{', mirrored in embedding space' if encodings < variants else ''})")
        if variants > 1:
            message += "; --disable-tta skips the mirroring"
        log.info(message)
