"""The leaderboard: one row per adapter x fold, the mean ± std over folds per adapter, as CSV and Markdown.

Every figure comes from what the fold's run wrote:
- Dice and HD95 per class and their mean: ``validation/summary.json`` (nnU-Net's keys: ``mean[label]``,
  ``foreground_mean``), i.e. the final validation in the original geometry;
- trainable parameters, training minutes (sum of the epochs' seconds: optimisation only, without the 3D
  validations) and seconds per predicted volume (wall time of the final validation / its cases: prediction
  with the validation's mirroring, restoring to the original geometry, writing and scoring): the ``results``
  section of ``debug.json`` (``samunet.training.run_records.record_results``). A fold trained before samunet
  recorded them shows ``nan``.
The standard deviation is the sample one (n - 1) over folds; with one fold there is none (``nan``, blank in
Markdown).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from samunet.core.labels import LabelScheme
from samunet.core.names import DEBUG_FILE
from samunet.core.errors import SamunetUserError
from samunet.report.leaderboard_section import format_value as _format
from samunet.utils.atomic import atomic_path, read_json

AGGREGATE_ROWS = ("mean", "std")  # the fold column of the CSV's aggregated rows


class LeaderboardError(SamunetUserError, ValueError):
    pass


@dataclass
class FoldResult:
    adapter: str
    fold: int
    dice: dict[str, float]  # class (label or region name) -> Dice, mean over the validation cases
    hd95: dict[str, float]  # class -> HD95 in mm
    dice_mean: float  # nnU-Net's foreground_mean
    hd95_mean: float
    trainable_parameters: float  # nan when not recorded
    training_minutes: float
    seconds_per_volume: float
    num_cases: int

    def values(self, classes: list[str]) -> dict[str, float]:
        """Column -> number (the numeric columns of ``columns(classes)``)."""
        row = {f"dice_{c}": self.dice.get(c, math.nan) for c in classes}
        row["dice_mean"] = self.dice_mean
        row.update({f"hd95_{c}": self.hd95.get(c, math.nan) for c in classes})
        row["hd95_mean"] = self.hd95_mean
        row.update(trainable_parameters=self.trainable_parameters, training_minutes=self.training_minutes,
                   seconds_per_volume=self.seconds_per_volume)
        return row


def columns(classes: list[str]) -> list[str]:
    return ([f"dice_{c}" for c in classes] + ["dice_mean"] + [f"hd95_{c}" for c in classes] + ["hd95_mean"] +
            ["trainable_parameters", "training_minutes", "seconds_per_volume"])


def _number(value) -> float:
    return math.nan if value is None else float(value)


def read_fold_result(adapter: str, fold: int, fold_folder: Path, scheme: LabelScheme, summary_file: Path) -> FoldResult:
    try:
        summary = read_json(summary_file)
        per_class = {scheme.name_of(key): m for key, m in summary["mean"].items()}
        foreground = summary["foreground_mean"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise LeaderboardError(f"{summary_file}: not a readable validation summary ({e}); "
                               f"re-validate with samunet_train ... {fold} --val-only") from None
    debug_file = fold_folder / DEBUG_FILE
    results = read_json(debug_file).get("results", {}) if debug_file.is_file() else {}
    validation = results.get("final_validation", {})
    cases = int(validation.get("cases") or len(summary.get("metric_per_case", [])))
    seconds = _number(validation.get("seconds"))
    training = _number(results.get("training_seconds"))
    return FoldResult(
        adapter, fold,
        dice={c: _number(m.get("Dice")) for c, m in per_class.items()},
        hd95={c: _number(m.get("HD95")) for c, m in per_class.items()},
        dice_mean=_number(foreground.get("Dice")), hd95_mean=_number(foreground.get("HD95")),
        trainable_parameters=_number(results.get("trainable_parameters")),
        training_minutes=training / 60.0, seconds_per_volume=seconds / cases if cases else math.nan,
        num_cases=cases)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) over the finite values; std is nan below two values."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))


def aggregate(results: list[FoldResult], classes: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """adapter -> column -> (mean, std) over its folds, adapters in first-seen order."""
    by_adapter: dict[str, list[FoldResult]] = {}
    for r in results:
        by_adapter.setdefault(r.adapter, []).append(r)
    return {adapter: {col: mean_std([r.values(classes)[col] for r in rows]) for col in columns(classes)}
            for adapter, rows in by_adapter.items()}


def best_adapter(aggregated: dict[str, dict[str, tuple[float, float]]]) -> str | None:
    """The adapter with the highest mean foreground Dice over folds (None when no adapter has one)."""
    scored = {a: cols["dice_mean"][0] for a, cols in aggregated.items() if not math.isnan(cols["dice_mean"][0])}
    return max(scored, key=scored.get) if scored else None


# ---- files -------------------------------------------------------------------------------------------
def csv_text(results: list[FoldResult], classes: list[str], aggregated) -> str:
    """Plain numbers: a row per adapter x fold, then per adapter a ``mean`` and a ``std`` row (fold column)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["adapter", "fold", *columns(classes), "validation_cases"])
    for r in results:
        values = r.values(classes)
        writer.writerow([r.adapter, r.fold, *(_plain(values[c]) for c in columns(classes)), r.num_cases])
    for adapter, cols in aggregated.items():
        for i, name in enumerate(AGGREGATE_ROWS):
            writer.writerow([adapter, name, *(_plain(cols[c][i]) for c in columns(classes)), ""])
    return out.getvalue()


def _plain(value: float) -> str:
    """Full precision (Python's shortest round trip), ``nan`` for a missing figure, integers without ``.0``."""
    if math.isnan(value):
        return "nan"
    return str(int(value)) if value.is_integer() and abs(value) < 2 ** 53 else repr(float(value))


def _headers(classes: list[str]) -> list[str]:
    return ([f"Dice {c}" for c in classes] + ["Dice mean"] + [f"HD95 {c} (mm)" for c in classes] +
            ["HD95 mean (mm)", "trainable parameters", "training min", "s / volume"])


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown_text(dataset: str, plans_name: str, results: list[FoldResult], classes: list[str], aggregated,
                  conclusion: list[str]) -> str:
    cols = columns(classes)
    folds = sorted({r.fold for r in results})
    lines = [f"# {dataset}: adapters compared ({plans_name}, folds {', '.join(map(str, folds))})", "",
             "## Mean ± std over folds", ""]
    agg_rows = []
    for adapter, values in aggregated.items():
        n = sum(1 for r in results if r.adapter == adapter)
        cells = []
        for c in cols:
            mean, std = values[c]
            # a parameter count is the same in every fold: no spread to show
            spread = not math.isnan(std) and c != "trainable_parameters"
            cells.append(_format(c, mean) + (f" ± {_format(c, std)}" if spread else ""))
        agg_rows.append([adapter, str(n), *cells])
    lines += _table(["adapter", "folds", *_headers(classes)], agg_rows)
    lines += ["", "## Per fold", ""]
    lines += _table(["adapter", "fold", *_headers(classes)],
                    [[r.adapter, str(r.fold), *(_format(c, r.values(classes)[c]) for c in cols)] for r in results])
    lines += ["", "Dice and HD95: final validation in the original geometry (validation/summary.json); std: sample "
              "standard deviation over folds. Training minutes: optimisation time (validations excluded). "
              "s / volume: final validation wall time per case (prediction with its mirroring, restoring, "
              "writing, scoring).", ""]
    return "\n".join(lines + conclusion) + "\n"


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
