"""``leaderboard.png``: Dice per class (and the mean) per adapter, bars at the mean over folds, each fold a dot."""
from __future__ import annotations

from pathlib import Path

from samunet.compare.leaderboard import FoldResult
from samunet.utils.atomic import atomic_path


def plot_leaderboard(results: list[FoldResult], classes: list[str], aggregated, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = classes + ["mean"]
    adapters = list(aggregated)
    width = 0.8 / max(1, len(adapters))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups) * max(1, len(adapters)) / 2), 4.5))
    x = np.arange(len(groups))
    for i, adapter in enumerate(adapters):
        offset = x - 0.4 + width * (i + 0.5)
        means = [aggregated[adapter][f"dice_{g}"][0] for g in groups]
        stds = [aggregated[adapter][f"dice_{g}"][1] for g in groups]
        stds = [0.0 if np.isnan(s) else s for s in stds]
        ax.bar(offset, means, width, yerr=stds, capsize=3, label=adapter, alpha=0.8)
        for j, g in enumerate(groups):  # the spread over folds: every fold's value
            values = [r.values(classes)[f"dice_{g}"] for r in results if r.adapter == adapter]
            ax.scatter([offset[j]] * len(values), values, color="black", s=8, zorder=3)
    ax.set_xticks(x, [g if g != "mean" else "mean (foreground)" for g in groups])
    ax.set_ylabel("Dice (3D, original geometry)")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=min(len(adapters), 6))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
