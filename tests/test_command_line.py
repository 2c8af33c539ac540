"""What every command line shares: no prefix matching, nnU-Net's spellings, one-line user errors, a fast --help,
umask-honouring writes and log-friendly progress."""
from __future__ import annotations

import importlib
import logging
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from samunet.core import nnunet_flags
from samunet.core.command import user_command
from samunet.core.errors import SamunetUserError
from samunet.utils.logs import setup_logging

REPO = Path(__file__).resolve().parents[1]


def console_scripts() -> dict[str, tuple[str, str]]:
    """name -> (module, function) from setup.py's console_scripts."""
    found = re.findall(r'"(samunet_\w+) = ([\w.]+):(\w+)"', (REPO / "setup.py").read_text())
    assert len(found) >= 10
    return {name: (module, function) for name, module, function in found}


SCRIPTS = console_scripts()


def run_module(module: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          cwd=kwargs.pop("cwd", REPO), **kwargs)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_imports_no_heavy_library(name):
    """--help must answer at once: the command modules import torch, numpy and friends only when they work."""
    module, function = SCRIPTS[name]
    code = (f"import sys\nfrom {module} import {function} as main\n"
            f"try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            f"heavy = sorted(m for m in ('torch', 'scipy', 'SimpleITK', 'tqdm') if m in sys.modules)\n"
            f"print('HEAVY', heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr
    assert "usage: " + name in result.stdout and "``" not in result.stdout
    heavy = re.search(r"HEAVY \[(.*)\]", result.stdout).group(1)
    # numpy (0.1-0.2 s) is allowed: the typed plans' label scheme uses it; samunet_convert_msd's module reads images
    allowed = {"'SimpleITK'"} if name == "samunet_convert_msd" else set()
    assert set(filter(None, (h.strip() for h in heavy.split(",")))) <= allowed, heavy


def _parser(name: str):
    module, _ = SCRIPTS[name]
    mod = importlib.import_module(module)
    if hasattr(mod, "build_parser"):
        return mod.build_parser()
    return None


@pytest.mark.parametrize("name", ["samunet_plan", "samunet_preprocess", "samunet_train", "samunet_predict",
                                  "samunet_ensemble", "samunet_evaluate", "samunet_find_best"])
def test_no_prefix_matching(name):
    """``-pl X`` is never read as ``-p l``: an unknown flag (exit 2), or nnU-Net's flag refused (a user error)."""
    parser = _parser(name)
    assert parser.allow_abbrev is False
    with pytest.raises((SystemExit, SamunetUserError)) as e:
        parser.parse_args(["-d", "4", "-pl", "X"] if name != "samunet_train" else ["4", "ssam", "0", "-pl", "X"])
    assert isinstance(e.value, SamunetUserError) or e.value.code == 2


@pytest.mark.parametrize("argv", [["4", "ssam", "0", "-pl", "X"], ["4", "ssam", "0", "-dev", "cpu"],
                                  ["4", "ssam", "0", "--epoch", "3"], ["4", "ssam", "0", "-pssam"]])
def test_train_refuses_partial_flags_in_one_line(argv, capsys):
    from samunet.training.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "unrecognized arguments" in err[0] and argv[3] in err[0]


def test_nnunet_same_meaning_spellings_parse_like_samunet_flags():
    from samunet.inference.cli import build_parser as predict_parser
    from samunet.training.cli import build_parser as train_parser

    args = predict_parser().parse_args(["-i", "a", "-o", "b", "-d", "4", "-device", "cpu", "--disable_tta",
                                        "--save_probabilities", "-chk", "checkpoint_best.pth", "--continue_prediction"])
    assert (args.device, args.disable_tta, args.save_probabilities, args.checkpoint) == ("cpu", True, True, "best")
    for nnunet, samunet in (("checkpoint_final.pth", "final"), ("checkpoint_latest.pth", "latest")):
        assert predict_parser().parse_args(["-i", "a", "-o", "b", "-d", "4", "-chk", nnunet]).checkpoint == samunet
    args = train_parser().parse_args(["4", "samed", "0", "-device", "cpu", "--c", "-num_gpus", "2", "--npz", "--val"])
    assert (args.device, args.resume, args.num_gpus, args.val_only) == ("cpu", True, 2, True)


def _every_table():
    for family in ("PLAN", "PREPROCESS", "TRAIN", "PREDICT", "ENSEMBLE", "EVALUATE", "FIND_BEST", "CONVERT_MSD"):
        yield family, getattr(nnunet_flags, family)


FAMILY_COMMAND = {"PLAN": "samunet_plan", "PREPROCESS": "samunet_preprocess", "TRAIN": "samunet_train",
                  "PREDICT": "samunet_predict", "ENSEMBLE": "samunet_ensemble", "EVALUATE": "samunet_evaluate",
                  "FIND_BEST": "samunet_find_best", "CONVERT_MSD": "samunet_convert_msd"}
DIFFERENT = [(FAMILY_COMMAND[family], flag) for family, table in _every_table() for flag in table.different]


@pytest.mark.parametrize("command,flag", DIFFERENT)
def test_nnunet_flags_with_another_meaning_name_the_samunet_equivalent(command, flag, capsys):
    module, function = SCRIPTS[command]
    main = getattr(importlib.import_module(module), function)
    base = {"samunet_train": ["4", "ssam", "0"], "samunet_predict": ["-i", "a", "-o", "b", "-d", "4"],
            "samunet_ensemble": ["-i", "a", "b", "-o", "c"], "samunet_evaluate": ["-ref", "a", "-pred", "b"]}
    with pytest.raises(SystemExit) as e:
        main(base.get(command, ["-d", "4"]) + [flag, "x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and len(err) == 1, err
    assert err[0].startswith(f"{command}: error: {flag} ") and "samunet equivalent:" in err[0]


def test_every_table_names_existing_samunet_flags():
    for family, table in _every_table():
        actions = _parser(FAMILY_COMMAND[family])._option_string_actions if FAMILY_COMMAND[family] != \
            "samunet_convert_msd" else None
        if actions is None:
            continue
        for nnunet_flag, samunet_flag in table.same.items():
            assert actions[nnunet_flag] is actions[samunet_flag], (family, nnunet_flag)
        for samunet_flag in table.values:
            assert samunet_flag in actions


def test_nnunet_configuration_as_adapter_gets_its_equivalent(capsys):
    from samunet.training.cli import main

    with pytest.raises(SystemExit) as e:
        main(["4", "3d_fullres", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and len(err) == 1 and "samunet equivalent" in err[0] and "3d_fullres" in err[0]


def test_user_error_is_one_line_on_stderr_and_in_the_log_file(tmp_path, capsys):
    class Broken(SamunetUserError, KeyError):
        pass

    @user_command("samunet_x")
    def main(argv=None):
        setup_logging(tmp_path, "x")
        raise Broken(f"{tmp_path / 'plans.json'}: field 'epochs' must be an int")

    with pytest.raises(SystemExit) as e:
        main([])
    err = capsys.readouterr().err
    assert e.value.code == 1
    assert err == f"samunet_x: error: {tmp_path / 'plans.json'}: field 'epochs' must be an int\n"  # no KeyError quotes
    (log_file,) = tmp_path.glob("x_*.txt")
    assert "ERROR samunet_x: error:" in log_file.read_text()


def test_permission_error_is_one_line_and_a_bug_keeps_its_traceback(tmp_path, capsys):
    @user_command("samunet_x")
    def denied(argv=None):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out"))

    @user_command("samunet_x")
    def bug(argv=None):
        raise KeyError("internal")

    with pytest.raises(SystemExit):
        denied([])
    assert capsys.readouterr().err == f"samunet_x: error: {tmp_path / 'out'}: Permission denied\n"
    with pytest.raises(KeyError):
        bug([])


def test_information_goes_to_stdout_and_warnings_to_stderr(capsys):
    setup_logging()
    log = logging.getLogger("samunet")
    log.info("an information")
    log.warning("a warning")
    captured = capsys.readouterr()
    assert captured.out == "an information\n" and captured.err == "a warning\n"


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    target = tmp_path / "shared" / "summary.json"
    code = (f"import os\nos.umask({umask})\nfrom samunet.utils.atomic import write_json, write_npy\n"
            f"import numpy as np\nwrite_json({{'a': 1}}, {str(target)!r})\n"
            f"write_npy(np.zeros(2), {str(target)!r} + '.npy')")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    for path in (target, Path(f"{target}.npy")):
        assert stat.S_IMODE(path.stat().st_mode) == mode, oct(path.stat().st_mode)


def test_progress_prints_lines_per_case_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    import samunet.utils.progress as progress_module

    setup_logging()
    clock = iter([0.0, 12.0, 15.0, 30.0, 31.0])  # start, then after each case: 12, 15, 30 and 31 s
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    cases = ["a", "b", "c", "d"]
    assert list(progress_module.progress(cases, desc="predicting", unit="case")) == cases
    monkeypatch.undo()
    # a line once 10 s have passed since the last one, and the last case's line however soon it comes
    assert [ln.split(" (")[0] for ln in capsys.readouterr().out.splitlines()] == [
        "predicting: 1/4 case(s) done", "predicting: 3/4 case(s) done", "predicting: 4/4 case(s) done"]
    assert list(progress_module.progress(["a", "b", "c"], desc="scoring", unit="case")) == ["a", "b", "c"]
    assert list(progress_module.progress((c for c in "ab"), desc="reading", unit="case")) == ["a", "b"]
    bar = progress_module.progress(range(50), desc="epoch 0", unit="it", lines=False)
    for _ in bar:
        bar.set_postfix(loss="0.1")
    bar.close()
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    # fast cases: only the last, also for an iterable of unknown length
    assert [ln.split(" (")[0] for ln in lines] == ["scoring: 3/3 case(s) done", "reading: 2 case(s) done"]
    assert captured.err == ""  # no bar redraws in a log file


def test_progress_draws_a_bar_on_a_terminal(monkeypatch):
    import samunet.utils.progress as progress_module

    monkeypatch.setattr(progress_module, "interactive", lambda: True)
    bar = progress_module.progress(range(3), desc="predicting", unit="case")
    assert type(bar).__name__ == "tqdm"
    assert list(bar) == [0, 1, 2]


def test_the_nnunet_page_shows_every_flag_of_the_tables():
    page = (REPO / "documentation" / "for_nnunet_users.md").read_text()
    assert "documentation/for_nnunet_users.md" in (REPO / "README.md").read_text()
    for family, table in _every_table():
        for flag in [*table.same, *table.ignored, *table.different]:
            assert f"`{flag}" in page or f"{flag}`" in page or f" {flag}," in page, (family, flag)


def test_a_command_under_nohup_prints_lines_not_bars(tmp_path):
    """stderr to a file (nohup, SLURM): one plain line per case on stdout, no bar redraws anywhere."""
    import numpy as np

    from samunet.dataset.image_io import Geometry, write_segmentation

    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3).ravel(), (3, 8, 8))
    for folder in ("ref", "pred"):
        for case in ("a", "b"):
            seg = np.zeros((3, 8, 8), dtype=np.uint8)
            seg[1, 2:5, 2:5] = 1
            write_segmentation(seg, geometry, tmp_path / folder / f"{case}.nii.gz")
    result = run_module("samunet.evaluation.cli", "-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"))
    assert result.returncode == 0, result.stderr
    assert "evaluating: 2/2 case(s) done" in result.stdout
    assert "\r" not in result.stdout + result.stderr and result.stderr == ""
    assert list((tmp_path / "pred").glob("evaluate_*.txt"))  # the command's log file
