"""A compare folder's leaderboard: the CSV's rows and the Markdown's conclusion lines (samunet_compare's files)."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from samunet.core.names import LEADERBOARD_CSV_FILE, LEADERBOARD_MARKDOWN_FILE
from samunet.report.sources import ReportError


@dataclass
class Leaderboard:
    header: list[str]
    rows: list[list[str]]  # as written in the CSV (full precision, "nan")
    conclusion: list[str]  # Markdown lines after the tables (the best adapter, what find_best would pick)


def read_leaderboard(folder: Path) -> Leaderboard:
    path = folder / LEADERBOARD_CSV_FILE
    try:
        with open(path, newline="") as f:
            table = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ReportError(f"{path}: unreadable leaderboard ({e})") from None
    if not table or not table[0] or table[0][:2] != ["adapter", "fold"]:
        raise ReportError(f"{path}: not a samunet_compare leaderboard (its header starts with adapter, fold)")
    width = len(table[0])
    bad = next((i for i, row in enumerate(table[1:], start=2) if len(row) != width), None)
    if bad is not None:
        raise ReportError(f"{path}: line {bad} has {len(table[bad - 1])} columns, the header {width}")
    return Leaderboard(table[0], table[1:], _conclusion(folder / LEADERBOARD_MARKDOWN_FILE))


def _conclusion(path: Path) -> list[str]:
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    last_table = max((i for i, line in enumerate(lines) if line.startswith("|")), default=-1)
    return [line for line in lines[last_table + 1:] if line.strip() and not line.startswith("#")]


FORMATTED_COLUMNS = ("trainable_parameters", "seconds_per_volume", "training_minutes")


def format_value(column: str, value: float) -> str:
    """A leaderboard number as its Markdown and this page show it (4 decimals for Dice, 2 for mm and seconds)."""
    if math.isnan(value):
        return "n/a"
    if column == "trainable_parameters":
        return f"{value:,.0f}"
    if column.startswith("dice"):
        return f"{value:.4f}"
    return f"{value:.2f}" if column.startswith("hd95") or column == "seconds_per_volume" else f"{value:.1f}"


def display_value(column: str, text: str) -> str:
    """The CSV's full-precision number as the Markdown shows it; other columns (fold, cases) as written."""
    try:
        value = float(text)
    except ValueError:
        return text
    if math.isnan(value) or column in FORMATTED_COLUMNS or column.startswith(("dice", "hd95")):
        return format_value(column, value)
    return text


def column_title(column: str) -> str:
    """``dice_anterior`` -> ``Dice anterior``, ``hd95_mean`` -> ``HD95 mean (mm)``: the Markdown's headers."""
    fixed = {"trainable_parameters": "trainable parameters", "training_minutes": "training min",
             "seconds_per_volume": "s / volume", "validation_cases": "validation cases"}
    if column in fixed:
        return fixed[column]
    if column.startswith("dice_"):
        return f"Dice {column[len('dice_'):]}"
    if column.startswith("hd95_"):
        return f"HD95 {column[len('hd95_'):]} (mm)"
    return column


def fold_report(compare_folder: Path, adapter: str, fold: str, report_file: str) -> Path | None:
    """The report samunet_train wrote for this adapter x fold (``../<adapter>__<plans>/fold_N/``), when exactly one
    model folder of the dataset has it."""
    if not fold.isdigit():
        return None
    found = sorted(compare_folder.parent.glob(f"{adapter}__*/fold_{fold}/{report_file}"))
    return found[0] if len(found) == 1 else None
