"""Resolution, slice sampling, run length and validation decided together, inside one time budget per fold.

The planner's one home for the input side: ``choose_input_size`` plans it from the patch and the backbone's facts
(native side, size multiple: ``modeling.specs.BACKBONE_SPECS``); ``decide`` lowers it where the budget needs
(``budget_fit.fit_to_budget`` turns the decision into new plan sections).

A fold's budget pays for three things: encoding every planned training slice once (frozen encoders cache the
embedding, so later steps only run the trainable head), the training steps themselves, and validation. The rules:

- Encoding every planned training slice once may take at most ``ENCODE_SHARE`` of the budget, so most of it is
  left for (cheap) cached steps. Adapters whose encoder trains pay a full step for every slice, every time; there
  the rule is that an epoch over the planned slices fits in ``ENCODE_SHARE`` of the budget, so the run sees each
  slice at least about twice.
- Mid-run validations may take at most ``MIDRUN_VALIDATION_SHARE`` (10%) of the budget; when even one is more
  expensive, only the final validation runs. The final validation (without mirroring) is reserved out of the
  budget; the trainer decides at the end whether the rest allows mirroring.
- The input side is the largest candidate (from the planned one down, in steps of the backbone's size multiple)
  that meets these rules, trying the planned slice sampling first and foreground slices (plus a tenth of the
  background ones) second.
- At each input side, full resolution comes first (windows of the input side tiled over larger slices), then
  the whole patch scaled to the input. Resolution is never traded below what the smallest structure needs: when
  scaling the whole patch to an input side would leave the smallest structure (its mean width, from the
  fingerprint) under two cells of the predicted mask (``structure_threshold_px``), the model sees windows of the
  slice at a scale that keeps it, and prediction tiles them; every window then counts as a slice to encode and to
  validate.

- Cached training sees no interpolating augmentation (each input is encoded once), so where encoding is cheap
  the loader draws augmented variants of each input as well (rotated, scaled, intensity-changed, each a fixed
  draw encoded once: ``choose_variants``): as many as keep encoding every variant of every input within
  ``ENCODE_SHARE`` and the cache's memory, at most ``MAX_CACHED_VARIANTS``. Only the encoding counts here: the
  training step on a sample is paid whichever variant it is.

All figures come from ``cost_model`` (measured on this machine) unless the caller passes estimates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

from samunet.core.plans import expected_distinct, training_seconds
from samunet.modeling.specs import backbone_spec
from samunet.planning.cost_model import MeasuredCost
from samunet.preprocessing.tiling import windows_per_slice

TRAINING_BUDGET_S = {"cpu": 30 * 60, "gpu": 4 * 3600}  # default wall time one fold should take
ITERATIONS_PER_EPOCH = {"cpu": 100, "gpu": 250}
EPOCH_RANGE = {"cpu": (2, 200), "gpu": (50, 1000)}
# the input sides planned for any backbone (within its native side and in steps of its size multiple: modeling.specs)
MIN_INPUT, MAX_INPUT = 64, 1024
# input side / patch side: SAM's ViT embeds 16x16 pixels per token, so 2x the patch gives one token per 8x8
# patch pixels; LiteMedSAM's TinyViT keeps a 4x4-pixel grid (a 64x64 embedding at 256), already finer at 1x.
# Measured on Hippocampus (patch 48x56, LiteMedSAM, 30 min CPU): 1x (input 64) is 3-4x faster per slice than
# 2x (112) and reached Dice 0.78 where 2x reached 0.38 in the same time (encoder trained); with cached
# embeddings 2x reached 0.849 against 0.855 (planning.md).
INPUT_SCALE = {"litemedsam": 1}
DEFAULT_INPUT_SCALE = 2
ENCODE_SHARE = 0.4
MIDRUN_VALIDATION_SHARE = 0.10
MAX_MIDRUN_VALIDATIONS = 4  # enough for checkpoint_best to pick among; the last epoch's counts as one
MIN_STRUCTURE_PIXELS = 8  # the ViT backbones' threshold (structure_threshold_px), the default when none is given
# the plain input and one augmented variant: measured with 2, LeftAtrium_LGE_30 fold 0 rose from 0.789 to 0.806;
# with 4, DRIVE's test Dice stayed on its steps-to-Dice line (0.744 at 1,300 steps) and Hippocampus fold 0 gave
# 0.849 (0.851 without) while its steps took 77% longer than planned (a 4x pool to encode, and each variant was then
# transformed again at every draw; the loader keeps built variants since)
MAX_CACHED_VARIANTS = 2
WINDOW_MULTIPLE, MIN_WINDOW = 8, 32
# the training loop's work on top of the timed step (which includes the loss and the optimizer): reading and
# packing slices, the cache's lookups, and steps slowed right after an encoder inference. Against steps timed
# apart from the encoder runtime (cost_model), on the 2-core CPU: DRIVE's fully cached iterations 1.0 s against a
# 0.78 s step (256 px windows, batch 8); LeftAtrium's mostly cached ones 0.45-0.65 s against 0.39-0.46 (224 px)
STEP_OVERHEAD = 1.25
# per validated case on top of the model: restoring to the original grid, writing the label map and float16
# probabilities, Dice/HD95/NSD (Hippocampus fold 0 on the idle 2-core CPU: 132 s for 52 cases, 104 s of it encoding)
VALIDATION_CASE_OVERHEAD_S = 0.5


@dataclass(frozen=True)
class PlannedInput:
    """The input side planned from the patch, before the budget (``decide`` starts from it and may go lower)."""

    size: int
    reason: str


def choose_input_size(backbone: str, patch_size: list[int]) -> PlannedInput:
    """Smallest multiple of the backbone's size multiple >= the patch's larger side times the backbone's scale
    (``INPUT_SCALE``), within [``MIN_INPUT``, ``MAX_INPUT``] and at most its native side.

    Small slices gain nothing from 1024 px: the cost grows with the square of the input side."""
    spec = backbone_spec(backbone)
    native, multiple = spec.native_input, spec.size_multiple
    scale = INPUT_SCALE.get(backbone, DEFAULT_INPUT_SCALE)
    wanted = multiple * math.ceil(scale * max(patch_size) / multiple)
    size = min(max(wanted, MIN_INPUT), MAX_INPUT, native)
    times = {1: "the", 2: "twice the"}.get(scale, f"{scale}x the")
    return PlannedInput(size, f"input {size}: {times} patch's larger side ({max(patch_size)} px) rounded up to a "
                              f"multiple of {multiple}, within [{MIN_INPUT}, {MAX_INPUT}] and at most {backbone}'s "
                              f"native {native}")


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


@dataclass(frozen=True)
class RunLimits:
    """What one fold may spend: its wall time, the batch, the epoch length and the range of epochs."""

    budget_s: float
    batch_size: int
    iterations_per_epoch: int
    epoch_range: tuple[int, int]


@dataclass(frozen=True)
class InputSides:
    """The input sides ``decide`` tries: from ``planned`` down to ``smallest`` in steps of ``step`` (the backbone's
    size multiple, modeling.specs)."""

    planned: int
    smallest: int
    step: int

    def candidates(self) -> list[int]:
        return list(range(self.planned, self.smallest - 1, -self.step)) or [self.planned]


@dataclass(frozen=True)
class Sampling:
    """The fold's slices and the slice sampling planned for them (``decide`` may fall back to foreground slices)."""

    counts: SliceCounts
    mode: str
    background_fraction: float


