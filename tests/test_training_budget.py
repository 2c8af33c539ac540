"""samunet_train keeps the plans' time budget: the limit by default, the final validation inside it (mirrored only
when the time left allows), and debug.json's timing comparing the plan with what the run saw."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from samunet.core.plans import Plans
from samunet.preprocessing.tiling import mirror_combinations
from samunet.training.cli import main
from samunet.training.lr_schedule import TimeBudget
from samunet.training.fold_budget import MIRROR_SLACK_SHARE
from tests.training_helpers import DATASET, fold_folder, private_roots

pytestmark = pytest.mark.usefixtures("single_torch_thread")

FAST = ["--iters-per-epoch", "2", "--batch-size", "4", "--num-workers", "0"]


def _edit_plans(roots: dict[str, str], edit) -> Plans:
    path = Path(roots["SAMUNET_PREPROCESSED"]) / DATASET / "samunetPlans.json"
    plans = Plans.load(path)
    edit(plans)
    plans.save(path)
    return plans


def _train(monkeypatch, roots, *args):
    for key, value in roots.items():
        monkeypatch.setenv(key, value)
    main([*map(str, args)])


def _promise_too_much(plans):
    """A short planned run (so the test is quick) on an impossibly fast machine."""
    plans.training.epochs, plans.training.iterations_per_epoch, plans.training.batch_size = 2, 2, 4
    plans.training.validate_every, plans.training.num_workers = 5, 0
    plans.cost.adapter, plans.cost.seconds_per_iteration, plans.cost.predicted_minutes_per_fold = "decoder", 1e-6, 1e-6
    plans.cost.seconds_per_cached_iteration = plans.cost.seconds_per_uncached_iteration = 1e-6


def test_timing_compares_plan_and_run_and_warns_when_far_off(hippocampus_preprocessed, tmp_path, monkeypatch, capsys):
    roots = private_roots(hippocampus_preprocessed, tmp_path)
    _edit_plans(roots, _promise_too_much)
    _train(monkeypatch, roots, "4", "decoder", "0", "--disable-tta")
    timing = json.loads((fold_folder(roots, "decoder", "0") / "debug.json").read_text())["timing"]
    assert timing["planned_seconds_per_iteration"] == pytest.approx(1e-6) and timing["planned_minutes_per_fold"] == 1e-6
    assert timing["planned_seconds_per_iteration_of_planned_run"] == 1e-6
    assert timing["iterations"] == 4 and timing["measured_seconds_per_iteration"] > 0
    assert timing["measured_minutes_per_fold"] > 0 and timing["time_limit_min"] == 30
    assert timing["comparable"] is True
    warnings = [line for line in capsys.readouterr().err.splitlines() if "Timing differs from the plans" in line]
    assert len(warnings) == 1 and "seconds per iteration" in warnings[0] and "minutes per fold" in warnings[0]


def test_a_run_other_than_the_planned_one_is_recorded_but_not_compared(hippocampus_preprocessed, tmp_path,
                                                                       monkeypatch, capsys):
    roots = private_roots(hippocampus_preprocessed, tmp_path)
    _edit_plans(roots, _promise_too_much)
    _train(monkeypatch, roots, "4", "decoder", "0", "--disable-tta", "--epochs", "1", "--time-limit-min", "5")
    timing = json.loads((fold_folder(roots, "decoder", "0") / "debug.json").read_text())["timing"]
    assert timing["comparable"] is False and timing["not_comparable_because"] == ["training.epochs", "time limit"]
    assert timing["measured_seconds_per_iteration"] > 0
    assert "Timing differs from the plans" not in capsys.readouterr().err


def test_figures_for_another_adapter_are_not_compared(hippocampus_preprocessed, tmp_path, monkeypatch):
    roots = private_roots(hippocampus_preprocessed, tmp_path)
    _edit_plans(roots, lambda plans: setattr(plans.cost, "adapter", "ssam"))
    _train(monkeypatch, roots, "4", "decoder", "0", "--epochs", "1", "--disable-tta", *FAST)
    timing = json.loads((fold_folder(roots, "decoder", "0") / "debug.json").read_text())["timing"]
    assert timing["planned_seconds_per_iteration"] is None and "plans.cost is for ssam" in timing["plans_cost_source"]


def _trainer(hippocampus_preprocessed, tmp_path, monkeypatch, *flags):
    import torch

    from samunet.training.ddp import DistributedContext
    from samunet.training.run_setup import TrainingOptions, prepare_run
    from samunet.training.run_training import build_adapter_for
    from samunet.training.trainer import FoldTrainer

    roots = private_roots(hippocampus_preprocessed, tmp_path)
    for key, value in roots.items():
        monkeypatch.setenv(key, value)
    # the adapter the plans' cost was measured for (the planner's recommendation), so its figures apply
    adapter = hippocampus_preprocessed.plans.model.adapter
    options = TrainingOptions(dataset="4", adapter=adapter, fold=0, num_workers=0, **dict(flags))
    run = prepare_run(options)
    return FoldTrainer(run, build_adapter_for(run, torch.device("cpu")), torch.device("cpu"), DistributedContext())


def test_the_plans_budget_is_the_default_limit_and_the_flag_overrides_it(hippocampus_preprocessed, tmp_path,
                                                                           monkeypatch):
    planned = hippocampus_preprocessed.plans.training.time_budget_min
    assert planned == 30
    assert _trainer(hippocampus_preprocessed, tmp_path / "a", monkeypatch).budget.limit_s == planned * 60
    assert _trainer(hippocampus_preprocessed, tmp_path / "b", monkeypatch,
                    ("time_limit_min", 2.0)).budget.limit_s == 120
    assert not _trainer(hippocampus_preprocessed, tmp_path / "c", monkeypatch, ("time_limit_min", 0)).budget.limited


def test_final_mirroring_follows_the_time_left(hippocampus_preprocessed, tmp_path, monkeypatch):
    trainer = _trainer(hippocampus_preprocessed, tmp_path, monkeypatch)
    trainer.run.plans.augmentation.cached_augmentation = "exact_mirrors"  # mirrored views are images to encode
    trainer.fold_budget.validation_seconds = [600.0]  # one unmirrored validation took ten minutes
    trainer.fold_budget.clock = TimeBudget(30.0)
    trainer.budget.elapsed = lambda: 29.9 * 60.0  # seconds left: mirroring (4 views) cannot fit, even with the slack
    assert trainer.fold_budget.final_mirroring() is False
    trainer.budget.elapsed = lambda: 60.0
    assert trainer.fold_budget.final_mirroring() is True
    # mirroring after an unvalidated last epoch costs that epoch's unmirrored validation too
    slices = sum(c.num_slices for c in trainer.run.case_slices(trainer.run.val_cases))
    per_encode = trainer.run.planned_cost().seconds_per_encoded_slice
    mirrored = 600.0 + 3 * slices * per_encode
    slack = MIRROR_SLACK_SHARE * 30 * 60.0
    trainer.budget.elapsed = lambda: 30 * 60.0 - (mirrored - slack + 1.0)  # the mirrored one alone fits, with slack
    assert trainer.fold_budget.final_mirroring() is True
    assert trainer.fold_budget.final_mirroring(last_epoch_unvalidated=True) is False
    trainer.fold_budget.clock = TimeBudget(None)  # no limit: mirrored as before
    assert trainer.fold_budget.final_mirroring() is True
    trainer.run.options.disable_tta = True
    assert trainer.fold_budget.final_mirroring() is False


def test_mirroring_a_grid_models_embeddings_is_estimated_at_decoder_cost(hippocampus_preprocessed, tmp_path,
                                                                         monkeypatch):
    trainer = _trainer(hippocampus_preprocessed, tmp_path, monkeypatch)
    assert trainer.cache is not None
    cost = trainer.run.planned_cost()
    # LiteMedSAM at 256 on the 2-core CPU: encoding a slice costs more than a decoder pass
    cost.seconds_per_encoded_slice, cost.seconds_per_cached_iteration = 0.19, 8 * 0.14
    slices = sum(c.num_slices for c in trainer.run.case_slices(trainer.run.val_cases))
    trainer.fold_budget.validation_seconds = [100.0]
    trainer.fold_budget.clock = TimeBudget(30.0)
    views = len(mirror_combinations(trainer.run.plans.augmentation.mirror_axes))
    assert views > 1
    as_images = 100.0 + (views - 1) * slices * cost.seconds_per_encoded_slice
    as_embeddings = 100.0 + (views - 1) * slices * cost.seconds_per_decoded_slice(trainer.run.training.batch_size)
    assert as_embeddings < as_images
    slack = MIRROR_SLACK_SHARE * 30 * 60.0
    # time left between the two estimates: only the model that mirrors its embeddings fits
    trainer.budget.elapsed = lambda: 30 * 60.0 - ((as_images + as_embeddings) / 2 - slack)
    trainer.run.plans.augmentation.cached_augmentation = "grid"
    assert trainer.fold_budget.final_mirroring() is True
    assert "mirrored in embedding space" in _announcement(trainer)  # each slice encoded once, not once per view
    trainer.run.plans.augmentation.cached_augmentation = "exact_mirrors"
    assert trainer.fold_budget.final_mirroring() is False
    assert "mirrored in embedding space" not in _announcement(trainer)


def _announcement(trainer) -> str:
    """The log line announcing a mirrored final validation."""
    import logging

    from samunet.utils.logs import get_logger

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    get_logger().addHandler(handler)
    try:
        trainer.cache.seconds_per_encode = lambda: 0.2  # as after a mid-run validation
        trainer.fold_budget.announce_final_validation(mirror=True)
    finally:
        get_logger().removeHandler(handler)
    return " ".join(r.getMessage() for r in records)


def test_final_validation_is_reserved_out_of_the_training_time(hippocampus_preprocessed, tmp_path, monkeypatch):
    trainer = _trainer(hippocampus_preprocessed, tmp_path, monkeypatch)
    cost = trainer.run.plans.cost
    assert cost is not None and cost.adapter == trainer.run.options.adapter
    expected = cost.seconds_per_validation_case * len(trainer.run.val_cases)
    assert trainer.budget.reserve_s == pytest.approx(min(expected, 15 * 60))
    trainer.fold_budget.validation_seconds.append(42.0)  # a mid-run validation was measured: it replaces the estimate
    assert trainer.fold_budget.final_validation_reserve_s() == 42.0


def test_epochs_that_fit_grow_a_fast_run_and_never_shrink_a_slow_one():
    from samunet.training.lr_schedule import FILL_MARGIN_SHARE, epochs_that_fit

    budget = TimeBudget(30.0)
    budget.elapsed = lambda: 300.0  # 5 min used by 5 epochs of 60 s: 25 min less the reserve and margin remain
    left = 30 * 60.0 * (1 - FILL_MARGIN_SHARE) - 120.0 - 300.0
    assert epochs_that_fit(budget, 5, 13, 60.0, reserve_s=120.0, most_epochs=40) == 5 + int(left // 60.0) == 27
    assert epochs_that_fit(budget, 5, 13, 60.0, reserve_s=120.0, most_epochs=20) == 20  # at most the cap
    assert epochs_that_fit(budget, 5, 13, 200.0, reserve_s=120.0, most_epochs=20) == 13  # slower: the clock cuts it
    assert epochs_that_fit(TimeBudget(None), 5, 13, 1.0, reserve_s=0.0, most_epochs=20) == 13  # no limit
    assert epochs_that_fit(budget, 5, 13, 20.0, reserve_s=120.0, most_epochs=None) == 5 + int(left // 20.0) == 72


def test_a_run_faster_than_planned_trains_the_epochs_fitted_to_its_budget(hippocampus_preprocessed, tmp_path,
                                                                          monkeypatch):
    import torch

    import samunet.training.fold_budget as fold_budget_module
    from samunet.core.names import TRAINING_STATE_FILE

    fitted_from: list[float] = []
    caps: set[int | None] = set()

    def three_epochs(budget, epochs_done, total_epochs, seconds_per_epoch, reserve_s, most_epochs):
        fitted_from.append(seconds_per_epoch)
        caps.add(most_epochs)
        return 3  # as if the time left held one more epoch than the two planned

    def sized_to_the_budget(plans):
        _promise_too_much(plans)
        plans.cost.predicted_minutes_per_fold = plans.training.time_budget_min  # the planner filled the budget

    monkeypatch.setattr(fold_budget_module, "epochs_that_fit", three_epochs)
    roots = private_roots(hippocampus_preprocessed, tmp_path / "fill")
    _edit_plans(roots, sized_to_the_budget)
    _train(monkeypatch, roots, "4", "decoder", "0", "--disable-tta")
    folder = fold_folder(roots, "decoder", "0")
    results = json.loads((folder / "debug.json").read_text())["results"]
    assert (results["planned_epochs"], results["epochs"], results["iterations"]) == (2, 3, 6)
    assert len(fitted_from) == 3 and min(fitted_from) > 0  # after every epoch, from the measured epoch time
    assert caps == {3}  # the cost was measured for the decoder: at most 1.5 x the two planned, rounded up
    state = torch.load(folder / TRAINING_STATE_FILE, weights_only=True)
    assert state["metadata"]["total_epochs"] == 3  # --continue goes on with the fitted count
    # another adapter on the same plans (the cost is the recommended decoder's) fills the same budget, bounded by
    # the budget alone: its epochs were never predicted
    fitted_from.clear()
    caps.clear()
    _train(monkeypatch, roots, "4", "cnnhead", "0", "--disable-tta")
    other = json.loads((fold_folder(roots, "cnnhead", "0") / "debug.json").read_text())["results"]
    assert (other["planned_epochs"], other["epochs"]) == (2, 3) and len(fitted_from) == 3 and caps == {None}
    # --epochs fixes the count, and a plan that did not fill its budget (capped epochs) is not grown: nothing fitted
    for name, edit, flags in (("fixed", sized_to_the_budget, ["--epochs", "2"]), ("capped", _promise_too_much, [])):
        fitted_from.clear()
        roots = private_roots(hippocampus_preprocessed, tmp_path / name)
        _edit_plans(roots, edit)
        _train(monkeypatch, roots, "4", "decoder", "0", "--disable-tta", *flags)
        results = json.loads((fold_folder(roots, "decoder", "0") / "debug.json").read_text())["results"]
        assert (results["epochs"], results["iterations"]) == (2, 4) and not fitted_from, name


def test_a_filled_budget_keeps_room_for_a_cheap_mirrored_final_validation(hippocampus_preprocessed, tmp_path,
                                                                          monkeypatch):
    from samunet.training.fold_budget import MIRROR_RESERVE_SHARE

    trainer = _trainer(hippocampus_preprocessed, tmp_path, monkeypatch)
    trainer.fold_budget.clock = TimeBudget(30.0)
    trainer.run.plans.augmentation.cached_augmentation = "exact_mirrors"
    trainer.fold_budget.validation_seconds = [30.0]
    mirrored = trainer.fold_budget.mirrored_final_validation_seconds(last_epoch_unvalidated=True)
    assert 30.0 < mirrored <= MIRROR_RESERVE_SHARE * 30 * 60.0
    assert trainer.fold_budget.final_validation_reserve_when_filling() == mirrored
    trainer.fold_budget.validation_seconds = [400.0]  # mirroring would take a large share of the budget: not reserved
    assert trainer.fold_budget.final_validation_reserve_when_filling() == 400.0
    trainer.fold_budget.validation_seconds = [30.0]
    trainer.run.options.disable_tta = True
    assert trainer.fold_budget.final_validation_reserve_when_filling() == 30.0


def test_the_fit_projects_recent_epochs_not_one_fast_outlier(hippocampus_preprocessed, tmp_path, monkeypatch):
    import samunet.training.fold_budget as fold_budget_module

    seen: list[float] = []
    monkeypatch.setattr(fold_budget_module, "epochs_that_fit",
                        lambda budget, done, total, seconds_per_epoch, reserve_s, most_epochs: seen.append(
                            seconds_per_epoch) or total)
    trainer = _trainer(hippocampus_preprocessed, tmp_path, monkeypatch)
    for seconds in (60.0, 25.0, 24.0, 15.0):  # the last epoch ran fast on a momentarily idle CPU
        trainer.history.add_epoch(len(trainer.history.epoch_seconds), 0.1, 1e-4, seconds)
    trainer.epoch = 4
    trainer.fit_epochs_to_budget()
    assert seen == [24.0]  # the median of the last three


def test_a_validation_is_counted_without_the_encodings_the_cache_keeps(hippocampus_preprocessed, tmp_path,
                                                                       monkeypatch):
    import time

    trainer = _trainer(hippocampus_preprocessed, tmp_path, monkeypatch)
    assert trainer.cache is not None and trainer.run.val_cases

    def timed_validation() -> tuple[float, float]:
        encoded, started = trainer.cache.encode_seconds, time.monotonic()
        trainer._validate(final=False)
        return time.monotonic() - started, trainer.cache.encode_seconds - encoded

    wall, encoding = timed_validation()  # the first validation encodes every validation slice
    assert encoding > 0
    assert trainer.fold_budget.validation_seconds[-1] == pytest.approx(wall - encoding, abs=0.2)
    assert trainer.fold_budget.final_validation_reserve_s() == trainer.fold_budget.validation_seconds[-1] < wall
    _, encoding = timed_validation()  # everything cached: nothing to take off
    assert encoding == 0
    trainer.cache._warned_full = True  # a full cache encodes again next time: the whole wall time counts
    wall, encoding = timed_validation()
    assert trainer.fold_budget.validation_seconds[-1] == pytest.approx(wall, abs=0.2)


def test_validation_estimates_count_the_windows_of_tiled_slices(hippocampus_preprocessed, tmp_path, monkeypatch):
    import numpy as np

    from samunet.training.fold_budget import FoldBudget

    trainer = _trainer(hippocampus_preprocessed, tmp_path, monkeypatch)
    cases = trainer.run.case_slices(trainer.run.val_cases)
    slices = sum(c.num_slices for c in cases)
    smallest_side = min(min(np.load(c.seg_path, mmap_mode="r").shape[1:]) for c in cases)
    assert trainer.fold_budget.validation_windows == slices  # every slice fits the planned patch: one window each
    # a patch of a third of the smallest side: windows overlap by half, so at least 5 per axis (DRIVE: 16 per image)
    trainer.run.plans.crop.patch_size = [smallest_side // 3] * 2
    tiled = FoldBudget(trainer.run, trainer.adapter, trainer.cache)
    assert tiled.validation_windows >= 25 * slices
    trainer.run.plans.augmentation.cached_augmentation = "exact_mirrors"  # each mirrored view encodes every window
    tiled.validation_seconds = [100.0]
    per_encode = trainer.run.planned_cost().seconds_per_encoded_slice
    views = tiled.mirror_views()
    assert tiled.mirrored_final_validation_seconds(False) == pytest.approx(
        100.0 + (views - 1) * tiled.validation_windows * per_encode)


def test_the_final_validation_drops_mirroring_when_it_lowers_the_dice(hippocampus_preprocessed, tmp_path, monkeypatch):
    from samunet.evaluation.mirroring_decision import MirroringDecision, decision_file

    trainer = _trainer(hippocampus_preprocessed, tmp_path, monkeypatch)
    calls: list[tuple[bool, bool]] = []

    def scored(dice_mirrored: float, dice_plain: float):
        def fake_validate(final: bool, mirror: bool = False) -> dict:
            calls.append((final, mirror))
            dice = dice_mirrored if mirror else dice_plain
            return {"foreground_mean": {"Dice": dice}, "mean": {"1": {"Dice": dice}, "2": {"Dice": dice}}}
        return fake_validate

    trainer.epoch = 3
    for (mirrored, plain), expected_calls in (((0.77, 0.79), [(False, False), (True, True), (True, False)]),
                                              ((0.80, 0.79), [(False, False), (True, True)])):
        calls.clear()
        monkeypatch.setattr(trainer, "_validate", scored(mirrored, plain))
        trainer._validate_last_epoch_and_final(mirror=True)
        assert calls == expected_calls  # lost: validated again without mirroring, the outputs predict will match
        decision = MirroringDecision.load(decision_file(trainer.run.fold_folder))
        assert ((decision.mirror, decision.mirrored_dice, decision.unmirrored_dice)
                == (mirrored >= plain, mirrored, plain))


def test_the_budget_owns_the_epochs_the_decay_spans_and_the_count_a_resume_goes_on_with(hippocampus_preprocessed,
                                                                                       tmp_path, monkeypatch):
    trainer = _trainer(hippocampus_preprocessed, tmp_path, monkeypatch)
    budget, planned = trainer.fold_budget, trainer.run.training
    assert budget.total_epochs == planned.epochs
    assert budget.total_iterations == planned.epochs * planned.iterations_per_epoch
    trainer.iteration = budget.total_iterations - 1  # the planned run's last step: the decay is nearly done
    at_the_end = trainer.learning_rate(0.0)
    budget.total_epochs = 2 * planned.epochs  # fitted: the trainer's decay spans the budget's new total
    assert trainer.learning_rate(0.0) > at_the_end
    budget.total_epochs, budget.fills = planned.epochs, False
    budget.resume(planned.epochs + 5)  # a budget that does not fill keeps the plans' epochs
    assert budget.total_epochs == planned.epochs
    budget.fills = True
    budget.resume(planned.epochs + 5)  # one that fills goes on with the epochs an earlier process fitted
    assert budget.total_epochs == planned.epochs + 5
    budget.resume(1)
    assert budget.total_epochs == planned.epochs + 5


def test_the_learning_rate_clock_is_the_share_of_the_training_time_used(hippocampus_preprocessed, tmp_path,
                                                                        monkeypatch):
    import torch

    from samunet.training.ddp import DistributedContext

    trainer = _trainer(hippocampus_preprocessed, tmp_path, monkeypatch)
    budget, ctx, cpu = trainer.fold_budget, DistributedContext(), torch.device("cpu")
    budget.clock = TimeBudget(None)
    assert budget.time_used(ctx, cpu) == 0.0
    budget.clock = TimeBudget(10.0, reserve_s=120.0)
    budget.clock.elapsed = lambda: 240.0  # of the 8 training minutes (10 less the reserve), half
    assert budget.time_used(ctx, cpu) == pytest.approx(0.5)


def test_a_short_encoding_estimate_reads_in_seconds_not_zero_minutes(hippocampus_preprocessed, tmp_path, monkeypatch):
    import logging

    from samunet.utils.logs import get_logger

    trainer = _trainer(hippocampus_preprocessed, tmp_path, monkeypatch)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    get_logger().addHandler(handler)
    try:
        trainer.cache.seconds_per_encode = lambda: 0.002  # a few seconds for every window of every view
        trainer.fold_budget.announce_final_validation(mirror=True)
    finally:
        get_logger().removeHandler(handler)
    text = " ".join(r.getMessage() for r in records)
    assert "of encoding" in text and "0 min" not in text
    assert re.search(r"at most \d+ s of encoding", text), text
