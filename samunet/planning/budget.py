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
  trying the planned slice sampling first and foreground slices (plus a tenth of the background ones) second.
- At each input side, full resolution comes first (windows of the input side tiled over larger slices), then
  the whole patch scaled to the input. Resolution is never traded below what the smallest structure needs: when scaling the whole patch to an input
  side would leave the smallest structure (its mean width, from the fingerprint) under two cells of the
  predicted mask (``structure_threshold_px``), the model sees windows of the slice at a scale that keeps it, and
  prediction tiles them; every window then counts as a slice to encode and to validate.

- Cached training sees no interpolating augmentation (each input is encoded once), so where encoding is cheap
  the loader draws augmented variants of each input as well (rotated, scaled, intensity-changed, each a fixed
  draw encoded once: ``choose_variants``): as many as keep encoding every variant of every input within
  ``ENCODE_SHARE`` and the cache's memory, at most ``MAX_CACHED_VARIANTS``. Only the encoding counts here: the
  training step on a sample is paid whichever variant it is.

All figures come from ``cost_model`` (measured on this machine) unless the caller passes estimates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from samunet.core.plans import expected_distinct, training_seconds
from samunet.planning.cost_model import MeasuredCost
from samunet.preprocessing.tiling import windows_per_slice

ENCODE_SHARE = 0.4
MIDRUN_VALIDATION_SHARE = 0.10
MAX_MIDRUN_VALIDATIONS = 4  # enough for checkpoint_best to pick among; the last epoch's counts as one
MIN_STRUCTURE_PIXELS = 8  # the ViT backbones' threshold (structure_threshold_px), the default when none is given
# the plain input and one augmented variant: measured with 2, LeftAtrium_LGE_30 fold 0 rose from 0.789 to 0.806;
# with 4, DRIVE's test Dice stayed on its steps-to-Dice line (0.744 at 1,300 steps) and Hippocampus fold 0 gave
# 0.849 (0.851 without) while its steps took 77% longer than planned (a 4x pool to encode, and each variant was then
# transformed again at every draw; the loader keeps built variants since)
MAX_CACHED_VARIANTS = 2
INPUT_STEP = 16
WINDOW_MULTIPLE, MIN_WINDOW = 8, 32
# the training loop's work on top of the timed step (which includes the loss and the optimizer): reading and
# packing slices, the cache's lookups, and steps slowed right after an encoder inference. Against steps timed
# apart from the encoder runtime (cost_model), on the 2-core CPU: DRIVE's fully cached iterations 1.0 s against a
# 0.78 s step (256 px windows, batch 8); LeftAtrium's mostly cached ones 0.45-0.65 s against 0.39-0.46 (224 px)
STEP_OVERHEAD = 1.25
# per validated case on top of the model: restoring to the original grid, writing the label map and float16
# probabilities, Dice/HD95/NSD (Hippocampus fold 0 on the idle 2-core CPU: 132 s for 52 cases, 104 s of it encoding)
VALIDATION_CASE_OVERHEAD_S = 0.5


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
    window: tuple[int, int]  # what the model sees, preprocessed pixels: the patch, or a tile of the slice
    tiles_per_slice: int
    mode: str
    background_fraction: float
    iterations_per_epoch: int
    epochs: int
    validate_every: int  # > epochs: no mid-run validation
    seconds_per_encoded_slice: float
    seconds_per_cached_iteration: float
    seconds_per_uncached_iteration: float
    seconds_per_iteration: float  # the planned run's average (encoding on first visits, cached steps after)
    seconds_per_validation_case: float
    predicted_minutes_per_fold: float
    reason: str
    cached_variants: int = 1  # augmented variants of each cached input (1: the plain input only)
    distinct_inputs: int | None = None  # what the cached loader draws from, each encoded once (None: no cache)


def training_slices(counts: SliceCounts, mode: str, background_fraction: float) -> int:
    if mode == "foreground":
        return counts.train_foreground + int(round(background_fraction * counts.train_background))
    if mode == "max_slice":
        return counts.train_cases
    return counts.train_all


