"""Training history (saved with every checkpoint so a resumed run continues its curves) and ``progress.png``."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from samunet.utils.atomic import atomic_path


@dataclass
class TrainingHistory:
    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    validation_epochs: list[int] = field(default_factory=list)
    validation_dice: dict[str, list[float]] = field(default_factory=dict)  # class name -> Dice per validation
    validation_mean_dice: list[float] = field(default_factory=list)

    def add_epoch(self, epoch: int, loss: float, lr: float, seconds: float) -> None:
        self.epochs.append(epoch)
        self.train_loss.append(loss)
        self.learning_rate.append(lr)
        self.epoch_seconds.append(seconds)

    def add_validation(self, epoch: int, per_class: dict[str, float], mean: float) -> None:
        self.validation_epochs.append(epoch)
        for name, value in per_class.items():
            self.validation_dice.setdefault(name, []).append(value)
        self.validation_mean_dice.append(mean)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingHistory":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def plot_progress(history: TrainingHistory, path: Path) -> None:
    """Loss, 3D validation Dice per class, learning rate and epoch time against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr, ax_time) = plt.subplots(3, 1, figsize=(10, 11), sharex=True)
    ax_loss.plot(history.epochs, history.train_loss, color="tab:blue", label="train loss")
    ax_loss.set_ylabel("loss")
    ax_dice = ax_loss.twinx()
    for name, values in history.validation_dice.items():
        ax_dice.plot(history.validation_epochs, values, marker="o", linestyle="--", label=f"val Dice {name}")
    if history.validation_mean_dice:
        ax_dice.plot(history.validation_epochs, history.validation_mean_dice, marker="s", color="black",
                     label="val mean foreground Dice (3D)")
    ax_dice.set_ylabel("Dice (3D, original geometry)")
    ax_dice.set_ylim(0, 1)
    lines = ax_loss.get_legend_handles_labels()
    dice_lines = ax_dice.get_legend_handles_labels()
    ax_loss.legend(lines[0] + dice_lines[0], lines[1] + dice_lines[1], loc="center right", fontsize=8)
    ax_lr.plot(history.epochs, history.learning_rate, color="tab:green")
    ax_lr.set_ylabel("learning rate")
    ax_time.plot(history.epochs, history.epoch_seconds, color="tab:red")
    ax_time.set_ylabel("epoch time (s)")
    ax_time.set_xlabel("epoch")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
