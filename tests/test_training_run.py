"""samunet_train end to end on the real preprocessed Hippocampus cases (tiny backbone, a few iterations):
outputs, validation in original geometry, --val-only, --continue extending a run, determinism, exact resume,
kill -9 recovery, the fold lock and damaged checkpoints."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from samunet.dataset.image_io import read_label
from samunet.training.cli import main
from samunet.training.fold_lock import LOCK_NAME
from samunet.training.splits import make_folds
from samunet.core.names import TRAINING_STATE_FILE as STATE_FILE_NAME
from tests.training_helpers import DATASET, ONE_THREAD_ENV, fold_folder, private_roots, same_weights, weights

pytestmark = pytest.mark.usefixtures("single_torch_thread")

FAST = ["--iters-per-epoch", "2", "--batch-size", "4", "--num-workers", "0", "--disable-tta"]


def _train(monkeypatch, roots, *args):
    for key, value in roots.items():
        monkeypatch.setenv(key, value)
    main([*map(str, args)])


def test_fold_training_writes_everything_and_validates_in_original_geometry(hippocampus_preprocessed, tmp_path,
                                                                            monkeypatch):
    ds = hippocampus_preprocessed
    roots = private_roots(ds, tmp_path)
    _train(monkeypatch, roots, "4", "decoder", "0", "--epochs", "2", "--validate-every", "1", *FAST)
    folder = fold_folder(roots, "decoder", "0")

    splits = json.loads((Path(roots["SAMUNET_PREPROCESSED"]) / DATASET / "splits_final.json").read_text())
    assert splits == make_folds(ds.case_ids)
    for name in ("latest", "best", "final"):
        assert (folder / f"checkpoint_{name}.safetensors").is_file() and (folder / f"checkpoint_{name}.json").is_file()
    assert (folder / "progress.png").stat().st_size > 0 and list(folder.glob("training_log_*.txt"))
    assert (folder.parent / "plans.json").is_file() and (folder.parent / "dataset.json").is_file()
    debug = json.loads((folder / "debug.json").read_text())
    assert debug["overrides"] == {"training.epochs": 2, "training.iterations_per_epoch": 2, "training.batch_size": 4,
                                  "training.num_workers": 0, "training.validate_every": 1}
    assert debug["seed"] == ds.plans.training.seed and torch.__version__.startswith(debug["versions"]["torch"])

    validation = folder / "validation"
    summary = json.loads((validation / "summary.json").read_text())
    val_cases = splits[0]["val"]
    assert len(summary["metric_per_case"]) == len(val_cases)
    assert set(summary["mean"]) == {"1", "2"} and "Dice" in summary["foreground_mean"]
    for case in val_cases:
        prediction, geometry = read_label(validation / f"{case}.nii.gz")
        reference, ref_geometry = read_label(Path(roots["SAMUNET_RAW"]) / DATASET / "labelsTr" / f"{case}.nii.gz")
        assert prediction.shape == reference.shape and not geometry.differences(ref_geometry)
        with np.load(validation / f"{case}.npz") as npz:
            probs = npz["probabilities"].astype(np.float32)
        assert probs.shape == (3, *reference.shape)
        top2 = np.sort(probs, axis=0)[-2:]
        clear = top2[1] - top2[0] > 1e-2  # the npz is float16: near-ties may round either way
        assert np.array_equal(probs.argmax(0)[clear], prediction[clear])
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-2)

    # --val-only recomputes the same summary from checkpoint_final, keeping what the training run measured
    (validation / "summary.json").unlink()
    trained = {k: debug[k] for k in ("results", "timing")}
    _train(monkeypatch, roots, "4", "decoder", "0", "--val-only", *FAST)
    assert json.loads((validation / "summary.json").read_text())["mean"] == summary["mean"]
    after = json.loads((folder / "debug.json").read_text())
    assert after["timing"] == trained["timing"]
    assert after["results"]["training_seconds"] == trained["results"]["training_seconds"]

    # --continue with more epochs extends the finished run
    _train(monkeypatch, roots, "4", "decoder", "0", "--continue", "--epochs", "3", "--validate-every", "5", *FAST)
    meta = json.loads((folder / "checkpoint_final.json").read_text())
    assert meta["epoch"] == 3 and meta["iteration"] == 6
    assert not (folder / LOCK_NAME).exists()


def test_time_limit_stops_mid_run_with_the_learning_rate_decayed(hippocampus_preprocessed, tmp_path, monkeypatch):
    """--time-limit-min: a fake clock spends a fifth of the limit per step; training stops after 5 of the
    planned 200 steps, the learning rate follows the clock down, and the final checkpoint and validation exist."""
    from samunet.training.lr_schedule import CLOCK_GRACE, TimeBudget

    calls = []

    def fake_fraction(self):
        calls.append(None)
        return min(1.0, (len(calls) - 1) * 0.2)

    monkeypatch.setattr(TimeBudget, "fraction_used", fake_fraction)
    roots = private_roots(hippocampus_preprocessed, tmp_path)
    _train(monkeypatch, roots, "4", "decoder", "0", "--epochs", "100", "--validate-every", "100",
           "--time-limit-min", "30", *FAST)
    folder = fold_folder(roots, "decoder", "0")
    meta = json.loads((folder / "checkpoint_final.json").read_text())
    assert meta["iteration"] == 5 and meta["epoch"] == 3  # epochs of 2 steps: 2 + 2 + 1
    state = torch.load(folder / STATE_FILE_NAME, weights_only=True)
    base = hippocampus_preprocessed.plans.adapters["decoder"].learning_rate
    history_lr = state["history"]["learning_rate"]
    clock = (0.8 - CLOCK_GRACE) / (1 - CLOCK_GRACE)  # the 5th step ran at 80 % of the time (after the grace share)
    assert history_lr[-1] == pytest.approx(base * (1 - clock) ** 0.9, rel=1e-6)
    assert all(a > b for a, b in zip(history_lr, history_lr[1:]))
    # the cut run was never validated at an epoch: its final validation (no mirroring, like the epoch ones)
    # is what checkpoint_best is chosen on, so best holds the final weights
    summary = json.loads((folder / "validation" / "summary.json").read_text())
    assert state["history"]["validation_epochs"] == [2]
    assert state["history"]["validation_mean_dice"] == [pytest.approx(summary["foreground_mean"]["Dice"])]
    best = json.loads((folder / "checkpoint_best.json").read_text())
    assert best["iteration"] == 5 and best["val_mean_dice"] == pytest.approx(summary["foreground_mean"]["Dice"])
    assert same_weights(weights(folder / "checkpoint_best.safetensors"),
                        weights(folder / "checkpoint_final.safetensors"))


def test_last_epoch_is_validated_for_best_when_the_schedule_skips_it(hippocampus_preprocessed, tmp_path, monkeypatch):
    """3 epochs validated every 2: epoch 1 is validated in the loop, epoch 2 (the last) only at the end, without
    mirroring like the others, before the mirrored final validation; best is the better of the two."""
    roots = private_roots(hippocampus_preprocessed, tmp_path)
    fast_with_tta = [a for a in FAST if a != "--disable-tta"]
    _train(monkeypatch, roots, "4", "decoder", "0", "--epochs", "3", "--validate-every", "2", *fast_with_tta)
    folder = fold_folder(roots, "decoder", "0")
    history = torch.load(folder / STATE_FILE_NAME, weights_only=True)["history"]
    assert history["validation_epochs"] == [1, 2]
    best = json.loads((folder / "checkpoint_best.json").read_text())
    assert best["val_mean_dice"] == pytest.approx(max(history["validation_mean_dice"]))
    best_index = int(np.argmax(history["validation_mean_dice"]))
    assert best["epoch"] == history["validation_epochs"][best_index] + 1  # epochs completed when it was written
    last_is_best = best_index == 1
    assert last_is_best == same_weights(weights(folder / "checkpoint_best.safetensors"),
                                        weights(folder / "checkpoint_final.safetensors"))
    assert (folder / "validation" / "summary.json").is_file()


def test_resume_is_exact(hippocampus_preprocessed, tmp_path, monkeypatch):
    """Fold 'all' (no validation): two epochs straight == one epoch, then --continue to two."""
    ds = hippocampus_preprocessed
    straight = private_roots(ds, tmp_path / "a")
    _train(monkeypatch, straight, "4", "samed", "all", "--epochs", "2", *FAST)
    resumed = private_roots(ds, tmp_path / "b")
    _train(monkeypatch, resumed, "4", "samed", "all", "--epochs", "1", *FAST)
    after_one = weights(fold_folder(resumed, "samed", "all") / "checkpoint_final.safetensors")
    _train(monkeypatch, resumed, "4", "samed", "all", "--epochs", "2", "--continue", *FAST)
    final_b = weights(fold_folder(resumed, "samed", "all") / "checkpoint_final.safetensors")
    assert same_weights(weights(fold_folder(straight, "samed", "all") / "checkpoint_final.safetensors"), final_b)
    assert not same_weights(after_one, final_b)  # the second epoch did train


def test_same_seed_gives_identical_weights(hippocampus_preprocessed, tmp_path, monkeypatch):
    """The planned CPU default (decoder on cached embeddings), with data-loading workers."""
    ds = hippocampus_preprocessed
    runs = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        roots = private_roots(ds, tmp_path / name)
        _train(monkeypatch, roots, "4", "decoder", "all", "--epochs", "1", "--seed", seed, *FAST[:-3],
               "--num-workers", "1")
        runs[name] = weights(fold_folder(roots, "decoder", "all") / "checkpoint_final.safetensors")
    assert same_weights(runs["a"], runs["b"])
    assert not same_weights(runs["a"], runs["c"])


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"training exited early with code {proc.returncode}"
        assert time.time() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.1)


def test_kill_9_mid_run_then_continue_finishes(hippocampus_preprocessed, tmp_path, monkeypatch):
    ds = hippocampus_preprocessed
    roots = private_roots(ds, tmp_path)
    folder = fold_folder(roots, "decoder", "all")
    args = ["4", "decoder", "all", "--epochs", "6", "--iters-per-epoch", "3", "--batch-size", "4", "--num-workers", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "samunet.training.cli", *args],
                            env={**os.environ, **roots, **ONE_THREAD_ENV},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(folder / STATE_FILE_NAME, proc, timeout=120)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (folder / LOCK_NAME).exists()  # a stale lock is left behind ...
    assert not (folder / "checkpoint_final.safetensors").exists()
    _train(monkeypatch, roots, *args, "--continue")  # ... and taken over
    meta = json.loads((folder / "checkpoint_final.json").read_text())
    assert meta["epoch"] == 6 and meta["iteration"] == 18
    assert not (folder / LOCK_NAME).exists()


def test_second_training_of_a_fold_is_refused(hippocampus_preprocessed, tmp_path, monkeypatch, capsys):
    roots = private_roots(hippocampus_preprocessed, tmp_path)
    folder = fold_folder(roots, "decoder", "0")
    folder.mkdir(parents=True)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / LOCK_NAME).write_text(json.dumps({"pid": running.pid, "host": os.uname().nodename}))
        with pytest.raises(SystemExit) as exit_info:
            _train(monkeypatch, roots, "4", "decoder", "0", *FAST)
    finally:
        running.kill()
        running.wait()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and f"already being trained by PID {running.pid}" in err
    assert not (folder / "checkpoint_latest.safetensors").exists()


def test_damaged_checkpoints_are_clear_errors(hippocampus_preprocessed, tmp_path, monkeypatch, capsys):
    ds = hippocampus_preprocessed
    roots = private_roots(ds, tmp_path)
    _train(monkeypatch, roots, "4", "cnnhead", "all", "--epochs", "1", *FAST)
    folder = fold_folder(roots, "cnnhead", "all")
    state = folder / STATE_FILE_NAME
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(SystemExit) as exit_info:
        _train(monkeypatch, roots, "4", "cnnhead", "all", "--epochs", "2", "--continue", *FAST)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert STATE_FILE_NAME in err and "corrupted" in err

    final = folder / "checkpoint_final.safetensors"
    data = bytearray(final.read_bytes())
    data[-8:] = b"\x00" * 8
    final.write_bytes(bytes(data))
    with pytest.raises(SystemExit) as exit_info:
        _train(monkeypatch, roots, "4", "cnnhead", "all", "--val-only", *FAST)
    assert exit_info.value.code == 1 and "corrupted" in capsys.readouterr().err


def test_user_errors_are_one_line(hippocampus_preprocessed, tmp_path, monkeypatch, capsys):
    roots = private_roots(hippocampus_preprocessed, tmp_path)
    for args, expected in ((["4", "nonsense", "0"], "adapter 'nonsense' is unknown"),
                           (["4", "decoder", "7"], "fold 7 does not exist"),
                           (["99", "decoder", "0"], "no dataset with id 099"),
                           (["4", "decoder", "0", "-p", "otherPlans"], "run samunet_plan")):
        with pytest.raises(SystemExit) as exit_info:
            _train(monkeypatch, roots, *args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 1 and expected in err and "Traceback" not in err