@dataclass(frozen=True)
class SliceGeometry:
    """Preprocessed pixels: ``patch`` the whole-slice patch (H, W), None: the planned input side; ``slice_shape`` the
    median slice (H, W), None: the patch; ``structure_px`` the smallest structure's width (None: no limit), which
    must stay ``threshold_px`` across (``structure_threshold_px``)."""

    patch: tuple[int, int] | None = None
    slice_shape: tuple[float, float] | None = None
    structure_px: float | None = None
    threshold_px: float = MIN_STRUCTURE_PIXELS


@dataclass(frozen=True)
class EncoderCosts:
    """``cost_at(size)``: seconds per slice at an input side; ``mirror_variants``: exact mirrored versions of each
    input the cached (frozen-encoder) loader draws; ``max_variants``: the most augmented variants per input
    (``choose_variants``); ``cache_inputs_at(size)``: how many embeddings at that side the cache holds (None: no
    limit); ``source`` names where the costs come from in the reason."""

    cost_at: Callable[[int], MeasuredCost]
    frozen_encoder: bool
    source: str = "measured"
    mirror_variants: int = 1
    max_variants: int = 1
    cache_inputs_at: Callable[[int], float] | None = None


@dataclass(frozen=True)
class BudgetRequest:
    """Everything ``decide`` weighs."""

    limits: RunLimits
    sides: InputSides
    sampling: Sampling
    costs: EncoderCosts
    geometry: SliceGeometry = SliceGeometry()


