"""Resolution, slice sampling, run length and validation decided inside one time budget (planning/budget.py), from
costs measured on this machine (planning/cost_model.py)."""
from __future__ import annotations

import re

import pytest

from samunet.planning import cost_model as cost_model_module
from samunet.planning.budget import (ENCODE_SHARE, MAX_CACHED_VARIANTS, MIDRUN_VALIDATION_SHARE, BudgetRequest,
                                     EncoderCosts, InputSides, RunLimits, Sampling, SliceCounts, SliceGeometry,
                                     choose_variants, decide, structure_threshold_px, window_for, windows_reason)
from samunet.planning.cost_model import CostCache, MeasuredCost, MeasuredCosts, TimeCap
from samunet.planning.budget_fit import PRECISION_PROBE_BATCH
from samunet.planning.hardware import Hardware
from samunet.planning.planner import plan
from tests.test_planner import make_case, make_fingerprint

# the cost measurement's own tests time the real calls (what runs inside them is asserted)
pytestmark = pytest.mark.unmemoised

GIB = 1024**3
BUDGET_S = 1800.0
COUNTS = SliceCounts(train_cases=24, train_all=2000, train_foreground=900, train_background=1100, val_cases=6,
                     val_slices=500)


def frozen_costs(encode_at_256: float, head_at_256: float = 0.02):
    """A frozen-encoder cost table that grows with the pixels."""
    return lambda s: MeasuredCost(s, encode_at_256 * (s / 256) ** 2, head_at_256 * (s / 256) ** 2, None)


def request(costs, counts=COUNTS, planned=256, min_input=64, mode="all", frozen=True, geometry=SliceGeometry(),
            **encoder):
    """A 30-min CPU fold at batch 8, 100 iterations per epoch, 2-200 epochs; ``encoder``: EncoderCosts' options."""
    return BudgetRequest(RunLimits(BUDGET_S, 8, 100, (2, 200)), InputSides(planned, min_input, 16),
                         Sampling(counts, mode, 1.0), EncoderCosts(costs, frozen, **encoder), geometry)


def run(costs, counts=COUNTS, planned=256, min_input=64, mode="all", frozen=True, **options):
    return decide(request(costs, counts, planned, min_input, mode, frozen, **options))


def test_cheap_encoder_keeps_the_planned_resolution_and_every_slice():
    d = run(frozen_costs(0.05))
    assert (d.input_size, d.mode) == (256, "all")
    assert COUNTS.train_all * 0.05 <= ENCODE_SHARE * BUDGET_S
    assert d.predicted_minutes_per_fold <= BUDGET_S / 60 * 1.01


def test_expensive_encoder_lowers_the_resolution_until_every_slice_is_encoded_within_the_share():
    d = run(frozen_costs(2.0))
    assert d.input_size < 256
    slices = COUNTS.train_all if d.mode == "all" else COUNTS.train_foreground + round(0.1 * COUNTS.train_background)
    assert slices * frozen_costs(2.0)(d.input_size).uncached_step_seconds() <= ENCODE_SHARE * BUDGET_S
    # the next larger size would not have fitted with the same sampling
    bigger = frozen_costs(2.0)(d.input_size + 16)
    assert slices * bigger.uncached_step_seconds() > ENCODE_SHARE * BUDGET_S or d.mode == "foreground"


def test_nothing_fits_gives_the_cheapest_choice_and_says_so():
    d = run(frozen_costs(50.0), min_input=192)
    assert d.input_size == 192 and d.mode == "foreground" and "OVER" in d.reason


def test_threshold_is_two_mask_cells_of_the_backbone():
    assert structure_threshold_px(16) == 8  # ViT: 16 px tokens, masks at 1/4 of the input
    assert structure_threshold_px(4) == 2  # LiteMedSAM: 4 px cells, masks at the input's resolution


