"""samunet_plan -d N: verify the raw dataset, fingerprint it, write the plans, preprocess.

A verification failure prints every problem and writes nothing into the preprocessed folder. An existing
plans file (perhaps edited by hand) is kept unless --overwrite.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from samunet.core import nnunet_flags
from samunet.core.command import CommandParser, add_nnunet_spellings, user_command
from samunet.core.errors import InvalidValueError, MissingFileError, SamunetUserError
from samunet.core.names import BACKBONE_NAMES, DATASET_JSON_FILE, DEFAULT_PLANS_NAME, FINGERPRINT_FILE
from samunet.core.paths import preprocessed_root, raw_root, resolve_dataset_name
from samunet.core.plans import Plans
from samunet.utils.atomic import copy_file
from samunet.utils.logs import get_logger, setup_logging

PROG = "samunet_plan"


class VerificationFailed(SamunetUserError, RuntimeError):
    def __init__(self, raw_folder: Path, problems: list):
        self.problems = problems
        if len(problems) == 1:  # one problem, one line
            super().__init__(f"{problems[0]} (nothing was written)")
            return
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{raw_folder} has {len(problems)} problems; nothing was written:\n{listing}")


def verify_raw_dataset(dataset_name: str, num_processes: int) -> None:
    from samunet.dataset.verify import verify_dataset

    raw_folder = raw_root() / dataset_name
    started = time.perf_counter()
    get_logger().info("verifying %s", raw_folder)
    problems = verify_dataset(raw_folder, num_processes=num_processes)
    if problems:
        raise VerificationFailed(raw_folder, problems)
    get_logger().info("dataset verified (%.1f s)", time.perf_counter() - started)


def _measured_cost_model(root: Path, hardware):
    """The planner's cost model: timings on this machine (``hardware``'s timing key), cached under ``root`` (see
    planning/cost_model.py); each measurement in a child process."""
    from samunet.planning.cost_model import CostCache, MeasuredCosts, TimeCap, cost_cache_path

    cache = CostCache(cost_cache_path(root))
    cap = TimeCap()

    def costs(backbone, adapter, precision, device, num_classes, in_channels, global_attention, encoder_runtime,
              batch):
        return MeasuredCosts(backbone, adapter, precision, device, cache, batch=batch, time_cap=cap,
                             num_classes=num_classes, in_channels=in_channels, global_attention=global_attention,
                             encoder_runtime=encoder_runtime, isolated=True, machine=hardware.timing_key)

    return costs


def plan_dataset(dataset_name: str, plans_name: str = DEFAULT_PLANS_NAME, backbone: str | None = None,
                 overwrite: bool = False, num_processes: int | None = None, preprocess: bool = True,
                 progress: bool = True, measure_costs: bool = True) -> Plans:
    """Fingerprint, plan (keeping an existing plans file unless ``overwrite``) and preprocess a verified dataset.

    ``measure_costs``: time the planned model on this machine (cached in the preprocessed root) for the budget
    decisions; False: the fixed estimates."""
    from samunet.dataset.dataset_json import DatasetInfo
    from samunet.planning.fingerprint import compute_fingerprint, fingerprint_sha256
    from samunet.planning.hardware import detect_hardware
    from samunet.planning.planner import plan
    from samunet.utils.processes import usable_cpu_count
    from samunet.preprocessing.runner import preprocess_dataset

    log = get_logger()
    raw_folder = raw_root() / dataset_name
    out = preprocessed_root() / dataset_name
    workers = num_processes or usable_cpu_count()
    started = time.perf_counter()
    fingerprint = compute_fingerprint(raw_folder, num_processes=workers, progress=progress)
    fingerprint.save(out / FINGERPRINT_FILE)
    copy_file(raw_folder / DATASET_JSON_FILE, out / DATASET_JSON_FILE)
    log.info("fingerprint of %d case(s) written to %s (%.1f s)", len(fingerprint.cases), out / FINGERPRINT_FILE,
             time.perf_counter() - started)

    plans_path = out / f"{plans_name}.json"
    if plans_path.is_file() and not overwrite:
        plans = Plans.load(plans_path)
        log.info("keeping the existing plans %s (edited or not); re-plan with --overwrite", plans_path)
        if backbone and backbone != plans.model.backbone:
            log.warning("--backbone %s ignored: the kept plans use %s (add --overwrite to re-plan)",
                        backbone, plans.model.backbone)
        if plans.fingerprint_sha256 and plans.fingerprint_sha256 != fingerprint_sha256(fingerprint):
            log.warning("the dataset changed since these plans were made; consider --overwrite")
        if (plans.labels, plans.regions_class_order) != (fingerprint.labels, fingerprint.regions_class_order):
            log.warning("dataset.json's labels / regions_class_order differ from the kept plans' (%s): models train "
                        "and predict with the plans' labels; re-plan with --overwrite to use the new ones",
                        plans.labels)
    else:
        hardware = detect_hardware()
        plans = plan(fingerprint, DatasetInfo.load(raw_folder), backbone=backbone, hardware=hardware,
                     plans_name=plans_name,
                     cost_model=_measured_cost_model(preprocessed_root(), hardware) if measure_costs else None)
        plans.save(plans_path)
        log.info("plans written to %s", plans_path)
        for section in ("slicing", "crop", "resampling", "packing", "model", "training", "cost"):
            log.info("  %s: %s", section, getattr(plans, section).reason)
        log.info("  adapter %s: %s", plans.model.adapter, plans.model.adapter_reason)
    if preprocess:
        started = time.perf_counter()
        preprocess_dataset(dataset_name, plans, num_processes, overwrite=overwrite, progress=progress)
        log.info("preprocessing took %.1f s", time.perf_counter() - started)
    return plans


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=PROG,
        description="Verify a raw dataset, fingerprint it, write the plans and preprocess the training cases.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (4, 004) or folder name (Dataset004_Name)")
    parser.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME,
                        help=f"plans name: writes NAME.json and the cache NAME/ (default {DEFAULT_PLANS_NAME})")
    parser.add_argument("--backbone", choices=BACKBONE_NAMES, default=None,
                        help="SAM backbone (default: chosen from the hardware and the weights present)")
    parser.add_argument("--no-verify", action="store_true", help="skip the dataset check (not recommended)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing plans (even edited ones) and redo every preprocessed case")
    parser.add_argument("-np", "--num-processes", type=int, default=None,
                        help="worker processes (default: one per CPU, fewer when RAM is short)")
    parser.add_argument("--no-preprocess", action="store_true", help="stop after writing the plans")
    parser.add_argument("--no-measure", action="store_true",
                        help="plan with fixed cost estimates instead of timing the model on this machine (20-60 s the "
                             "first time, cached per machine in the preprocessed root)")
    add_nnunet_spellings(parser, nnunet_flags.PLAN)
    return parser


@user_command(PROG)
def plan_main(argv: list[str] | None = None) -> None:
    from samunet.utils.processes import usable_cpu_count

    args = build_parser().parse_args(argv)
    setup_logging()  # console only until verification passed: a failed check writes nothing
    log = get_logger()
    if args.num_processes is not None and args.num_processes < 1:
        raise InvalidValueError(f"-np must be at least 1, got {args.num_processes}")
    dataset_name = resolve_dataset_name(args.dataset)
    if not (raw_root() / dataset_name).is_dir():
        raise MissingFileError(f"{raw_root() / dataset_name}: raw dataset folder does not exist")
    if not args.no_verify:
        verify_raw_dataset(dataset_name, args.num_processes or usable_cpu_count())
    log_file = setup_logging(preprocessed_root() / dataset_name / "logs", "plan")
    log.info("samunet_plan %s (log: %s)", " ".join(sys.argv[1:] if argv is None else argv), log_file)
    plan_dataset(dataset_name, args.plans, args.backbone, args.overwrite, args.num_processes,
                 preprocess=not args.no_preprocess, measure_costs=not args.no_measure)
    log.info("done")


if __name__ == "__main__":
    plan_main()
