"""``samunet_preprocess -d N [-p NAME] [-np N] [--overwrite]``: (re)build the preprocessed cache from existing plans."""
from __future__ import annotations

import argparse
import sys

from samunet.core.paths import UnknownDatasetError, preprocessed_root, resolve_dataset_name
from samunet.core.names import DEFAULT_PLANS_NAME
from samunet.core.plans import Plans
from samunet.utils.logs import get_logger, setup_logging
from samunet.core.records import SchemaError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samunet_preprocess",
        description="Preprocess the training cases of a planned dataset (run samunet_plan first). Cases already "
                    "preprocessed with the current plans are skipped.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (4, 004) or folder name (Dataset004_Name)")
    parser.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME, help=f"plans name (default {DEFAULT_PLANS_NAME})")
    parser.add_argument("-np", "--num-processes", type=int, default=None,
                        help="worker processes (default: one per CPU, fewer when RAM is short)")
    parser.add_argument("--overwrite", action="store_true", help="redo every case, even finished ones")
    return parser


def main(argv: list[str] | None = None) -> None:
    from samunet.preprocessing.runner import PreprocessingError, preprocess_dataset

    args = build_parser().parse_args(argv)
    setup_logging()
    log = get_logger()
    try:
        dataset_name = resolve_dataset_name(args.dataset)
        plans_path = preprocessed_root() / dataset_name / f"{args.plans}.json"
        plans = Plans.load(plans_path)
        setup_logging(preprocessed_root() / dataset_name / "logs", "preprocess")
        log.info("preprocessing %s with %s", dataset_name, plans_path)
        counts = preprocess_dataset(dataset_name, plans, args.num_processes, overwrite=args.overwrite)
    except (UnknownDatasetError, FileNotFoundError, SchemaError, PreprocessingError, ValueError) as e:
        log.error("samunet_preprocess: %s", e)
        sys.exit(1)
    log.info("done: %d case(s) preprocessed, %d skipped", counts["processed"], counts["skipped"])


if __name__ == "__main__":
    main()