def test_thin_structures_are_tiled_not_shrunk():
    # a 565x584 photograph with 3 px vessels: the whole image at input 256 would leave them 1.3 px wide
    assert window_for(256, 584, 3.0, 2.0) < 584
    side = window_for(256, 584, 3.0, 2.0)
    assert 3.0 * 256 / side >= 2.0 and side % 8 == 0
    assert window_for(256, 584, 40.0, 2.0) == 584  # thick structures: the whole patch, scaled
    d = run(frozen_costs(0.5), counts=SliceCounts(16, 16, 16, 0, 4, 4),
            geometry=SliceGeometry(patch=(584, 568), slice_shape=(584, 565), structure_px=3.0, threshold_px=2.0))
    assert d.window[0] < 584 and d.tiles_per_slice > 1
    assert 3.0 * d.input_size / max(d.window) >= 2.0
    assert "windows" in d.reason


def test_windows_say_why_they_were_chosen():
    # DRIVE-like: 3.9 px vessels, a 584 px patch at input 256 would keep 1.7 px of them
    thin = windows_reason(256, 584, 3.9, 2.0)
    assert "1.7 px across, under 2 px" in thin
    # a 296 px patch of 30 px structures (the synthetic 320 benchmark): scaling would keep 26 px, so the windows
    # are there for full resolution, not for the structure, and the reason must not claim otherwise
    thick = windows_reason(256, 296, 29.9, 2.0)
    assert "full resolution" in thick and "under" not in thick and "0.86" in thick


def test_midrun_validations_stay_within_a_tenth_of_the_budget_or_only_the_final_one_runs():
    cheap = run(frozen_costs(0.02))
    assert cheap.validate_every <= cheap.epochs
    first = COUNTS.val_slices * frozen_costs(0.02)(cheap.input_size).inference_seconds()
    assert first <= MIDRUN_VALIDATION_SHARE * BUDGET_S
    costly = run(frozen_costs(1.0), counts=SliceCounts(24, 200, 100, 100, 6, 5000))
    assert costly.validate_every > costly.epochs and "final only" in costly.reason


def test_a_frozen_encoder_gets_more_iterations_than_a_trained_one_at_the_same_cost():
    frozen = run(frozen_costs(0.3))
    trained = run(lambda s: MeasuredCost(s, None, None, 0.32 * (s / 256) ** 2), frozen=False)
    assert frozen.epochs * frozen.iterations_per_epoch > trained.epochs * trained.iterations_per_epoch


CPU_BF16 = Hardware("cpu", 16 * GIB, 16 * GIB, 2, True)


def cost_model_from(seconds_at, on_table=None):
    """A planner cost model (``cost_model.py``'s signature) whose tables answer ``seconds_at(precision, side)``;
    ``on_table(precision, batch)`` sees every table the planner asks for."""
    class Table:
        def __init__(self, precision):
            self.precision = precision

        def __call__(self, s):
            return seconds_at(self.precision, s)

        estimate = __call__

    def cost_model(backbone, adapter, precision, device, num_classes, in_channels, global_attention, encoder_runtime,
                   batch):
        if on_table:
            on_table(precision, batch)
        return Table(precision)
    return cost_model


def test_large_slices_without_class_extents_plan_windows_without_failing():
    """A fingerprint with no per-class extents (no labelled voxel anywhere) on slices larger than the input: the
    cheap encoder lets windows at full resolution fit, and the crop's reason says so (it used to format None)."""
    fp = make_fingerprint([make_case(i, shape=(30, 400, 380)) for i in range(10)])
    assert not fp.classes
    cheap = cost_model_from(lambda precision, s: MeasuredCost(s, 0.001 * (s / 64) ** 2, 0.0005 * (s / 64) ** 2, None))
    plans = plan(fp, backbone="litemedsam", hardware=CPU_BF16, cost_model=cheap)
    assert max(plans.crop.patch_size) == plans.model.input_size == 256  # windows, not the 400 x 384 patch
    assert "windows at full resolution fit the budget" in plans.crop.reason


