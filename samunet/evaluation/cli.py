"""samunet_evaluate -ref REF -pred PRED [-d 4] [-o summary.json] [--tolerance-mm T] [-np N]."""
from __future__ import annotations

import argparse
from pathlib import Path

from samunet.core import nnunet_flags
from samunet.core.command import CommandParser, add_nnunet_spellings, user_command
from samunet.core.errors import InvalidValueError
from samunet.core.names import DEFAULT_NSD_TOLERANCE_MM as DEFAULT_TOLERANCE_MM
from samunet.core.names import DATASET_JSON_FILE, SUMMARY_FILE
from samunet.core.paths import preprocessed_root, raw_root, resolve_dataset_name, results_root
from samunet.utils.atomic import read_json
from samunet.utils.logs import get_logger, setup_logging

PROG = "samunet_evaluate"


def dataset_labels(dataset: str):
    """The labels (regions, ignore label) of the dataset's dataset.json in the raw, preprocessed or results folder."""
    from samunet.core.labels import LabelScheme, label_problems  # numpy: not for --help

    name = resolve_dataset_name(dataset)
    for root in (raw_root(), preprocessed_root(), results_root()):
        path = root / name / DATASET_JSON_FILE
        if path.is_file():
            data = read_json(path)
            problems = label_problems(data.get("labels"), data.get("regions_class_order"))
            if problems:
                raise InvalidValueError(f"{path}: {'; '.join(problems)}")
            return LabelScheme.from_dataset_json(data)
    raise InvalidValueError(f"dataset {name}: no dataset.json in the raw, preprocessed or results folder")


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog=PROG,
        description="Dice, IoU, HD95 (mm), normalised surface Dice and voxel counts per case and class, "
        "written as an nnU-Net style summary.json. Files are matched by name.",
    )
    p.add_argument("-ref", required=True, type=Path, help="folder of reference label maps")
    p.add_argument("-pred", required=True, type=Path, help="folder of predicted label maps (same file names)")
    p.add_argument("-d", dest="dataset", help="dataset id or name: labels, regions and the ignore label come from "
                   "its dataset.json (default: every non-zero value found in the files)")
    p.add_argument("-o", dest="output", type=Path, help="summary file (default: PRED/summary.json)")
    p.add_argument("--tolerance-mm", type=float, default=DEFAULT_TOLERANCE_MM,
                   help=f"normalised surface Dice tolerance in mm (default {DEFAULT_TOLERANCE_MM})")
    p.add_argument("-np", dest="num_processes", type=int, default=1, help="worker processes (default 1)")
    add_nnunet_spellings(p, nnunet_flags.EVALUATE)
    return p


@user_command(PROG)
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from samunet.evaluation.evaluate_folder import EvaluationError, evaluate_folders

    output = args.output or args.pred / SUMMARY_FILE
    log = get_logger()
    if not args.pred.is_dir():
        raise EvaluationError(f"{args.pred}: prediction folder does not exist")
    if args.tolerance_mm < 0:
        raise InvalidValueError(f"--tolerance-mm must be >= 0, got {args.tolerance_mm}")
    labels = ignore_label = None
    if args.dataset is not None:  # regions are evaluated region by region, the ignore label not at all
        scheme = dataset_labels(args.dataset)
        labels, ignore_label = scheme.evaluated(), scheme.ignore_label
    setup_logging(output.parent, "evaluate")
    summary = evaluate_folders(args.ref, args.pred, labels, args.tolerance_mm, max(1, args.num_processes),
                               output, progress=True, ignore_label=ignore_label)
    for label, values in summary["mean"].items():
        log.info("label %s: Dice %.4f  IoU %.4f  HD95 %.2f mm  NSD %.4f", label, values["Dice"], values["IoU"],
                 values["HD95"], values["NSD"])
    log.info("foreground mean Dice %.4f; %d case(s); written to %s", summary["foreground_mean"]["Dice"],
             len(summary["metric_per_case"]), output)


if __name__ == "__main__":
    main()
