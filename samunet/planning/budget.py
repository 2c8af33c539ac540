"""Resolution, slice sampling, run length and validation decided together, inside one time budget per fold.

A fold's budget pays for three things: encoding every planned training slice once (frozen encoders cache the
embedding, so later steps only run the trainable head), the training steps themselves, and validation. The rules:

- Encoding every planned training slice once may take at most ``ENCODE_SHARE`` of the budget, so most of it is
  left for (cheap) cached steps. Adapters whose encoder trains pay a full step for every slice, every time; there
  the rule is that an epoch over the planned slices fits in ``ENCODE_SHARE`` of the budget, so the run sees each
  slice at least about twice.
- Mid-run validations may take at most ``MIDRUN_VALIDATION_SHARE`` (10%) of the budget; when even one is more
  expensive, only the final validation runs. The final validation (without mirroring) is reserved out of the
  budget; the trainer decides at the end whether the rest allows mirroring.
- The input side is the largest candidate (from the planned one down, in steps of 16) that meets these rules,
  trying the planned slice sampling first and foreground slices (plus a tenth of the background ones) second;
  it never goes below the size at which the smallest labelled structure keeps ``MIN_STRUCTURE_PIXELS`` across.

All figures come from ``cost_model`` (measured on this machine) unless the caller passes estimates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from samunet.planning.cost_model import MeasuredCost

ENCODE_SHARE = 0.4
MIDRUN_VALIDATION_SHARE = 0.10
MAX_MIDRUN_VALIDATIONS = 4  # enough for checkpoint_best to pick among; the last epoch's counts as one
# SAM-family decoders predict masks at a quarter of the input side: 8 px across are two mask cells, the least at
# which a structure cannot vanish between the cells of the low-resolution mask
MIN_STRUCTURE_PIXELS = 8
INPUT_STEP = 16
STEP_OVERHEAD = 1.15  # data loading, the optimizer and the loss on top of the timed forward/backward


@dataclass
class SliceCounts:
    """Slices of one fold under each sampling mode (training cases), and what validation predicts."""

    train_cases: int
    train_all: int
    train_foreground: int  # slices with foreground
    train_background: int  # background-only slices
    val_cases: int
    val_slices: int  # every slice of the validation cases (validation predicts whole volumes)


@dataclass
class BudgetDecision:
    input_size: int
    mode: str
    background_fraction: float
    iterations_per_epoch: int
    epochs: int
    validate_every: int  # > epochs: no mid-run validation
    seconds_per_encoded_slice: float
    seconds_per_cached_iteration: float
    seconds_per_uncached_iteration: float
    seconds_per_validation_case: float
    predicted_minutes_per_fold: float
    reason: str


def training_slices(counts: SliceCounts, mode: str, background_fraction: float) -> int:
    if mode == "foreground":
        return counts.train_foreground + int(round(background_fraction * counts.train_background))
    if mode == "max_slice":
        return counts.train_cases
    return counts.train_all


def min_input_for_structures(smallest_extent_px: float | None, patch_side: int, candidates: list[int]) -> int:
    """Smallest candidate input side at which the smallest structure keeps ``MIN_STRUCTURE_PIXELS`` across
    (the patch is scaled to the input side)."""
    if not smallest_extent_px or smallest_extent_px <= 0:
        return min(candidates)
    needed = MIN_STRUCTURE_PIXELS * patch_side / smallest_extent_px
    fitting = [c for c in sorted(candidates) if c >= needed]
    return fitting[0] if fitting else max(candidates)


def decide(budget_s: float, counts: SliceCounts, batch_size: int, planned_input: int, min_input: int,
           planned_mode: str, planned_background_fraction: float, frozen_encoder: bool,
           cost_at: Callable[[int], MeasuredCost], iterations_per_epoch: int, epoch_range: tuple[int, int],
           source: str = "measured") -> BudgetDecision:
    """The largest input side and richest sampling that keep the rules above (see the module docstring)."""
    sizes = list(range(planned_input, min_input - 1, -INPUT_STEP)) or [planned_input]
    modes = [(planned_mode, planned_background_fraction)]
    if planned_mode == "all" and counts.train_background > 0:
        modes.append(("foreground", 0.1))
    chosen = None
    for size in sizes:
        cost = cost_at(size)
        for mode, fraction in modes:
            slices = training_slices(counts, mode, fraction)
            first_pass = slices * cost.uncached_step_seconds()
            if first_pass <= ENCODE_SHARE * budget_s:
                chosen = (size, mode, fraction, cost, slices, "fits")
                break
        if chosen:
            break
    if chosen is None:  # nothing fits: the cheapest combination, said plainly
        size, (mode, fraction) = sizes[-1], modes[-1]
        cost = cost_at(size)
        chosen = (size, mode, fraction, cost, training_slices(counts, mode, fraction), "over")
    size, mode, fraction, cost, slices, fit = chosen

    per_encode = cost.encode_seconds if cost.encode_seconds is not None else cost.uncached_step_seconds()
    uncached_iteration = batch_size * cost.uncached_step_seconds() * STEP_OVERHEAD
    cached_iteration = batch_size * cost.cached_step_seconds() * STEP_OVERHEAD
    per_val_slice = cost.inference_seconds()
    val_slices_per_case = counts.val_slices / max(1, counts.val_cases)
    val_case_s = val_slices_per_case * per_val_slice
    # the first validation encodes every validation slice; later ones reuse the cache (frozen encoders)
    first_validation = counts.val_slices * per_val_slice
    later_validation = counts.val_slices * (per_val_slice - per_encode if frozen_encoder and cost.encode_seconds else per_val_slice)
    final_validation = later_validation if frozen_encoder else first_validation

    # training time left after the final validation; mid-run validations come out of it
    train_s = max(0.0, budget_s - final_validation)
    if frozen_encoder:
        encode_s = min(slices, train_s / max(uncached_iteration / batch_size, 1e-9)) * (uncached_iteration - cached_iteration) / batch_size
        step_iterations = (train_s - encode_s) / max(cached_iteration, 1e-9)
    else:
        step_iterations = train_s / max(uncached_iteration, 1e-9)
    low, high = epoch_range
    epochs = int(min(high, max(low, math.floor(step_iterations / iterations_per_epoch))))
    iterations = iterations_per_epoch
    if step_iterations < low * iterations_per_epoch:  # a short budget: fewer, not longer, epochs
        iterations = max(1, int(step_iterations // max(low, 1)))
        epochs = low
    midrun_budget = MIDRUN_VALIDATION_SHARE * budget_s
    if first_validation > midrun_budget or epochs < 2:
        validate_every, validations = epochs + 1, 0
    else:
        extra = max(0, int((midrun_budget - first_validation) // max(later_validation, 1e-9)))
        validations = 1 + min(extra, MAX_MIDRUN_VALIDATIONS - 1)
        validate_every = max(1, math.ceil(epochs / validations))
        validations = epochs // validate_every
    midrun_s = (first_validation + (validations - 1) * later_validation) if validations else 0.0
    if validations:  # the mid-run validations come out of the training time
        scale = max(0.0, train_s - midrun_s) / max(train_s, 1e-9)
        epochs = int(max(low, min(high, math.floor(epochs * scale))))
    total_iterations = epochs * iterations
    predicted = (min(total_iterations, slices / batch_size) * uncached_iteration
                 + max(0, total_iterations - slices / batch_size) * cached_iteration
                 + midrun_s + final_validation) if frozen_encoder else (
        total_iterations * uncached_iteration + midrun_s + final_validation)
    budget_min = budget_s / 60
    reason = (f"{source} on this machine: {per_encode:.3f} s per encoded slice at input {size}; {slices} training "
              f"slices ({mode}{f', {fraction:.0%} of background-only slices' if mode == 'foreground' else ''})"
              f" take {slices * cost.uncached_step_seconds() / 60:.1f} min to {'encode' if frozen_encoder else 'pass'} once"
              f" ({'within' if fit == 'fits' else 'OVER'} {ENCODE_SHARE:.0%} of the {budget_min:.0f}-min budget"
              f"{'' if fit == 'fits' else ': even the cheapest choice does not fit, the run will see fewer slices'}); "
              f"input {size} is the largest from {planned_input} down (step {INPUT_STEP}, smallest allowed {min_input}) "
              f"that fits; {epochs} x {iterations} iterations; validation: "
              + (f"{validations} mid-run (every {validate_every} epochs, {midrun_s / 60:.1f} min <= "
                 f"{MIDRUN_VALIDATION_SHARE:.0%})" if validations else
                 f"final only (one mid-run validation would take {first_validation / 60:.1f} min > "
                 f"{MIDRUN_VALIDATION_SHARE:.0%} of the budget)")
              + f", final {final_validation / 60:.1f} min without mirroring reserved")
    return BudgetDecision(size, mode, fraction, iterations, epochs, validate_every, per_encode, cached_iteration,
                          uncached_iteration, val_case_s, predicted / 60, reason)
