"""samunet_train's flags written once (core/training_flags.py): a flag added to the table reaches samunet_train's
parser, TrainingOptions, the plans overrides and samunet_compare (its parser, its argv for samunet_train, its
reuse check); samunet_compare accepts every samunet_train flag, refuses the ones it decides by itself and an
unknown one in one line."""
from __future__ import annotations

import json

import pytest

from samunet.compare import folds as compare_folds
from samunet.compare.cli import build_parser as compare_parser
from samunet.compare.cli import main as compare_main
from samunet.core import nnunet_flags, training_flags
from samunet.core.training_flags import TrainingFlag, TrainingOptions
from samunet.training.cli import build_parser as train_parser
from samunet.training.cli import options_from_args
from samunet.training.run_setup import apply_overrides
from tests.fixtures_models import make_tiny_plans

NEW_FLAG = TrainingFlag("--foreground-oversample", "share of each batch forced to contain foreground", float,
                        "training.foreground_oversample", compare_reuse_check=True)


@pytest.fixture
def table_with_new_flag(monkeypatch):
    monkeypatch.setattr(training_flags, "TRAINING_FLAGS", training_flags.TRAINING_FLAGS + (NEW_FLAG,))


def test_a_flag_added_to_the_table_reaches_parser_options_overrides_and_compare(table_with_new_flag, tmp_path):
    args = train_parser().parse_args(["4", "decoder", "0", "--foreground-oversample", "0.5", "--epochs", "3"])
    options = options_from_args(args)
    assert options.foreground_oversample == 0.5 and options.epochs == 3
    assert TrainingOptions(dataset="4", adapter="decoder", fold=0).foreground_oversample is None
    assert "--foreground-oversample" in train_parser().format_help()

    plans = make_tiny_plans(adapter="decoder")
    assert plans.training.foreground_oversample != 0.5
    overridden, overrides = apply_overrides(plans, options)
    assert overridden.training.foreground_oversample == 0.5
    assert overrides == {"training.epochs": 3, "training.foreground_oversample": 0.5}
    assert plans.training.foreground_oversample != 0.5  # the plans given are not changed

    argv = compare_folds.training_argv(options)
    assert argv[argv.index("--foreground-oversample") + 1] == "0.5"
    assert options_from_args(train_parser().parse_args(argv)) == options
    compare_args = compare_parser().parse_args(["-d", "4", "--foreground-oversample", "0.25"])
    assert compare_args.foreground_oversample == 0.25

    # a finished fold trained with another value is named when samunet_compare reuses it
    fold = tmp_path / "fold_0"
    fold.mkdir()
    (fold / "debug.json").write_text(json.dumps({"overrides": overrides}))
    job = compare_folds.FoldJob("decoder", 0, fold)
    assert compare_folds.reuse_differences(job, options) == []
    assert compare_folds.reuse_differences(job, options.replace(foreground_oversample=0.25)) == [
        "training.foreground_oversample 0.5 (asked 0.25)"]


def _non_default(flag: TrainingFlag):
    if flag.is_switch:
        return True
    if flag.choices:
        return flag.choices[-1]
    return {int: 3, float: 2.5, str: "x"}[flag.type]


def test_every_flag_survives_the_argv_samunet_compare_gives_samunet_train():
    values = {f.name: _non_default(f) for f in training_flags.TRAINING_FLAGS}
    options = TrainingOptions(dataset="4", adapter="cnnhead", fold=1, plans_name="other", **values)
    argv = compare_folds.training_argv(options)
    assert options_from_args(train_parser().parse_args(argv)) == options
    # a flag at its default is left out
    assert compare_folds.training_argv(TrainingOptions(dataset="4", adapter="cnnhead", fold=1)) == [
        "4", "cnnhead", "1", "-p", "samunetPlans"]


def test_lr_overrides_the_trained_adapters_entry():
    plans = make_tiny_plans(adapter="decoder")
    options = TrainingOptions(dataset="4", adapter="cnnhead", fold=0, lr=0.01)
    overridden, overrides = apply_overrides(plans, options)
    assert overrides == {"adapters.cnnhead.learning_rate": 0.01}
    assert overridden.adapter_config("cnnhead").learning_rate == 0.01
    assert overridden.adapter_config("decoder").learning_rate == plans.adapter_config("decoder").learning_rate


def test_unknown_options_field_is_refused():
    with pytest.raises(TypeError, match="no_such_flag"):
        TrainingOptions(dataset="4", adapter="decoder", fold=0, no_such_flag=1)


def test_compare_accepts_every_samunet_train_flag():
    for flag in training_flags.TRAINING_FLAGS:
        if flag.not_in_compare:
            continue
        given = [] if flag.is_switch else [str(_non_default(flag))]
        args = compare_parser().parse_args(["-d", "4", flag.flag, *given])
        assert getattr(args, flag.name) == _non_default(flag), flag.flag


@pytest.mark.parametrize("flag", [f for f in training_flags.TRAINING_FLAGS if f.not_in_compare],
                         ids=lambda f: f.flag)
def test_compare_refuses_what_it_decides_by_itself_in_one_line(flag, capsys):
    given = [] if flag.is_switch else ["2"]
    with pytest.raises(SystemExit) as e:
        compare_main(["-d", "4", flag.flag, *given])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and len(err) == 1
    assert err[0].startswith(f"samunet_compare: error: {flag.flag} ") and flag.not_in_compare in err[0]


def test_compare_refuses_an_unknown_flag_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        compare_main(["-d", "4", "--epochz", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--epochz" in err[0]


@pytest.mark.parametrize("argv,needle", [
    (["--encoder-runtime", "fast"], "--encoder-runtime 'fast' is unknown; choose one of eager"),
    (["--validate-every", "0"], "--validate-every must be at least 1, got 0"),
    (["--iters-per-epoch", "0"], "--iters-per-epoch must be at least 1, got 0"),
])
def test_compare_checks_values_from_the_table_in_one_line(argv, needle, samunet_dirs, capsys):
    with pytest.raises(SystemExit) as e:
        compare_main(["-d", "4", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and len(err) == 1 and needle in err[0]


def test_nnunet_spellings_of_training_flags_come_from_the_table():
    assert nnunet_flags.TRAIN.same == {f.nnunet: f.flag for f in training_flags.TRAINING_FLAGS if f.nnunet}
    assert nnunet_flags.TRAIN.same["-device"] == "--device" and nnunet_flags.TRAIN.same["--c"] == "--continue"


def test_every_flag_has_its_line_in_the_training_manual():
    from pathlib import Path

    manual = (Path(__file__).resolve().parents[1] / "documentation" / "training.md").read_text()
    rows = [line for line in manual.splitlines() if line.startswith("| `--")]
    for flag in training_flags.TRAINING_FLAGS:
        row = next((r for r in rows if r.startswith(f"| `{flag.flag}")), None)
        assert row is not None, f"documentation/training.md has no row for {flag.flag}"
        if flag.plans_field:
            assert f"`{flag.plans_field.replace('{adapter}', '<adapter>')}`" in row, row


def test_nnunet_hints_name_existing_samunet_train_flags():
    import re

    known = {f.flag for f in training_flags.TRAINING_FLAGS}
    for hint in nnunet_flags.TRAIN.different.values():
        for flag in re.findall(r"--[a-z][a-z-]+", hint):
            assert flag in known, (flag, hint)
    assert "--batch-size" in nnunet_flags.PLAN.different["-gpu_memory_target"] and "--batch-size" in known
