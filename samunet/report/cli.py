"""samunet_report FOLDER [-r REFERENCES] [-i IMAGES] [-d DATASET] [-o OUTPUT]: an HTML page of a result."""
from __future__ import annotations

import argparse
from pathlib import Path

from samunet.core.command import CommandParser, user_command
from samunet.core.names import DEFAULT_NSD_TOLERANCE_MM

PROG = "samunet_report"


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog=PROG,
        description="An HTML page (report.html, its pictures in report_files/) of a fold folder (validation, "
        "training curve, plan decisions), a validation folder, a prediction folder scored against references, or "
        "a samunet_compare folder (leaderboard). Cases are listed worst first, each with the slice of most errors "
        "drawn as image + reference and prediction contours.",
        epilog="Examples:\n  samunet_report $SAMUNET_RESULTS/Dataset004_Hippocampus/decoder__samunetPlans/fold_0\n"
        "  samunet_report predictions/ -r labelsTr/ -i imagesTr/\n"
        "  samunet_report $SAMUNET_RESULTS/Dataset004_Hippocampus/compare")
    p.add_argument("folder", type=Path, help="fold, validation, prediction or compare folder")
    p.add_argument("-r", dest="references", type=Path, help="reference label maps of a prediction folder "
                   "(same file names); metrics are computed as samunet_evaluate does")
    p.add_argument("-i", dest="images", type=Path, help="images drawn under the contours (CASE_0000<ending>; "
                   "default: the raw dataset's imagesTr, or imagesTr beside -r)")
    p.add_argument("-d", dest="dataset", help="dataset id or name whose dataset.json names the labels of a "
                   "prediction folder (default: dataset.json beside -r, else the values in the files)")
    p.add_argument("-o", dest="output", type=Path, help="folder for report.html and report_files/ "
                   "(default: FOLDER)")
    p.add_argument("--tolerance-mm", type=float, default=DEFAULT_NSD_TOLERANCE_MM,
                   help=f"normalised surface Dice tolerance when metrics are computed (default "
                   f"{DEFAULT_NSD_TOLERANCE_MM})")
    return p


@user_command(PROG)
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from samunet.core.errors import InvalidValueError
    from samunet.report.build import write_source_report
    from samunet.report.sources import ReportError, resolve_source
    from samunet.utils.logs import setup_logging

    if args.tolerance_mm < 0:
        raise InvalidValueError(f"--tolerance-mm must be >= 0, got {args.tolerance_mm}")
    if args.dataset is not None and args.references is None:
        raise InvalidValueError("-d names the labels of a prediction folder: give it with -r references")
    dataset_json = _dataset_json(args.dataset) if args.dataset is not None else None
    # a missing or unknown folder fails here, before the log file would create the output folder
    source = resolve_source(args.folder, args.references, args.images, dataset_json)
    output = args.output or source.folder
    if output.exists() and not output.is_dir():
        raise ReportError(f"{output}: -o must be a folder")
    setup_logging(output, prefix="report")
    write_source_report(source, output, args.tolerance_mm)


def _dataset_json(dataset: str) -> Path:
    from samunet.core.errors import InvalidValueError
    from samunet.core.paths import preprocessed_root, raw_root, resolve_dataset_name, results_root

    name = resolve_dataset_name(dataset)
    for root in (raw_root(), preprocessed_root(), results_root()):
        if (root / name / "dataset.json").is_file():
            return root / name / "dataset.json"
    raise InvalidValueError(f"dataset {name}: no dataset.json in the raw, preprocessed or results folder")


if __name__ == "__main__":
    main()
