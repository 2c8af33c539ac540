"""samunet_preprocess -d N [-p NAME] [-np N] [--overwrite]: (re)build the preprocessed cache from existing plans."""
from __future__ import annotations

import argparse

from samunet.core import nnunet_flags
from samunet.core.command import CommandParser, add_nnunet_spellings, user_command
from samunet.core.errors import InvalidValueError
from samunet.core.names import DEFAULT_PLANS_NAME
from samunet.core.paths import preprocessed_root, resolve_dataset_name
from samunet.core.plans import Plans
from samunet.utils.logs import get_logger, setup_logging

PROG = "samunet_preprocess"


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=PROG,
        description="Preprocess the training cases of a planned dataset (run samunet_plan first). Cases already "
                    "preprocessed with the current plans are skipped.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (4, 004) or folder name (Dataset004_Name)")
    parser.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME, help=f"plans name (default {DEFAULT_PLANS_NAME})")
    parser.add_argument("-np", "--num-processes", type=int, default=None,
                        help="worker processes (default: one per CPU, fewer when RAM is short)")
    parser.add_argument("--overwrite", action="store_true", help="redo every case, even finished ones")
    add_nnunet_spellings(parser, nnunet_flags.PREPROCESS)
    return parser


@user_command(PROG)
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from samunet.preprocessing.runner import preprocess_dataset

    setup_logging()
    log = get_logger()
    if args.num_processes is not None and args.num_processes < 1:
        raise InvalidValueError(f"-np must be at least 1, got {args.num_processes}")
    dataset_name = resolve_dataset_name(args.dataset)
    plans_path = preprocessed_root() / dataset_name / f"{args.plans}.json"
    plans = Plans.load(plans_path)
    setup_logging(preprocessed_root() / dataset_name / "logs", "preprocess")
    log.info("preprocessing %s with %s", dataset_name, plans_path)
    counts = preprocess_dataset(dataset_name, plans, args.num_processes, overwrite=args.overwrite)
    log.info("done: %d case(s) preprocessed, %d skipped", counts["processed"], counts["skipped"])


if __name__ == "__main__":
    main()