def _solve_increasing(function: Callable[[float], float], target: float) -> float:
    """The x >= 0 with function(x) = target, for an increasing function (bisection)."""
    high = 1.0
    while function(high) < target and high < 1e12:
        high *= 2
    low = 0.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if function(middle) < target else (low, middle)
    return low


def structure_threshold_px(embedding_stride: int) -> float:
    """Pixels across the model input that the smallest structure must keep: two cells of the predicted mask.
    SAM-family decoders upsample the image embedding 4x, so the mask cell is the embedding stride / 4 (ViT:
    16 / 4 = 4 px, so 8 px; LiteMedSAM: 4 / 4 = 1 px, so 2 px). Thinner, a structure can fall between cells."""
    return 2.0 * max(1.0, embedding_stride / 4.0)


def window_for(input_size: int, patch_side: int, structure_px: float | None, threshold_px: float) -> int:
    """The side of what the model sees, in preprocessed pixels: the whole patch when scaling it to the input keeps
    the smallest structure ``threshold_px`` across, else the largest window (multiple of 8) that does, so slices
    are tiled instead of shrunk (thin vessels survive)."""
    if not structure_px or structure_px * input_size / patch_side >= threshold_px:
        return patch_side
    window = int(input_size * structure_px / threshold_px) // WINDOW_MULTIPLE * WINDOW_MULTIPLE
    return max(MIN_WINDOW, min(patch_side, window))


def windows_reason(input_size: int, patch_side: int, structure_px: float | None, threshold_px: float) -> str:
    """Why ``decide`` gave the model tiled windows rather than the whole patch scaled to ``input_size``: the thinnest
    structure (``window_for`` would not show the whole patch), or full resolution, which is tried first, fitting."""
    scaled = input_size / patch_side
    if window_for(input_size, patch_side, structure_px, threshold_px) < patch_side:
        return (f"scaling the whole patch to input {input_size} would leave the thinnest structure "
                f"({structure_px:.1f} px wide) {structure_px * scaled:.1f} px across, under {threshold_px:.0f} px")
    return (f"the patch's {patch_side} px side is larger than input {input_size}, and windows at full resolution fit "
            f"the budget (full resolution is tried before the whole patch at scale {scaled:.2f})")


