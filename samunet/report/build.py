"""Build a report: resolve the input, measure and draw every case into a hidden staging folder, then move the
PNGs into ``report_files/`` and write ``report.html`` last, so a failed report leaves no page behind."""
from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samunet.core.names import DEFAULT_NSD_TOLERANCE_MM, LEADERBOARD_PLOT_FILE, MODEL_FOLDER_SEPARATOR
from samunet.report import html_page as hp
from samunet.report.case_measures import (
    CaseMeasures, check_values, key_of, measure_case, read_volumes, structure_name, structures_of,
)
from samunet.report.overlay import StructureSlice, draw_overlay, take_slice
from samunet.report.sources import CaseFiles, CaseSet, ReportSource, resolve_source
from samunet.utils.atomic import atomic_path
from samunet.utils.logs import get_logger

log = get_logger()
# the page and the folder of its pictures, in the output folder
REPORT_FILE = "report.html"
REPORT_FILES_FOLDER = "report_files"
TRAINING_CURVE_FILE = "training_curve.png"
AXIS_NAMES = "zyx"


@dataclass
class DrawnCase:
    measures: CaseMeasures
    overlay: str  # file name in report_files/


def write_report(folder: str | Path, output: str | Path | None = None, references: str | Path | None = None,
                 images: str | Path | None = None, dataset_json: str | Path | None = None,
                 tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM, progress: bool = True) -> Path:
    """Write ``report.html`` (and ``report_files/``) for ``folder`` into ``output`` (default: ``folder``);
    returns the page's path. Bad input raises a ``ReportError`` (or the evaluation's error) before any page."""
    source = resolve_source(Path(folder), Path(references) if references else None,
                            Path(images) if images else None, Path(dataset_json) if dataset_json else None)
    return write_source_report(source, output, tolerance_mm, progress)


def write_source_report(source: ReportSource, output: str | Path | None = None,
                        tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM, progress: bool = True) -> Path:
    """``write_report`` for an input ``resolve_source`` has already recognised."""
    output = Path(output) if output is not None else source.folder
    output.mkdir(parents=True, exist_ok=True)
    staging = _hidden_folder(output, "staging")
    try:
        sections = _sections(source, staging, output, tolerance_mm, progress)
        page = hp.page(source.title, sections)
        return _publish(staging, output, page)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _hidden_folder(output: Path, what: str, create: bool = True) -> Path:
    """A unique hidden name beside ``report_files/``; made with mkdir, so it gets the umask's permissions (a
    shared results folder stays readable, which mkdtemp's 0700 would not)."""
    path = output / f".{REPORT_FILES_FOLDER}.{what}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if create:
        path.mkdir()
    return path


def _publish(staging: Path, output: Path, page: str) -> Path:
    files = output / REPORT_FILES_FOLDER
    previous = None
    if files.exists():
        previous = _hidden_folder(output, "previous", create=False)
        files.rename(previous)
    staging.rename(files)
    with atomic_path(output / REPORT_FILE) as tmp:
        tmp.write_text(page)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    log.info("report: %s", output / REPORT_FILE)
    return output / REPORT_FILE


def _sections(source: ReportSource, staging: Path, output: Path, tolerance_mm: float, progress: bool) -> list[str]:
    if source.kind == "compare":
        return _compare_sections(source, staging, output)
    sections = []
    if source.kind == "fold":
        sections += _fold_sections(source, staging)
    sections += _case_sections(source.cases, staging, tolerance_mm, progress)
    return sections


# ---- cases -------------------------------------------------------------------------------------------------
def _case_sections(case_set: CaseSet, staging: Path, tolerance_mm: float, progress: bool) -> list[str]:
    from samunet.utils.progress import progress as progress_lines

    first_metrics = case_set.cases[0].metrics
    structures = structures_of(case_set, list(first_metrics) if first_metrics else None)
    names = [structure_name(case_set, s) for s in structures]
    drawn, used = [], set()
    for case in progress_lines(case_set.cases, desc="report", unit="case", disable=not progress):
        volumes = read_volumes(case)
        check_values(case, volumes, case_set)
        measures = measure_case(case, volumes, case_set, structures, tolerance_mm)
        overlay = _overlay_name(case.case_id, used)
        _draw_case(case, volumes, measures, structures, names, staging / overlay)
        drawn.append(DrawnCase(measures, overlay))
    drawn.sort(key=_worst_first)
    keys = [key_of(s) for s in structures]
    source_note = (f"Metrics from {case_set.summary_file}." if case_set.summary_file is not None else
                   "Metrics computed here with samunet_evaluate's functions (tolerance of the surface Dice "
                   f"{tolerance_mm:g} mm).")
    return [_summary_section(drawn, keys, names, source_note), _case_table(drawn, keys, names), _gallery(drawn)]