def test_planner_measures_precision_instead_of_assuming_bf16_is_faster():
    fp = make_fingerprint([make_case(i, shape=(30, 200, 180)) for i in range(10)])
    calls, batches = [], []

    def seconds_at(precision, s):
        calls.append((precision, s))
        slow = 3.0 if precision == "bf16" else 1.0  # a CPU with bf16 instructions but no AMX
        return MeasuredCost(s, 0.01 * slow * (s / 64) ** 2, 0.001 * (s / 64) ** 2, None)

    cost_model = cost_model_from(seconds_at, on_table=lambda precision, batch: batches.append((precision, batch)))
    plans = plan(fp, backbone="litemedsam", hardware=CPU_BF16, cost_model=cost_model)
    assert plans.training.precision == "fp32" and plans.cost.precision == "fp32"
    assert {"bf16", "fp32"} <= {p for p, _ in calls}
    assert "measured faster" in plans.training.reason
    assert plans.cost.source == "measured" and plans.training.time_budget_min == 30
    assert plans.cost.predicted_minutes_per_fold <= 30 * 1.01
    planned, probe = plans.training.batch_size, min(plans.training.batch_size, PRECISION_PROBE_BATCH)
    assert planned > probe  # else the two batches below are one
    # both precisions compared at the small probe batch; the run's own table timed at the batch it will use
    assert set(batches) == {("bf16", probe), ("fp32", probe), ("fp32", planned)}
    assert f"batch {probe})" in plans.training.reason


def test_precision_is_decided_at_the_planned_side_not_the_smallest():
    """bf16 slower at 64 px (fixed per-call costs) but faster at the planned side, as LiteMedSAM measured here."""
    fp = make_fingerprint([make_case(i, shape=(30, 200, 180)) for i in range(10)])

    def seconds_at(precision, s):
        fixed, per_pixel = (0.05, 0.5) if precision == "bf16" else (0.005, 1.0)
        seconds = fixed + per_pixel * 1e-5 * s * s
        return MeasuredCost(s, seconds, seconds / 2, None)

    plans = plan(fp, backbone="litemedsam", hardware=CPU_BF16, cost_model=cost_model_from(seconds_at))
    assert plans.training.precision == "bf16"
    probe = int(re.search(r"per uncached slice at input (\d+)", plans.training.reason).group(1))
    assert probe > 64 and probe >= plans.model.input_size  # the planned side, before the budget may shrink it


def test_measured_costs_are_cached_per_machine_and_reused(tmp_path, monkeypatch):
    measured = []
    real = cost_model_module.measure_input_size

    def counting(*args, **kwargs):
        measured.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(cost_model_module, "measure_input_size", counting)
    path = tmp_path / "cost_model_cache.json"
    first = MeasuredCosts("tiny", "decoder", "fp32", "cpu", CostCache(path), time_cap=TimeCap(30))
    a = first(64)
    assert measured == [64] and a.measured and a.encode_seconds > 0 and a.head_step_seconds > 0
    again = MeasuredCosts("tiny", "decoder", "fp32", "cpu", CostCache(path), time_cap=TimeCap(30))
    assert again(64) == a and measured == [64]  # from the file: no second measurement
    other = MeasuredCosts("tiny", "ssam", "fp32", "cpu", CostCache(path), time_cap=TimeCap(30))
    full = other(64)
    assert measured == [64, 64] and full.full_step_seconds > 0 and full.encode_seconds is None


def test_the_timed_step_includes_the_optimizer_at_the_asked_batch(tmp_path, monkeypatch):
    import torch

    steps = []
    real_step = torch.optim.AdamW.step

    def recording(self, *args, **kwargs):
        steps.append(self.param_groups[0]["params"][0].grad is not None)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    batches = []
    cache = CostCache(tmp_path / "cost_model_cache.json")
    first = MeasuredCosts("tiny", "decoder", "fp32", "cpu", cache, batch=3, time_cap=TimeCap(30))
    original = cost_model_module.measure_input_size

    def counting(*args, **kwargs):
        batches.append(args[5] if len(args) > 5 else kwargs.get("batch"))
        return original(*args, **kwargs)

    monkeypatch.setattr(cost_model_module, "measure_input_size", counting)
    first(64)
    assert steps and all(steps)  # optimizer steps on real gradients are part of the timed step
    MeasuredCosts("tiny", "decoder", "fp32", "cpu", cache, batch=5, time_cap=TimeCap(30))(64)
    assert batches == [3, 5]  # another batch is another cache entry, measured again