@dataclass(frozen=True)
class InputChoice:
    """The input side, what the model sees at it and the slice sampling: the first that fits (or the cheapest)."""

    size: int
    window: tuple[int, int]
    tiles: int
    mode: str
    background_fraction: float
    cost: MeasuredCost
    slices: int  # training inputs: sampled slices x tiles
    fits: bool  # False: nothing fitted, this is the cheapest combination


def choose_input(request: BudgetRequest) -> InputChoice:
    """The largest input side, at it full resolution before the scaled patch, and the planned sampling before
    foreground slices, whose training inputs are encoded (or passed, for a trained encoder) once within
    ``ENCODE_SHARE`` of the budget."""
    sampling, geometry = request.sampling, request.geometry
    sizes = request.sides.candidates()
    modes = [(sampling.mode, sampling.background_fraction)]
    if sampling.mode == "all" and sampling.counts.train_background > 0:
        modes.append(("foreground", 0.1))
    patch = tuple(geometry.patch) if geometry.patch else (request.sides.planned, request.sides.planned)
    slice_shape = tuple(geometry.slice_shape) if geometry.slice_shape else patch

    def window_sides(size: int) -> list[int]:
        """Full resolution first (windows of the input side, tiled, when the slice is larger), then the largest
        window the smallest structure allows, scaled to the input side."""
        scaled = window_for(size, max(patch), geometry.structure_px, geometry.threshold_px)
        return list(dict.fromkeys([min(size, scaled, max(patch)), scaled]))

    def choice(size: int, cost: MeasuredCost, side: int, mode: str, fraction: float,
               fits: bool | None) -> InputChoice:
        window = (min(side, patch[0]), min(side, patch[1]))
        tiles = windows_per_slice(slice_shape, window) if window != patch else 1
        slices = training_slices(sampling.counts, mode, fraction) * tiles
        if fits is None:
            fits = slices * cost.uncached_step_seconds() <= ENCODE_SHARE * request.limits.budget_s
        return InputChoice(size, window, tiles, mode, fraction, cost, slices, fits)

    for size in sizes:
        cost = request.costs.cost_at(size)
        for side in window_sides(size):
            for mode, fraction in modes:
                candidate = choice(size, cost, side, mode, fraction, None)
                if candidate.fits:
                    return candidate
    # nothing fits: the cheapest combination, said plainly
    size, (mode, fraction) = sizes[-1], modes[-1]
    return choice(size, request.costs.cost_at(size), window_sides(size)[-1], mode, fraction, False)


@dataclass(frozen=True)
class ValidationCosts:
    """Seconds of one validation pass: the first encodes every validation slice, later ones (frozen encoders)
    reuse the cache; both include the per-case overhead."""

    first_s: float
    later_s: float
    per_case_s: float  # one validation case, first encoding included


