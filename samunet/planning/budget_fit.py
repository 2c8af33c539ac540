"""The plans' sections fitted to the fold's time budget: what the planner calls.

``fit_to_budget`` measures (or estimates) the planned adapter's costs, asks ``budget.decide`` for the input side,
slice sampling, run length and validation rhythm, and returns new plan sections with each change said in its
section's reason; the planned sections are left as they were.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from samunet.core.plans import AugmentationPlan, CostPlan, CropPlan, ModelPlan, SlicingPlan, TrainingPlan
from samunet.modeling.encoder_runtime_choice import default_encoder_runtime, encoder_runtime_reason
from samunet.modeling.specs import EMBEDDING_CACHE_RAM_SHARE, backbone_spec, cached_embedding_bytes, embedding_stride
from samunet.planning.budget import (EPOCH_RANGE, ITERATIONS_PER_EPOCH, MAX_CACHED_VARIANTS, MIN_INPUT,
                                     TRAINING_BUDGET_S, BudgetDecision, BudgetRequest, EncoderCosts, InputSides,
                                     RunLimits, Sampling, SliceCounts, SliceGeometry, decide, structure_threshold_px,
                                     windows_reason)
from samunet.planning.cost_model import EstimatedCosts, MeasuredCost
from samunet.planning.hardware import Hardware, machine_key
from samunet.planning.model_planner import (BATCH_CAP, batch_size, device_class, loader_workers,
                                            uses_global_attention)
from samunet.preprocessing.tiling import mirror_combinations


@dataclass(frozen=True)
class InputSections:
    """The plan sections the budget decides: the model's input side, the slice sampling, what the model sees
    (the crop's patch or a window of it) and the cached augmented variants."""

    model: ModelPlan
    slicing: SlicingPlan
    crop: CropPlan
    augmentation: AugmentationPlan


@dataclass(frozen=True)
class FoldSlices:
    """What the fingerprint says about one fold's slices, in preprocessed pixels."""

    counts: SliceCounts
    median_shape: tuple[float, float]  # the median in-plane slice (H, W)
    smallest_structure_px: float | None  # the thinnest class's width (None: no class extents known)


@dataclass(frozen=True)
class BudgetFitRequest:
    """``cost_model(backbone, adapter, precision, device, num_classes, in_channels, global_attention,
    encoder_runtime, batch)`` gives the per-slice cost table at an input side (``cost_model.MeasuredCosts``
    measures on this machine); None: the fixed estimates of ``hardware.py``."""

    planned: InputSections  # as planned before the budget
    slices: FoldSlices
    hardware: Hardware
    frozen_encoder: bool  # the planned adapter caches embeddings
    num_classes: int
    in_channels: int  # channels after packing, into the encoder
    cost_model: Callable[..., Callable[[int], MeasuredCost]] | None = None


@dataclass(frozen=True)
class BudgetFit:
    """New plan sections (the planned ones are left as they were), the training plan and the predicted cost."""

    sections: InputSections
    training: TrainingPlan
    cost: CostPlan


@dataclass(frozen=True)
class CostTable:
    """The per-slice cost table the run will have, at the precision it will run with, and why that one."""

    costs: Callable[[int], MeasuredCost]
    precision: str
    precision_reason: str
    source: str


# bf16 against fp32 is decided at this batch (or the planned one if smaller): the same choice as at batch 8 on
# LiteMedSAM + fusion at 240 px (bf16 1.5x faster per uncached slice at batch 2, 2.4x at 8, AVX-512 BF16), in
# 1,775 MiB instead of 3,142 for the fp32 measurement
PRECISION_PROBE_BATCH = 2


def cost_table(request: BudgetFitRequest, model: ModelPlan, batch: int, min_input: int) -> CostTable:
    """The planned adapter's costs: estimated without a cost model; measured otherwise, on a CPU with bf16
    instructions at both precisions (bf16 is only faster with AMX-class units, never assumed)."""
    hw = request.hardware
    precision = hw.precision
    precision_reason = f"{precision} ({'native bf16 instructions' if hw.bf16_supported else 'no native bf16'})"
    if request.cost_model is None:
        return CostTable(EstimatedCosts(model.backbone, hw.device, request.frozen_encoder), precision,
                         precision_reason, "estimated (not measured)")

    def costs_for(p: str, at_batch: int):  # a frozen encoder timed through the runtime it will run with at p
        return request.cost_model(model.backbone, model.adapter, p, hw.device, request.num_classes,
                                  request.in_channels, model.global_attention,
                                  default_encoder_runtime(hw.device, p) if request.frozen_encoder else "eager",
                                  at_batch)

    if hw.device == "cpu" and precision == "bf16":
        # at the planned side, where the run spends its time: at the smallest, fixed per-call costs hide the
        # arithmetic (LeftAtrium_LGE_30's plan chose fp32 from 64 px, and then paid 0.289 s per encoded slice
        # at 224 against about half of that in bf16); at a small batch, because only the table the run uses
        # needs the planned one and a step at batch 8 in fp32 is the planner's largest allocation
        probe, probe_batch = model.input_size, min(batch, PRECISION_PROBE_BATCH)
        bf16_s = costs_for("bf16", probe_batch)(probe).uncached_step_seconds()
        fp32_s = costs_for("fp32", probe_batch)(probe).uncached_step_seconds()
        if fp32_s <= bf16_s:
            precision = "fp32"
        precision_reason = (f"{precision}: measured faster ({bf16_s:.3f} s bf16 vs {fp32_s:.3f} s fp32 per "
                            f"uncached slice at input {probe}, batch {probe_batch})")
    costs = costs_for(precision, batch)  # the run's table: steps at the planned batch
    # the two ends of the sweep, the planned side first (where the time cap runs out, the other end is
    # extrapolated from it); sizes between interpolated
    costs(model.input_size), costs(min_input)
    return CostTable(costs, precision, precision_reason, "measured")


def fit_to_budget(request: BudgetFitRequest) -> BudgetFit:
    """Input side, slice sampling, run length and validation rhythm inside the fold's time budget (``decide``):
    the planned sections changed where the decision differs, each change said in its section's reason."""
    planned, hw = request.planned, request.hardware
    model, slicing, crop, augmentation = planned.model, planned.slicing, planned.crop, planned.augmentation
    kind = device_class(hw)
    budget_s = TRAINING_BUDGET_S[kind]
    batch, workers = batch_size(hw, model.backbone, model.input_size), loader_workers(hw)
    min_input = min(MIN_INPUT, model.input_size)
    threshold = structure_threshold_px(embedding_stride(model.backbone))
    table = cost_table(request, model, batch, min_input)
    costs, precision, source = table.costs, table.precision, table.source
    runtime = default_encoder_runtime(hw.device, precision)
    model = replace(model, encoder_runtime=runtime,
                    encoder_runtime_reason=encoder_runtime_reason(runtime, hw.device, precision))

    def cache_inputs_at(size: int) -> float:
        return EMBEDDING_CACHE_RAM_SHARE * hw.free_memory_bytes / cached_embedding_bytes(model.backbone, size)

    budget_request = BudgetRequest(
        limits=RunLimits(budget_s, batch, ITERATIONS_PER_EPOCH[kind], EPOCH_RANGE[kind]),
        sides=InputSides(model.input_size, min_input, backbone_spec(model.backbone).size_multiple),
        sampling=Sampling(request.slices.counts, slicing.mode, slicing.background_fraction),
        costs=EncoderCosts(costs.estimate, request.frozen_encoder, source,
                           mirror_variants=(len(mirror_combinations(augmentation.mirror_axes))
                                            if augmentation.cached_augmentation == "exact_mirrors" else 1),
                           max_variants=MAX_CACHED_VARIANTS, cache_inputs_at=cache_inputs_at),
        geometry=SliceGeometry(tuple(crop.patch_size), request.slices.median_shape,
                               request.slices.smallest_structure_px, threshold))
    decision = decide(budget_request)
    if not costs.estimate(decision.input_size).measured and request.cost_model is not None:
        costs(decision.input_size)  # the chosen size measured itself when the time cap allows, then decided again
        decision = decide(budget_request)
    sections = fitted_sections(InputSections(model, slicing, crop, augmentation), decision, request.frozen_encoder,
                               request.slices.smallest_structure_px, threshold)
    training = TrainingPlan(
        batch_size=batch, epochs=decision.epochs, iterations_per_epoch=decision.iterations_per_epoch,
        validate_every=decision.validate_every, foreground_oversample=0.33, num_workers=workers, device=hw.device,
        precision=precision, time_budget_min=budget_s / 60,
        reason=(f"{hw.device} with {hw.free_memory_bytes / 1024**3:.1f} GiB free: batch {batch} (activations in half "
                f"the free memory, at most {BATCH_CAP[kind]}); {workers} loader workers for {hw.cpu_count} CPUs; "
                f"{table.precision_reason}; time budget {budget_s / 60:.0f} min per fold incl. validation: "
                f"{decision.reason}"))
    cost = CostPlan(adapter=model.adapter, precision=precision, source=source,
                    machine=(hw.timing_key or machine_key(hw.device)) if request.cost_model is not None else "",
                    seconds_per_encoded_slice=round(decision.seconds_per_encoded_slice, 5),
                    seconds_per_cached_iteration=round(decision.seconds_per_cached_iteration, 5),
                    seconds_per_uncached_iteration=round(decision.seconds_per_uncached_iteration, 5),
                    seconds_per_iteration=round(decision.seconds_per_iteration, 5),
                    seconds_per_validation_case=round(decision.seconds_per_validation_case, 3),
                    predicted_minutes_per_fold=round(decision.predicted_minutes_per_fold, 2),
                    reason=f"{source} for adapter {model.adapter} ({precision}), batch {batch}",
                    distinct_inputs=decision.distinct_inputs)
    return BudgetFit(sections, training, cost)


def fitted_sections(planned: InputSections, decision: BudgetDecision, frozen_encoder: bool,
                    structure_px: float | None, threshold_px: float) -> InputSections:
    """New sections carrying ``decision``: the input side (and the attention layout that follows it), the model's
    windows, the cached variants and the sampling, each change appended to its section's reason."""
    model, slicing, crop, augmentation = planned.model, planned.slicing, planned.crop, planned.augmentation
    if decision.input_size != model.input_size:
        model = replace(model, input_size=decision.input_size,
                        global_attention=uses_global_attention(model.backbone, decision.input_size),
                        reason=model.reason + f"; budget: input {decision.input_size} instead of {model.input_size} "
                                              "(see training.reason)")
    if list(decision.window) != list(crop.patch_size):
        crop = replace(crop, patch_size=list(decision.window), reason=crop.reason + (
            f"; model windows {decision.window[0]}x{decision.window[1]} tiled over the slice: "
            + windows_reason(decision.input_size, max(crop.patch_size), structure_px, threshold_px)))
    if frozen_encoder:
        augmentation = replace(augmentation, cached_variants=decision.cached_variants, reason=augmentation.reason + (
            f"; {decision.cached_variants - 1} augmented variant(s) of each window, each encoded once "
            "(cached_variants; see training.reason)" if decision.cached_variants > 1 else
            "; no augmented variants of the windows: encoding a second of each would not fit the budget or the cache"))
    if (decision.mode, decision.background_fraction) != (slicing.mode, slicing.background_fraction):
        slicing = replace(slicing, mode=decision.mode, background_fraction=decision.background_fraction,
                          reason=slicing.reason + (
                              f"; budget: {decision.mode} slices (+{decision.background_fraction:.0%} of "
                              "background-only) so every training slice is encoded once within the budget"))
    return InputSections(model, slicing, crop, augmentation)
