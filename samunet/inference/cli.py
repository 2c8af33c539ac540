"""samunet_predict -i IN -o OUT -d 4 [-a ADAPTER ...] [-p PLANS] [-f 0 1 2 3 4|all] [-chk final|best] ..."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from samunet.core import nnunet_flags
from samunet.core.command import CommandParser, add_nnunet_spellings, user_command
from samunet.core.errors import InvalidValueError
from samunet.core.names import ALL_FOLD, CHECKPOINT_CHOICES, ENCODER_RUNTIMES, NUM_FOLDS
from samunet.utils.logs import get_logger, setup_logging

PROG = "samunet_predict"


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog=PROG,
        description="Segment images with trained samunet models. Inputs are named like imagesTr "
        "(CASE_0000.nii.gz, one file per channel); outputs are CASE.nii.gz in each input's exact geometry.",
    )
    p.add_argument("-i", dest="input", required=True, type=Path, help="input folder (never modified)")
    p.add_argument("-o", dest="output", required=True, type=Path, help="output folder (not the input folder)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("-d", dest="dataset", help="dataset id or name the models were trained on")
    source.add_argument("-m", dest="model_folder", type=Path, help="instead of -d: a model folder "
                        "(<adapter>__<plans>, e.g. installed with samunet_install_model) or a dataset results folder")
    p.add_argument("-a", dest="adapters", nargs="+", help="adapter(s); several are ensembled (default: the choice "
                   "of samunet_find_best, else the plans' recommendation)")
    p.add_argument("-p", dest="plans", help="plans name (default: samunet_find_best's, else samunetPlans)")
    p.add_argument("-f", dest="folds", nargs="+", help="folds to ensemble (numbers), or 'all' for the model trained "
                   "on every case (fold_all), as in nnU-Net (default: every numbered fold with the checkpoint, "
                   "else fold_all)")
    p.add_argument("-chk", dest="checkpoint", choices=CHECKPOINT_CHOICES,
                   help="checkpoint to load (default: the one samunet_find_best evaluated, else final)")
    p.add_argument("--save-probabilities", action="store_true", help="also write CASE.npz (+ CASE.json) "
                   "probabilities in the original grid, for samunet_ensemble")
    p.add_argument("--disable-tta", action="store_true", help="no mirroring test-time augmentation (about 4x faster)")
    p.add_argument("--no-postprocessing", action="store_true", help="ignore samunet_find_best's postprocessing")
    p.add_argument("--device", default=None,
                   help="auto, cpu, cuda, cuda:1, mps (default auto: cuda, else mps, else cpu)")
    p.add_argument("--encoder-runtime", choices=ENCODER_RUNTIMES, default=None,
                   help="how the (merged, frozen) encoder runs (default: the plans' model.encoder_runtime)")
    p.add_argument("--overwrite", action="store_true", help="predict cases whose outputs already exist again")
    p.add_argument("--batch-size", type=int, default=None,
                   help="slices per forward pass (default: the plans' batch size)")
    p.add_argument("-npp", dest="num_preprocessing", type=int, default=1,
                   help="background threads reading and preprocessing the next cases (default 1)")
    p.add_argument("-num_parts", type=int, default=1, help="split the cases into this many parts, one per "
                   "samunet_predict call (e.g. a SLURM array); default 1")
    p.add_argument("-part_id", type=int, default=0, help="which part this call predicts: 0 .. num_parts-1 (the "
                   "sorted cases part_id, part_id+num_parts, ...); default 0")
    add_nnunet_spellings(p, nnunet_flags.PREDICT)
    return p


def parse_folds(values: list[str] | None) -> list[int | str] | None:
    """None: the default folds; numbers -> ints; ``all`` -> the fold_all model."""
    if values is None:
        return None
    if not all(v.isdigit() or v == ALL_FOLD for v in values):
        raise InvalidValueError(f"-f takes fold numbers or 'all', got {' '.join(values)}")
    unique = {ALL_FOLD if v == ALL_FOLD else int(v) for v in values}
    return sorted(unique, key=lambda f: (f == ALL_FOLD, f if f != ALL_FOLD else 0))


def resolve_device(name: str | None):
    """The one device rule of samunet (``samunet.modeling.runtime``), imported late so that --help stays fast."""
    from samunet.modeling.runtime import resolve_device as resolve

    return resolve(name, "--device")


def check_inputs_readable(jobs: list[tuple[str, list[Path]]]) -> None:
    """Read every input's header now, so an unreadable file stops the command before the models load."""
    from samunet.dataset.image_io import check_readable

    for _, files in jobs:
        for path in files:
            check_readable(path)


def note_fold_count(selection) -> None:
    """One line when an adapter is predicted with fewer than the 5 cross-validation folds."""
    for config in selection.configurations:
        folds = sorted(f for f in config.checkpoints if f != ALL_FOLD)
        if ALL_FOLD not in config.checkpoints and len(folds) < NUM_FOLDS:
            get_logger().warning("%s: predicting with %d of %d folds (%s); train the others for the full "
                                 "cross-validation ensemble", config.adapter, len(folds), NUM_FOLDS,
                                 ", ".join(map(str, folds)))


@user_command(PROG)
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from samunet.core.layout import dataset_results_folder
    from samunet.inference.model_loading import ModelRequest, load_networks, resolve_model_folder, select_models
    from samunet.inference.prediction_parts import check_part
    from samunet.inference.predictor import PredictionError, Predictor

    log = get_logger()
    if args.input.resolve() == args.output.resolve():
        raise PredictionError(f"{args.output}: the output folder must differ from the input folder "
                              f"(inputs are never overwritten)")
    if not args.input.is_dir():
        raise PredictionError(f"{args.input}: input folder does not exist")
    check_part(args.num_parts, args.part_id)
    request = ModelRequest(args.adapters, args.plans, parse_folds(args.folds), args.checkpoint,
                           not args.no_postprocessing)
    if args.model_folder is not None:
        results_folder, request = resolve_model_folder(args.model_folder, request)
    else:
        results_folder = dataset_results_folder(args.dataset)
    device = resolve_device(args.device)
    setup_logging(args.output, "predict")
    selection = select_models(results_folder, request)
    predictor = Predictor(selection, device, mirror=not args.disable_tta, save_probabilities=args.save_probabilities,
                          overwrite=args.overwrite, num_preprocessing=args.num_preprocessing,
                          batch_size=args.batch_size)
    jobs, ending = predictor.find_jobs(args.input, args.output, args.num_parts, args.part_id)  # before loading
    if not jobs:
        log.info("nothing to predict: every case in %s has its output in %s", args.input, args.output)
        return
    check_inputs_readable(jobs)
    start = time.perf_counter()
    load_networks(selection, device, args.encoder_runtime)
    log.info("models loaded in %.1f s on %s; test-time mirroring %s", time.perf_counter() - start, device,
             "off (--disable-tta)" if args.disable_tta else "; ".join(
                 f"{c.adapter} {'on' if c.mirror else 'off'}" + (f" ({c.mirror_reason})" if c.mirror_reason else "")
                 for c in selection.configurations))
    note_fold_count(selection)  # after loading: a checkpoint problem is then the only line on stderr
    start = time.perf_counter()
    written = predictor.predict_jobs(jobs, args.output, ending)
    if written:
        log.info("%d case(s) predicted in %.1f s (%.2f s per case) -> %s", len(written), time.perf_counter() - start,
                 (time.perf_counter() - start) / len(written), args.output)


if __name__ == "__main__":
    main()
