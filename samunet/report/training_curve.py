"""A fold's training curve from the history its resume state keeps (loss and 3D validation Dice per epoch);
the fold's own progress.png when that state is absent or unreadable."""
from __future__ import annotations

import shutil
from pathlib import Path

from samunet.core.names import PROGRESS_PLOT_FILE, TRAINING_STATE_FILE
from samunet.utils.logs import get_logger

log = get_logger()


def load_history(fold_folder: Path) -> dict | None:
    """The ``history`` of ``checkpoint_latest_state.pt`` (memory-mapped: the optimizer state is not read)."""
    import torch

    path = fold_folder / TRAINING_STATE_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        history = state.get("history")
    except Exception as e:  # a damaged state costs the curve, not the report
        log.warning("%s: training history unreadable (%s); the report shows %s instead", path, e, PROGRESS_PLOT_FILE)
        return None
    return history if isinstance(history, dict) and history.get("epochs") else None


def draw_training_curve(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax_loss = plt.subplots(figsize=(7.5, 3.4), dpi=100)
    ax_loss.plot(history["epochs"], history["train_loss"], color="tab:blue", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_dice = ax_loss.twinx()
    epochs = history.get("validation_epochs", [])
    for name, values in history.get("validation_dice", {}).items():
        ax_dice.plot(epochs, values, marker="o", linestyle="--", label=f"val Dice {name}")
    if history.get("validation_mean_dice"):
        ax_dice.plot(epochs, history["validation_mean_dice"], marker="s", color="black", label="val mean Dice")
    ax_dice.set_ylim(0, 1)
    ax_dice.set_ylabel("Dice (3D)")
    lines, labels = ax_loss.get_legend_handles_labels()
    more_lines, more_labels = ax_dice.get_legend_handles_labels()
    ax_loss.legend(lines + more_lines, labels + more_labels, loc="center right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_training_curve(fold_folder: Path, path: Path) -> str | None:
    """Write the curve to ``path``; returns how it was made, None when the fold has neither history nor plot."""
    history = load_history(fold_folder)
    if history is not None:
        draw_training_curve(history, path)
        return "drawn from the training history"
    plot = fold_folder / PROGRESS_PLOT_FILE
    if plot.is_file():
        shutil.copyfile(plot, path)
        return f"the fold's {PROGRESS_PLOT_FILE}"
    return None