def decide(budget_s: float, counts: SliceCounts, batch_size: int, planned_input: int, min_input: int,
           planned_mode: str, planned_background_fraction: float, frozen_encoder: bool,
           cost_at: Callable[[int], MeasuredCost], iterations_per_epoch: int, epoch_range: tuple[int, int],
           source: str = "measured", patch: tuple[int, int] | None = None,
           slice_shape: tuple[float, float] | None = None, structure_px: float | None = None,
           threshold_px: float = MIN_STRUCTURE_PIXELS, mirror_variants: int = 1, max_variants: int = 1,
           cache_inputs_at: Callable[[int], float] | None = None) -> BudgetDecision:
    """The largest input side and richest sampling that keep the rules above (see the module docstring).
    ``patch``: the whole-slice patch (H, W); ``slice_shape``: the median slice (H, W) in preprocessed pixels;
    ``structure_px``: the smallest structure's width in preprocessed pixels (None: no limit);
    ``mirror_variants``: exact mirrored versions of each input the cached (frozen-encoder) loader draws;
    ``max_variants``: the most augmented variants per input (``choose_variants``); ``cache_inputs_at(size)``: how
    many embeddings at that input side the cache can hold (None: no limit)."""
    sizes = list(range(planned_input, min_input - 1, -INPUT_STEP)) or [planned_input]
    modes = [(planned_mode, planned_background_fraction)]
    if planned_mode == "all" and counts.train_background > 0:
        modes.append(("foreground", 0.1))
    patch = tuple(patch) if patch else (planned_input, planned_input)
    slice_shape = tuple(slice_shape) if slice_shape else patch

    def window_and_tiles(side: int) -> tuple[tuple[int, int], int]:
        window = (min(side, patch[0]), min(side, patch[1]))
        return window, windows_per_slice(slice_shape, window) if window != patch else 1

    def window_sides(size: int) -> list[int]:
        """Full resolution first (windows of the input side, tiled, when the slice is larger), then the largest
        window the smallest structure allows, scaled to the input side."""
        scaled = window_for(size, max(patch), structure_px, threshold_px)
        return list(dict.fromkeys([min(size, scaled, max(patch)), scaled]))

    chosen = None
    for size in sizes:
        cost = cost_at(size)
        for side in window_sides(size):
            window, tiles = window_and_tiles(side)
            for mode, fraction in modes:
                slices = training_slices(counts, mode, fraction) * tiles
                if slices * cost.uncached_step_seconds() <= ENCODE_SHARE * budget_s:
                    chosen = (size, mode, fraction, cost, slices, "fits", window, tiles)
                    break
            if chosen:
                break
        if chosen:
            break
    if chosen is None:  # nothing fits: the cheapest combination, said plainly
        size, (mode, fraction) = sizes[-1], modes[-1]
        cost = cost_at(size)
        window, tiles = window_and_tiles(window_sides(size)[-1])
        chosen = (size, mode, fraction, cost, training_slices(counts, mode, fraction) * tiles, "over", window, tiles)
    size, mode, fraction, cost, slices, fit, window, tiles = chosen
    val_slices = counts.val_slices * tiles
    per_encode = cost.encode_seconds if cost.encode_seconds is not None else cost.uncached_step_seconds()
    # a variant's extra cost is its encoding: the step on it is paid whichever input the sample is
    variants = (choose_variants(slices, per_encode, budget_s, max_variants,
                                # the cache also keeps the validation slices
                                (cache_inputs_at(size) - val_slices) / mirror_variants if cache_inputs_at else None)
                if frozen_encoder else 1)
    uncached_iteration = batch_size * cost.uncached_step_seconds() * STEP_OVERHEAD
    cached_iteration = batch_size * cost.cached_step_seconds() * STEP_OVERHEAD
    per_val_slice = cost.inference_seconds()
    val_slices_per_case = val_slices / max(1, counts.val_cases)
    val_case_s = val_slices_per_case * per_val_slice + VALIDATION_CASE_OVERHEAD_S
    # the first validation encodes every validation slice; later ones reuse the cache (frozen encoders)
    overhead = counts.val_cases * VALIDATION_CASE_OVERHEAD_S
    first_validation = val_slices * per_val_slice + overhead
    later_validation = val_slices * (per_val_slice - per_encode if frozen_encoder and cost.encode_seconds
                                     else per_val_slice) + overhead

    # mid-run validations: the first encodes every validation slice, later ones reuse the cache
    midrun_budget = MIDRUN_VALIDATION_SHARE * budget_s
    if first_validation > midrun_budget:
        validations = 0
    else:
        extra = max(0, int((midrun_budget - first_validation) // max(later_validation, 1e-9)))
        validations = 1 + min(extra, MAX_MIDRUN_VALIDATIONS - 1)
    midrun_s = (first_validation + (validations - 1) * later_validation) if validations else 0.0
    # the final validation reuses the cache only when a mid-run one filled it
    final_validation = later_validation if frozen_encoder and validations else first_validation
    # what is left trains; a frozen encoder pays each distinct input once (the cache), where the inputs are the
    # training slices x tiles x the exact mirror variants the cached loader draws at random
    train_s = max(0.0, budget_s - final_validation - midrun_s)
    pool = slices * (mirror_variants * variants if frozen_encoder else 1)

    def seconds_for(samples: float) -> float:
        return training_seconds(samples, batch_size, cached_iteration, uncached_iteration,
                                pool if frozen_encoder else None)

    samples = _solve_increasing(seconds_for, train_s)
    step_iterations = samples / batch_size
    low, high = epoch_range
    epochs = int(min(high, max(low, math.floor(step_iterations / iterations_per_epoch))))
    iterations = iterations_per_epoch
    if step_iterations < low * iterations_per_epoch:  # a short budget: fewer, not longer, epochs
        iterations = max(1, int(step_iterations // max(low, 1)))
        epochs = low
    if validations and epochs >= 2:
        validate_every = max(1, math.ceil(epochs / validations))
        validations = epochs // validate_every
    else:  # too few epochs for a mid-run validation: the final one encodes the validation slices itself
        validate_every, validations, midrun_s, final_validation = epochs + 1, 0, 0.0, first_validation
    total_iterations = epochs * iterations
    predicted = seconds_for(total_iterations * batch_size) + midrun_s + final_validation
    budget_min = budget_s / 60
    scale = size / max(window)
    seen = (f"the whole {patch[0]}x{patch[1]} patch" if window == patch else
            f"{window[0]}x{window[1]} windows ({tiles} per slice, tiled at prediction)")
    seen += (f" at scale {scale:.2f}" + (f": the thinnest structure ({structure_px:.1f} px wide) keeps "
                                         f"{structure_px * scale:.1f} px >= {threshold_px:.0f} px across"
                                         if structure_px else ""))
    reason = (f"{source} on this machine: {per_encode:.3f} s per encoded slice at input {size}, which shows {seen}; "
              f"{slices} training inputs ({mode}{f', {fraction:.0%} of background-only slices' if mode == 'foreground' else ''})"
              f" take {slices * cost.uncached_step_seconds() / 60:.1f} min to {'encode' if frozen_encoder else 'pass'} once"
              f" ({'within' if fit == 'fits' else 'OVER'} {ENCODE_SHARE:.0%} of the {budget_min:.0f}-min budget"
              f"{'' if fit == 'fits' else ': even the cheapest choice does not fit, the run will see fewer slices'}); "
              f"input {size} is the largest from {planned_input} down (step {INPUT_STEP}, smallest allowed {min_input}) "
              f"that fits; {epochs} x {iterations} iterations"
              + (f" (about {expected_distinct(total_iterations * batch_size, pool):.0f} of {pool} distinct inputs, "
                 + (f"{mirror_variants} mirror variants each, " if mirror_variants > 1 else "")
                 + (f"the plain input and {variants - 1} augmented variant(s) of each ({variants} x {slices} encoded "
                    f"in {variants * slices * per_encode / 60:.1f} min <= {ENCODE_SHARE:.0%}), "
                    if variants > 1 else "")
                 + "encoded once)" if frozen_encoder else "")
              + "; validation: "
              + (f"{validations} mid-run (every {validate_every} epochs, {midrun_s / 60:.1f} min <= "
                 f"{MIDRUN_VALIDATION_SHARE:.0%})" if validations else
                 f"final only (one mid-run validation would take {first_validation / 60:.1f} min > "
                 f"{MIDRUN_VALIDATION_SHARE:.0%} of the budget)")
              + f", final {final_validation / 60:.1f} min without mirroring reserved")
    per_iteration = (predicted - midrun_s - final_validation) / max(1, total_iterations)
    return BudgetDecision(size, window, tiles, mode, fraction, iterations, epochs, validate_every, per_encode,
                          cached_iteration, uncached_iteration, per_iteration, val_case_s, predicted / 60, reason,
                          variants, pool if frozen_encoder else None)


def choose_variants(inputs: int, seconds_per_encode: float, budget_s: float, max_variants: int,
                    cache_capacity: float | None) -> int:
    """Augmented variants per training input for cached training: the most (up to ``max_variants``) whose
    encoding, every variant of every input once, stays within ``ENCODE_SHARE`` of the budget and whose embeddings
    fit the cache (``cache_capacity`` inputs); at least 1, the plain input."""
    most = max_variants
    if inputs * seconds_per_encode > 0:
        most = min(most, int(ENCODE_SHARE * budget_s // (inputs * seconds_per_encode)))
    if cache_capacity is not None and inputs > 0:
        most = min(most, int(cache_capacity // inputs))
    return max(1, most)
