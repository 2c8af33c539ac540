"""samunet_compare -d D [-a ADAPTERS...] [-f FOLDS...] [--time-limit-min M]: the adapter comparison of a paper.

Trains every adapter on every fold with samunet_train's own code (the same plans, splits and overrides for all
of them; each adapter keeps its own planned learning rate, input size, ...), reuses folds that are already
finished, validates, and writes $SAMUNET_RESULTS/DatasetXXX/compare/leaderboard.{csv,md,png}: one row per
adapter x fold (Dice and HD95 per class and their mean, trainable parameters, training minutes, seconds per
predicted volume) and the mean ± std over folds per adapter. Ends by naming the best adapter (mean foreground
Dice over folds) and what samunet_find_best would pick. Every samunet_train option applies to every
adapter x fold. Interrupted? Run the same command again: finished folds are kept, an unfinished one is continued
(samunet_train --continue).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from samunet.core import training_flags
from samunet.core.command import CommandParser, user_command
from samunet.core.errors import InvalidValueError
from samunet.core.names import (
    ADAPTER_NAMES, COMPARE_FOLDER, DEFAULT_PLANS_NAME, LEADERBOARD_CSV_FILE,
    LEADERBOARD_MARKDOWN_FILE, LEADERBOARD_PLOT_FILE, MODEL_PLANS_FILE, NUM_FOLDS, model_folder_name,
)
from samunet.utils.logs import get_logger, setup_logging

PROG = "samunet_compare"
log = get_logger()


def _fold(text: str) -> int:
    if text.isdigit() and int(text) < NUM_FOLDS:
        return int(text)
    raise argparse.ArgumentTypeError(f"fold {text!r} is not one of 0-{NUM_FOLDS - 1} (fold 'all' has no validation "
                                     "to compare)")


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog=PROG, description=__doc__,
                      epilog="Example: samunet_compare -d 4 -a decoder ssam -f 0 --time-limit-min 30")
    p.add_argument("-d", dest="dataset", required=True, help="dataset id or name: 4, 004 or Dataset004_Hippocampus")
    p.add_argument("-a", dest="adapters", nargs="+", default=list(ADAPTER_NAMES),
                   help=f"adapters to compare (default: all of {', '.join(ADAPTER_NAMES)})")
    p.add_argument("-f", dest="folds", nargs="+", type=_fold, default=list(range(NUM_FOLDS)),
                   help=f"folds (default: all {NUM_FOLDS}, nnU-Net's cross-validation)")
    p.add_argument("-p", "--plans", dest="plans_name", default=DEFAULT_PLANS_NAME,
                   help=f"plans name (default {DEFAULT_PLANS_NAME})")
    training_flags.add_training_flags(p, compare=True)  # every samunet_train flag, for every adapter x fold
    return p


def _check(args: argparse.Namespace) -> None:
    from samunet.core.nnunet_flags import NNUNET_CONFIGURATIONS

    for adapter in args.adapters:
        if adapter not in ADAPTER_NAMES:
            what = " (an nnU-Net configuration; samunet compares adapters)" if adapter in NNUNET_CONFIGURATIONS else ""
            raise InvalidValueError(f"-a {adapter!r}: unknown adapter{what}; choose from {', '.join(ADAPTER_NAMES)}")
    for flag in training_flags.TRAINING_FLAGS:
        problem = training_flags.value_problem(flag, getattr(args, flag.name, None))
        if problem:
            raise InvalidValueError(problem)
    if args.time_limit_min is not None and not args.time_limit_min > 0:
        raise InvalidValueError(f"--time-limit-min must be positive, got {args.time_limit_min}")
    args.adapters = list(dict.fromkeys(args.adapters))  # a name given twice is compared once
    args.folds = sorted(set(args.folds))


def _log_to(log_file: Path) -> None:
    """Console plus ``log_file`` (appended): a training run replaces the logger's handlers with its own."""
    setup_logging(None)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    get_logger().addHandler(handler)


def run_folds(jobs, base_options, log_file: Path) -> None:
    from samunet.compare import folds

    for i, job in enumerate(jobs, start=1):
        state = job.state()
        log.info("[%d/%d] %s fold %d: %s", i, len(jobs), job.adapter, job.fold,
                 "finished, reused" if state == folds.DONE else state)
        if state == folds.DONE:
            differences = folds.reuse_differences(job, base_options)
            if differences:
                log.warning("%s: reused as trained with %s; delete the folder to train it with this command's "
                            "settings", job.folder, ", ".join(differences))
            continue
        folds.train_fold(folds.options_for(job, base_options))
        _log_to(log_file)
        if job.state() != folds.DONE:  # e.g. no validation cases in this fold
            raise InvalidValueError(f"{job.folder}: samunet_train ended without checkpoint_final and "
                                    f"validation/summary.json; see its training_log there")
        log.info("[%d/%d] %s fold %d: done", i, len(jobs), job.adapter, job.fold)