def _worst_first(case: DrawnCase) -> tuple:
    dice = case.measures.mean("Dice")
    hd95 = case.measures.mean("HD95")
    return (np.isnan(dice), dice if not np.isnan(dice) else 0.0, -hd95 if not np.isnan(hd95) else 0.0,
            case.measures.case_id)


def _overlay_name(case_id: str, used: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", case_id) or "case"
    name, n = f"{stem}.png", 1
    while name in used or name in (TRAINING_CURVE_FILE, LEADERBOARD_PLOT_FILE):
        n += 1
        name = f"{stem}_{n}.png"
    used.add(name)
    return name


def _read_image(case: CaseFiles, shape: tuple[int, ...]) -> np.ndarray | None:
    """(C, z, y, x) of the case's first image file, when it is on the label maps' grid."""
    if case.image is None:
        return None
    from samunet.dataset.image_io import read_image_channels

    image, _ = read_image_channels(case.image)
    if tuple(image.shape[1:]) != tuple(shape):
        log.warning("%s: shape %s differs from its label maps' %s; contours drawn on black", case.image,
                    tuple(image.shape[1:]), tuple(shape))
        return None
    return image


def _draw_case(case: CaseFiles, volumes, measures: CaseMeasures, structures, names: list[str], path: Path) -> None:
    from samunet.core.labels import region_mask

    axis, index = measures.axis, measures.slice_index
    slices = [StructureSlice(name, take_slice(region_mask(volumes.reference, s), axis, index),
                             take_slice(region_mask(volumes.prediction, s), axis, index))
              for s, name in zip(structures, names)]
    image = _read_image(case, volumes.reference.shape)
    image_slice = take_slice(image, axis, index) if image is not None else None
    rows, columns = [volumes.spacing[a] for a in range(3) if a != axis]
    dice = measures.mean("Dice")
    where = f"slice {index} along {AXIS_NAMES[axis]}, " if volumes.reference.shape[axis] > 1 else ""
    title = f"{case.case_id}: {where}{measures.slice_errors} wrong voxel(s)"
    draw_overlay(image_slice, slices, rows / columns, title + (f"; mean Dice {dice:.3f}" if not np.isnan(dice) else ""),
                 path)


def _summary_section(drawn: list[DrawnCase], keys: list[str], names: list[str], note: str) -> str:
    rows = []
    for key, name in zip(keys, names):
        cells = [hp.cell(name, css="text")]
        for metric, digits in (("Dice", 4), ("HD95", 2), ("NSD", 4)):
            values = [float(d.measures.metrics[key][metric]) for d in drawn
                      if key in d.measures.metrics and d.measures.metrics[key].get(metric) is not None]
            finite = [v for v in values if not np.isnan(v)]
            text, sort = hp.number(np.mean(finite) if finite else float("nan"), digits)
            cells.append(hp.cell(text, sort, hp.dice_class(sort) if metric == "Dice" else ""))
        rows.append(cells)
    return (f"<h2>Summary: {len(drawn)} case(s)</h2>\n"
            + hp.table(["structure", "mean Dice", "mean HD95 (mm)", "mean NSD"], rows, sortable=False)
            + f'\n<p class="note">{hp.esc(note)} Means leave out cases where a structure is absent from both '
              f"reference and prediction (Dice undefined).</p>")


def _case_table(drawn: list[DrawnCase], keys: list[str], names: list[str]) -> str:
    header = ["case", "mean Dice", *(f"Dice {n}" for n in names), *(f"HD95 {n} (mm)" for n in names),
              "worst slice", "wrong voxels", "overlay"]
    rows = []
    for d in drawn:
        m = d.measures
        anchor = f"case-{d.overlay[:-len('.png')]}"
        cells = [hp.cell(f'<a href="#{hp.esc(anchor)}">{hp.esc(m.case_id)}</a>', m.case_id, "text", raw=True)]
        text, sort = hp.number(m.mean("Dice"), 4)
        cells.append(hp.cell(text, sort, hp.dice_class(sort)))
        for key in keys:
            text, sort = hp.number(m.metrics.get(key, {}).get("Dice"), 4)
            cells.append(hp.cell(text, sort, hp.dice_class(sort)))
        for key in keys:
            cells.append(hp.cell(*hp.number(m.metrics.get(key, {}).get("HD95"), 2)))
        cells.append(hp.cell(f"{AXIS_NAMES[m.axis]} {m.slice_index}", str(m.slice_index)))
        cells.append(hp.cell(str(m.slice_errors), str(m.slice_errors)))
        image = f'<img class="thumb" src="{REPORT_FILES_FOLDER}/{hp.esc(d.overlay)}" alt="{hp.esc(m.case_id)}">'
        cells.append(hp.cell(f'<a href="#{hp.esc(anchor)}">{image}</a>', "", raw=True))
        rows.append(cells)
    return ("<h2>Cases, worst first</h2>\n"
            '<p class="note">Sorted by the case\'s mean Dice over its structures, lowest first. Worst slice: the '
            "slice with the most false positives + false negatives along the slicing axis.</p>\n"
            + hp.table(header, rows))


def _gallery(drawn: list[DrawnCase]) -> str:
    figures = []
    for d in drawn:
        anchor = f"case-{d.overlay[:-len('.png')]}"
        src = f"{REPORT_FILES_FOLDER}/{hp.esc(d.overlay)}"
        figures.append(f'<figure id="{hp.esc(anchor)}"><a href="{src}"><img src="{src}" '
                       f'alt="{hp.esc(d.measures.case_id)} overlay"></a>'
                       f"<figcaption>{hp.esc(d.measures.case_id)}</figcaption></figure>")
    return ("<h2>Largest-error slices</h2>\n"
            '<p class="note">Left: the image with reference contours (solid) and prediction contours (dashed), one '
            "colour per structure. Right: false positives (red), false negatives (blue), voxels given to the wrong "
            "structure (magenta).</p>\n"
            f'<div class="gallery">{"".join(figures)}</div>')


# ---- a fold: training curve and plans --------------------------------------------------------------------------
def _fold_sections(source: ReportSource, staging: Path) -> list[str]:
    from samunet.report.plan_decisions import plan_decisions
    from samunet.report.training_curve import write_training_curve

    sections = []
    how = write_training_curve(source.fold_folder, staging / TRAINING_CURVE_FILE)
    if how is not None:
        sections.append(f"<h2>Training curve</h2>\n<p><img src=\"{REPORT_FILES_FOLDER}/{TRAINING_CURVE_FILE}\" "
                        f'alt="training curve"></p><p class="note">Train loss and 3D validation Dice per epoch '
                        f"({hp.esc(how)}).</p>")
    if source.plans is not None:
        adapter = source.model_folder.name.split(MODEL_FOLDER_SEPARATOR)[0] if source.model_folder else None
        rows = [[hp.cell(d.name, css="text"), hp.cell(d.value, css="text"), hp.cell(d.reason or "-", css="text")]
                for d in plan_decisions(source.plans, adapter)]
        sections.append("<h2>Plan decisions</h2>\n"
                        + hp.table(["decision", "value", "reason"], rows, sortable=False, text_columns=3)
                        + f'\n<p class="note">From {hp.esc(source.model_folder / "plans.json")}.</p>')
    return sections


# ---- a comparison ------------------------------------------------------------------------------------------------
def _compare_sections(source: ReportSource, staging: Path, output: Path) -> list[str]:
    from samunet.report.leaderboard_section import column_title, display_value, fold_report, read_leaderboard

    board = read_leaderboard(source.folder)
    rows = []
    for row in board.rows:
        report = fold_report(source.folder, row[0], row[1], REPORT_FILE)
        adapter = (f'<a href="{hp.esc(os.path.relpath(report, output))}">{hp.esc(row[0])}</a>'
                   if report is not None else hp.esc(row[0]))
        cells = [hp.cell(adapter, row[0], css="text", raw=True), hp.cell(row[1], css="text")]
        for column, text in zip(board.header[2:], row[2:]):
            shown = display_value(column, text)
            sort = "" if shown == "n/a" else text
            cells.append(hp.cell(shown, sort, hp.dice_class(text) if column.startswith("dice") else ""))
        rows.append(cells)
    sections = ["<h2>Leaderboard</h2>\n" + hp.table([column_title(c) for c in board.header], rows, text_columns=2)
                + '\n<p class="note">One row per adapter x fold, then each adapter\'s mean and std over folds; an '
                "adapter's name links to that fold's own report when samunet_train wrote one.</p>"]
    plot = source.folder / LEADERBOARD_PLOT_FILE
    if plot.is_file():
        shutil.copyfile(plot, staging / LEADERBOARD_PLOT_FILE)
        sections.append(f'<h2>Dice per class</h2>\n<p><img src="{REPORT_FILES_FOLDER}/{LEADERBOARD_PLOT_FILE}" '
                        'alt="leaderboard plot"></p>')
    if board.conclusion:
        sections.append("<h2>Conclusion</h2>\n" + "\n".join(f"<p>{hp.markdown_inline(line)}</p>"
                                                             for line in board.conclusion))
    return sections


def write_report_or_warn(folder: Path) -> Path | None:
    """What samunet_train and samunet_compare call when they finish: the folder's report, or a warning when it
    fails (the training or comparison itself succeeded). A fold without validation (fold_all) gets none."""
    from samunet.core.layout import FOLD_RE
    from samunet.core.names import SUMMARY_FILE, VALIDATION_FOLDER

    folder = Path(folder)
    if FOLD_RE.match(folder.name) and not (folder / VALIDATION_FOLDER / SUMMARY_FILE).is_file():
        return None
    try:
        return write_report(folder)
    except Exception as e:  # a report is a by-product: it never fails the run it follows
        log.warning("%s: no %s written (%s: %s); run samunet_report %s to retry", folder, REPORT_FILE,
                    type(e).__name__, e, folder)
        return None
