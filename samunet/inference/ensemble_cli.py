"""samunet_ensemble -i DIR_A DIR_B ... -o OUT [--save-probabilities]: average saved probabilities.

Each input folder holds CASE.npz + CASE.json from samunet_predict --save-probabilities (or from training
validation). Cases present in every folder are averaged; the label map is the arg-max, written in the
geometry recorded in CASE.json with the file ending given by --file-ending.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from samunet.core import nnunet_flags
from samunet.core.command import CommandParser, add_nnunet_spellings, user_command
from samunet.core.errors import SamunetUserError
from samunet.core.names import LOSSY_FILE_ENDINGS, SUPPORTED_FILE_ENDINGS
from samunet.utils.logs import get_logger, setup_logging

PROG = "samunet_ensemble"
LABEL_FILE_ENDINGS = tuple(e for e in SUPPORTED_FILE_ENDINGS if e not in LOSSY_FILE_ENDINGS)


class EnsembleError(SamunetUserError, ValueError):
    pass


def probability_cases(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise EnsembleError(f"{folder}: folder does not exist")
    return {p.name[: -len(".npz")]: p for p in sorted(folder.glob("*.npz")) if not p.name.startswith(".")}


def ensemble_case(npz_files: list[Path]):
    """Mean probabilities of one case over the folders, with the labels and geometry they agree on."""
    from samunet.evaluation.probabilities_io import load_probabilities

    mean, scheme, geometry = None, None, None
    for path in npz_files:
        saved = load_probabilities(path)
        if saved.labels is None or saved.geometry is None:
            raise EnsembleError(f"{path}: its CASE.json sidecar (labels and geometry) is missing; "
                                f"write probabilities with samunet_predict --save-probabilities")
        if mean is None:
            mean, scheme, geometry = saved.probabilities.copy(), saved.scheme, saved.geometry
            continue
        if saved.scheme != scheme:
            raise EnsembleError(f"{path}: labels {saved.labels} differ from {npz_files[0]}'s {scheme.labels}")
        differences = geometry.differences(saved.geometry)
        if differences:
            raise EnsembleError(f"{path}: geometry differs from {npz_files[0]}: {'; '.join(differences)}")
        mean += saved.probabilities
    return mean / len(npz_files), scheme, geometry


def ensemble_folders(inputs: list[Path], output: Path, file_ending: str = ".nii.gz",
                     save_probs: bool = False, progress: bool = True) -> list[Path]:
    from samunet.dataset.image_io import write_segmentation
    from samunet.evaluation.probabilities_io import save_probabilities
    from samunet.utils.progress import progress as progress_bar

    log = get_logger()
    if len(inputs) < 2:
        raise EnsembleError("give at least two input folders to ensemble")
    if any(p.resolve() == output.resolve() for p in inputs):
        raise EnsembleError(f"{output}: the output folder must differ from the input folders")
    per_folder = [probability_cases(p) for p in inputs]
    common = sorted(set.intersection(*[set(c) for c in per_folder]))
    if not common:
        raise EnsembleError(f"no case has CASE.npz in every input folder ({', '.join(map(str, inputs))})")
    for folder, cases in zip(inputs, per_folder):
        extra = set(cases) - set(common)
        if extra:
            log.warning("%s: %d case(s) not in every folder are skipped (first: %s)", folder, len(extra),
                        sorted(extra)[0])
    written = []
    for case in progress_bar(common, desc="ensembling", unit="case", disable=not progress):
        probabilities, scheme, geometry = ensemble_case([cases[case] for cases in per_folder])
        segmentation = scheme.segmentation(probabilities)
        if save_probs:
            save_probabilities(probabilities, geometry, scheme.labels, output / f"{case}.npz",
                               scheme.regions_class_order)
        target = output / f"{case}{file_ending}"
        write_segmentation(segmentation, geometry, target)
        written.append(target)
    log.info("%d case(s) ensembled from %d folders -> %s", len(written), len(inputs), output)
    return written


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog=PROG, description="Average the saved probabilities (CASE.npz) "
                                "of several prediction folders and write the arg-max label maps.")
    p.add_argument("-i", dest="inputs", nargs="+", required=True, type=Path, help="two or more folders with CASE.npz")
    p.add_argument("-o", dest="output", required=True, type=Path, help="output folder")
    p.add_argument("--file-ending", default=".nii.gz", choices=LABEL_FILE_ENDINGS,
                   help="format of the label maps (default .nii.gz)")
    p.add_argument("--save-probabilities", action="store_true", help="also write the averaged CASE.npz + CASE.json")
    add_nnunet_spellings(p, nnunet_flags.ENSEMBLE)
    return p


@user_command(PROG)
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if any(p.resolve() == args.output.resolve() for p in args.inputs):
        raise EnsembleError(f"{args.output}: the output folder must differ from the input folders")
    setup_logging(args.output, "ensemble")
    ensemble_folders(args.inputs, args.output, args.file_ending, args.save_probabilities)


if __name__ == "__main__":
    main()