def validation_costs(request: BudgetRequest, choice: InputChoice, per_encode: float) -> ValidationCosts:
    counts, cost = request.sampling.counts, choice.cost
    val_slices = counts.val_slices * choice.tiles
    per_val_slice = cost.inference_seconds()
    val_slices_per_case = val_slices / max(1, counts.val_cases)
    overhead = counts.val_cases * VALIDATION_CASE_OVERHEAD_S
    later = val_slices * (per_val_slice - per_encode if request.costs.frozen_encoder and cost.encode_seconds
                          else per_val_slice) + overhead
    return ValidationCosts(first_s=val_slices * per_val_slice + overhead, later_s=later,
                           per_case_s=val_slices_per_case * per_val_slice + VALIDATION_CASE_OVERHEAD_S)


def midrun_validations(budget_s: float, validation: ValidationCosts) -> int:
    """Mid-run validations within ``MIDRUN_VALIDATION_SHARE`` of the budget (0 when even one is too expensive)."""
    midrun_budget = MIDRUN_VALIDATION_SHARE * budget_s
    if validation.first_s > midrun_budget:
        return 0
    extra = max(0, int((midrun_budget - validation.first_s) // max(validation.later_s, 1e-9)))
    return 1 + min(extra, MAX_MIDRUN_VALIDATIONS - 1)


def decide(request: BudgetRequest) -> BudgetDecision:
    """The largest input side and richest sampling that keep the rules above (see the module docstring), then
    the run length and validation rhythm that fill the budget."""
    limits, costs = request.limits, request.costs
    budget_s, batch_size, frozen_encoder = limits.budget_s, limits.batch_size, costs.frozen_encoder
    chosen = choose_input(request)
    size, cost, slices = chosen.size, chosen.cost, chosen.slices
    val_slices = request.sampling.counts.val_slices * chosen.tiles
    per_encode = cost.encode_seconds if cost.encode_seconds is not None else cost.uncached_step_seconds()
    # a variant's extra cost is its encoding: the step on it is paid whichever input the sample is
    variants = (choose_variants(slices, per_encode, budget_s, costs.max_variants,
                                # the cache also keeps the validation slices
                                (costs.cache_inputs_at(size) - val_slices) / costs.mirror_variants
                                if costs.cache_inputs_at else None)
                if frozen_encoder else 1)
    uncached_iteration = batch_size * cost.uncached_step_seconds() * STEP_OVERHEAD
    cached_iteration = batch_size * cost.cached_step_seconds() * STEP_OVERHEAD
    validation = validation_costs(request, chosen, per_encode)
    first_validation, later_validation = validation.first_s, validation.later_s
    validations = midrun_validations(budget_s, validation)
    midrun_s = (first_validation + (validations - 1) * later_validation) if validations else 0.0
    # the final validation reuses the cache only when a mid-run one filled it
    final_validation = later_validation if frozen_encoder and validations else first_validation
    # what is left trains; a frozen encoder pays each distinct input once (the cache), where the inputs are the
    # training slices x tiles x the exact mirror variants the cached loader draws at random
    train_s = max(0.0, budget_s - final_validation - midrun_s)
    pool = slices * (costs.mirror_variants * variants if frozen_encoder else 1)

    def seconds_for(samples: float) -> float:
        return training_seconds(samples, batch_size, cached_iteration, uncached_iteration,
                                pool if frozen_encoder else None)

    samples = _solve_increasing(seconds_for, train_s)
    step_iterations = samples / batch_size
    low, high = limits.epoch_range
    iterations_per_epoch = limits.iterations_per_epoch
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
    per_iteration = (predicted - midrun_s - final_validation) / max(1, total_iterations)
    decision = BudgetDecision(
        input_size=size, window=chosen.window, tiles_per_slice=chosen.tiles, mode=chosen.mode,
        background_fraction=chosen.background_fraction, iterations_per_epoch=iterations, epochs=epochs,
        validate_every=validate_every, seconds_per_encoded_slice=per_encode,
        seconds_per_cached_iteration=cached_iteration, seconds_per_uncached_iteration=uncached_iteration,
        seconds_per_iteration=per_iteration, seconds_per_validation_case=validation.per_case_s,
        predicted_minutes_per_fold=predicted / 60, reason="", cached_variants=variants,
        distinct_inputs=pool if frozen_encoder else None)
    schedule = ValidationSchedule(validations, midrun_s, first_validation, final_validation)
    return replace(decision, reason=_decision_reason(request, chosen, decision, schedule))


@dataclass(frozen=True)
class ValidationSchedule:
    """The validations a decided run makes, and their seconds."""

    midrun: int  # mid-run validations (every ``validate_every`` epochs)
    midrun_s: float
    first_s: float  # one validation that encodes every validation slice
    final_s: float  # the final one, reserved out of the budget


def _decision_reason(request: BudgetRequest, chosen: InputChoice, decision: BudgetDecision,
                     schedule: ValidationSchedule) -> str:
    """The decision in words, with its figures (training.reason in the plans)."""
    geometry, costs, limits = request.geometry, request.costs, request.limits
    size, window, tiles, mode, fraction, slices = (chosen.size, chosen.window, chosen.tiles, chosen.mode,
                                                   chosen.background_fraction, chosen.slices)
    structure_px, threshold_px, frozen_encoder = geometry.structure_px, geometry.threshold_px, costs.frozen_encoder
    per_encode, variants, pool = decision.seconds_per_encoded_slice, decision.cached_variants, decision.distinct_inputs
    epochs, iterations = decision.epochs, decision.iterations_per_epoch
    patch = tuple(geometry.patch) if geometry.patch else (request.sides.planned, request.sides.planned)
    total_iterations = epochs * iterations
    budget_min = limits.budget_s / 60
    scale = size / max(window)
    seen = (f"the whole {patch[0]}x{patch[1]} patch" if window == patch else
            f"{window[0]}x{window[1]} windows ({tiles} per slice, tiled at prediction)")
    seen += (f" at scale {scale:.2f}" + (f": the thinnest structure ({structure_px:.1f} px wide) keeps "
                                         f"{structure_px * scale:.1f} px >= {threshold_px:.0f} px across"
                                         if structure_px else ""))
    sampled = f", {fraction:.0%} of background-only slices" if mode == "foreground" else ""
    return (f"{costs.source} on this machine: {per_encode:.3f} s per encoded slice at input {size}, "
            f"which shows {seen}; "
            f"{slices} training inputs ({mode}{sampled})"
            f" take {slices * chosen.cost.uncached_step_seconds() / 60:.1f} min to "
            f"{'encode' if frozen_encoder else 'pass'} once"
            f" ({'within' if chosen.fits else 'OVER'} {ENCODE_SHARE:.0%} of the {budget_min:.0f}-min budget"
            f"{'' if chosen.fits else ': even the cheapest choice does not fit, the run will see fewer slices'}); "
            f"input {size} is the largest from {request.sides.planned} down (step {request.sides.step}, smallest "
            f"allowed {request.sides.smallest}) that fits; {epochs} x {iterations} iterations"
            + (f" (about {expected_distinct(total_iterations * limits.batch_size, pool):.0f} of {pool} "
               "distinct inputs, "
               + (f"{costs.mirror_variants} mirror variants each, " if costs.mirror_variants > 1 else "")
               + (f"the plain input and {variants - 1} augmented variant(s) of each ({variants} x {slices} encoded "
                  f"in {variants * slices * per_encode / 60:.1f} min <= {ENCODE_SHARE:.0%}), "
                  if variants > 1 else "")
               + "encoded once)" if frozen_encoder else "")
            + "; validation: "
            + (f"{schedule.midrun} mid-run (every {decision.validate_every} epochs, {schedule.midrun_s / 60:.1f} min "
               f"<= {MIDRUN_VALIDATION_SHARE:.0%})" if schedule.midrun else
               f"final only (one mid-run validation would take {schedule.first_s / 60:.1f} min > "
               f"{MIDRUN_VALIDATION_SHARE:.0%} of the budget)")
            + f", final {schedule.final_s / 60:.1f} min without mirroring reserved")


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