def _find_best_line(dataset: str, plans_name: str, adapters: list[str]) -> str:
    from samunet.core.errors import SamunetUserError
    from samunet.evaluation.find_best import find_best

    try:
        info = find_best(dataset, plans_name, adapters, progress=False, write=False)
    except SamunetUserError as e:
        return f"samunet_find_best would pick: n/a ({e})"
    folds = sorted({f for fs in info.folds.values() for f in fs})
    post = (f", {info.mean_dice_postprocessed:.4f} with its postprocessing"
            if info.changes_predictions else "")
    # samunet_predict applies only what find_best itself wrote: the comparison names the command that records it
    plans = "" if plans_name == DEFAULT_PLANS_NAME else f" -p {plans_name}"
    record = f"samunet_find_best -d {dataset}{plans} -a {' '.join(adapters)}"
    # find_best pools the validation cases of all folds (and every fold that has outputs, not only these)
    return (f"samunet_find_best would pick: **{'+'.join(info.adapters)}** (mean foreground Dice "
            f"{info.mean_dice:.4f}{post}; over the {info.num_cases} pooled validation cases of folds "
            f"{', '.join(map(str, folds))}; single adapters and pairwise ensembles compared). Not recorded: "
            f"`{record}` writes it for samunet_predict")


def write_leaderboard(dataset_name: str, plans_name: str, jobs, folder: Path) -> str | None:
    """Read every fold's figures, write the CSV, Markdown and PNG; returns the best adapter."""
    from samunet.compare import leaderboard as lb
    from samunet.compare.plot import plot_leaderboard
    from samunet.core.plans import Plans

    scheme = Plans.load(jobs[0].folder.parent / MODEL_PLANS_FILE).label_scheme
    results = [lb.read_fold_result(j.adapter, j.fold, j.folder, scheme, j.summary_file()) for j in jobs]
    classes = list(results[0].dice)
    aggregated = lb.aggregate(results, classes)
    best = lb.best_adapter(aggregated)
    best_line = (f"Best adapter (mean foreground Dice over folds): **{best}** "
                 f"({aggregated[best]['dice_mean'][0]:.4f})" if best else "Best adapter: n/a (no Dice)")
    conclusion = [best_line, "", _find_best_line(dataset_name, plans_name, list(aggregated))]
    lb.write_text(folder / LEADERBOARD_CSV_FILE, lb.csv_text(results, classes, aggregated))
    lb.write_text(folder / LEADERBOARD_MARKDOWN_FILE,
                  lb.markdown_text(dataset_name, plans_name, results, classes, aggregated, conclusion))
    plot_leaderboard(results, classes, aggregated, folder / LEADERBOARD_PLOT_FILE,
                     f"{dataset_name} ({plans_name}): Dice per class, mean ± std over folds")
    for line in conclusion:
        if line:
            log.info(line.replace("**", ""))
    log.info("written %s, %s, %s in %s", LEADERBOARD_CSV_FILE, LEADERBOARD_MARKDOWN_FILE, LEADERBOARD_PLOT_FILE,
             folder)
    return best


@user_command(PROG, interrupted_hint="run the same command again: finished folds are kept, an unfinished one "
              "is continued")
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _check(args)
    from samunet.compare.folds import fold_jobs
    from samunet.core.layout import dataset_results_folder

    results = dataset_results_folder(args.dataset)
    folder = results / COMPARE_FOLDER
    log_file = setup_logging(folder, prefix="compare")
    models = {a: results / model_folder_name(a, args.plans_name) for a in args.adapters}
    jobs = fold_jobs(models, args.folds)
    log.info("%s: %d adapter(s) x %d fold(s) = %d runs; log %s", results.name, len(models), len(args.folds),
             len(jobs), log_file)
    base = training_flags.TrainingOptions(dataset=args.dataset, adapter=args.adapters[0], fold=args.folds[0],
                                          plans_name=args.plans_name, **training_flags.flag_values(args))
    run_folds(jobs, base, log_file)
    write_leaderboard(results.name, args.plans_name, jobs, folder)
    from samunet.report.build import write_report_or_warn

    write_report_or_warn(folder)  # compare/report.html: the leaderboard's table and plot; a failure only warns


if __name__ == "__main__":
    main()