def test_the_step_is_timed_before_the_encoder_runtime_is_built(tmp_path, monkeypatch):
    """An exported encoder's build and first inferences slowed the torch steps timed right after them (LeftAtrium's
    cached step planned at 2x the real one), so the step is timed first and the encoder after its runtime."""
    import torch

    from samunet.adapters.base import Adapter

    events = []
    real_step, real_runtime = torch.optim.AdamW.step, Adapter.use_encoder_runtime

    def step(self, *args, **kwargs):
        events.append("step")
        return real_step(self, *args, **kwargs)

    def runtime(self, *args, **kwargs):
        events.append("runtime")
        return real_runtime(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    monkeypatch.setattr(Adapter, "use_encoder_runtime", runtime)
    cost = cost_model_module.measure_input_size("tiny", "decoder", 64, "fp32", "cpu", batch=2)
    assert cost.encode_seconds > 0 and cost.head_step_seconds > 0
    assert events.count("runtime") == 1 and "step" in events
    assert events.index("runtime") > max(i for i, e in enumerate(events) if e == "step")


def test_the_encoder_is_timed_on_a_small_batch_and_the_step_on_the_asked_one(monkeypatch):
    """The encoder's per-slice time does not depend on the batch but its runtime's memory does (cost_model.py):
    it is timed on at most ENCODE_TIMING_BATCH slices, the step on the batch asked for."""
    from samunet.adapters.base import Adapter

    events = []
    real_encode, real_runtime = Adapter.encode, Adapter.use_encoder_runtime
    real_forward = Adapter.forward_from_embeddings

    def encode(self, images, *args, **kwargs):
        events.append(("encode", images.shape[0]))
        return real_encode(self, images, *args, **kwargs)

    def runtime(self, *args, **kwargs):
        events.append(("runtime", 0))
        return real_runtime(self, *args, **kwargs)

    def forward(self, embeddings, *args, **kwargs):
        events.append(("step", embeddings.shape[0]))
        return real_forward(self, embeddings, *args, **kwargs)

    monkeypatch.setattr(Adapter, "encode", encode)
    monkeypatch.setattr(Adapter, "use_encoder_runtime", runtime)
    monkeypatch.setattr(Adapter, "forward_from_embeddings", forward)
    cost = cost_model_module.measure_input_size("tiny", "decoder", 64, "fp32", "cpu", batch=5)
    assert cost.encode_seconds > 0 and cost.head_step_seconds > 0
    built = events.index(("runtime", 0))
    timed = [n for what, n in events[built:] if what == "encode"]
    assert timed and set(timed) == {cost_model_module.ENCODE_TIMING_BATCH} and cost_model_module.ENCODE_TIMING_BATCH < 5
    assert {n for what, n in events if what == "step"} == {5}


def test_sizes_asked_after_the_time_cap_are_interpolated_not_measured(tmp_path, monkeypatch):
    table = MeasuredCosts("tiny", "decoder", "fp32", "cpu", CostCache(None), time_cap=TimeCap(0.0))
    monkeypatch.setattr(cost_model_module, "measure_input_size",
                        lambda b, a, s, *rest, **kw: MeasuredCost(s, 0.01 * (s / 64) ** 2, 0.001, None))
    table(64)  # the first size is always measured
    guess = table(128)
    assert not guess.measured and guess.encode_seconds == pytest.approx(0.04)


def test_mirror_variants_are_inputs_to_encode_too():
    """The cached loader draws exact mirrors at random: each is a distinct input, encoded once when first drawn."""
    from samunet.core.plans import expected_distinct

    one = run(frozen_costs(0.1))
    four = run(frozen_costs(0.1), mirror_variants=4)
    assert four.epochs * four.iterations_per_epoch < one.epochs * one.iterations_per_epoch
    assert (four.predicted_minutes_per_fold <= BUDGET_S / 60 * 1.01
            and one.predicted_minutes_per_fold <= BUDGET_S / 60 * 1.01)
    assert four.seconds_per_iteration > one.seconds_per_iteration  # more of the run pays the encoder
    assert expected_distinct(0, 100) == 0 and expected_distinct(1e9, 100) == pytest.approx(100)
    assert expected_distinct(100, 100) == pytest.approx(100 * (1 - 1 / 2.718281828), rel=1e-6)


def test_a_final_only_validation_is_reserved_with_its_encoding():
    costly = run(frozen_costs(1.0), counts=SliceCounts(24, 200, 100, 100, 6, 5000))
    assert costly.validate_every > costly.epochs
    from samunet.planning.budget import VALIDATION_CASE_OVERHEAD_S

    first = 5000 * frozen_costs(1.0)(costly.input_size).inference_seconds() + 6 * VALIDATION_CASE_OVERHEAD_S
    assert f"final {first / 60:.1f} min without mirroring reserved" in costly.reason


def test_cached_variants_fill_the_encoding_share_within_the_cache():
    # LeftAtrium_LGE_30 on the AMX machine: 2,112 slices at 0.131 s; 40% of 30 min holds 2 encodings of each
    assert choose_variants(2112, 0.131, BUDGET_S, MAX_CACHED_VARIANTS, None) == 2
    assert choose_variants(320, 0.2, BUDGET_S, MAX_CACHED_VARIANTS, None) == MAX_CACHED_VARIANTS  # DRIVE: capped
    assert choose_variants(320, 0.2, BUDGET_S, MAX_CACHED_VARIANTS, cache_capacity=700) == 2  # memory caps it
    assert choose_variants(2112, 0.5, BUDGET_S, MAX_CACHED_VARIANTS, None) == 1  # one encoding is all that fits

    def with_variants(costs, frozen=True, most=MAX_CACHED_VARIANTS):
        return run(costs, frozen=frozen, max_variants=most)

    cheap, dear = with_variants(frozen_costs(0.02)), with_variants(frozen_costs(0.3))
    assert cheap.cached_variants > 1 and "augmented variant" in cheap.reason
    assert dear.cached_variants == 1 and with_variants(frozen_costs(0.02), frozen=False).cached_variants == 1
    # more variants, a larger pool of inputs to encode: fewer cached steps fit the same budget
    single = with_variants(frozen_costs(0.02), most=1)
    assert cheap.epochs * cheap.iterations_per_epoch < single.epochs * single.iterations_per_epoch


def test_the_planned_iteration_at_another_run_length_follows_the_planners_curve():
    """samunet_train compares its iterations with the plan's figure for the iterations it ran: the planner's own
    curve (encodings on first draws), so a run cut short by the clock or lengthened by the fit is compared fairly."""
    from samunet.core.plans import CostPlan

    d = run(frozen_costs(0.1))
    cost = CostPlan("decoder", "bf16", "measured", "m", d.seconds_per_encoded_slice, d.seconds_per_cached_iteration,
                    d.seconds_per_uncached_iteration, d.seconds_per_iteration, d.seconds_per_validation_case,
                    d.predicted_minutes_per_fold, distinct_inputs=d.distinct_inputs)
    planned_iterations = d.epochs * d.iterations_per_epoch
    assert d.distinct_inputs == COUNTS.train_all * d.cached_variants
    assert cost.seconds_per_iteration_at(planned_iterations, 8) == pytest.approx(d.seconds_per_iteration, rel=1e-6)
    shorter = cost.seconds_per_iteration_at(planned_iterations // 2, 8)
    longer = cost.seconds_per_iteration_at(planned_iterations * 2, 8)
    assert shorter > d.seconds_per_iteration > longer > d.seconds_per_cached_iteration
    trained = run(frozen_costs(0.1), frozen=False)  # no cache: every iteration costs the same
    assert trained.distinct_inputs is None
