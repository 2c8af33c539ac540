"""Predict a folder of images with trained adapters: preprocess as planned, average folds (and adapters),
map back to the original grid, postprocess as find_best decided, write label maps (and probabilities).

Cases are read and preprocessed in background threads (``num_preprocessing`` of them, a bounded queue)
while the models predict the previous case.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from samunet.core.errors import SamunetUserError
from samunet.dataset.dataset_json import channel_file_pattern, find_images_by_case, visible_files
from samunet.dataset.image_io import SUPPORTED_FILE_ENDINGS, Geometry, read_case_images, write_segmentation
from samunet.evaluation.postprocessing import apply_postprocessing
from samunet.evaluation.smoothing import smooth_probabilities
from samunet.inference.model_loading import Selection
from samunet.inference.prediction_parts import part_of
from samunet.evaluation.probabilities_io import save_probabilities
from samunet.inference.volume_predictor import predict_preprocessed_volume
from samunet.preprocessing.case_preprocessor import preprocess_arrays
from samunet.preprocessing.inverse import restore_probabilities
from samunet.utils.logs import get_logger


class PredictionError(SamunetUserError, ValueError):
    """Inputs that cannot be predicted; the message names the file or folder and the problem."""


@dataclass
class PreparedCase:
    case_id: str
    geometry: Geometry
    preprocessed: dict[str, tuple[np.ndarray, object]]  # plans sha256 -> (image (C, S, H, W), CaseProperties)


def input_cases(folder: Path, file_ending: str, num_channels: int) -> tuple[dict[str, list[Path]], str]:
    """Cases of ``folder`` named like imagesTr (``CASE_0000<ending>``) and the ending they use.

    The dataset's own ending is preferred; another supported ending is accepted when it is the only one."""
    if not folder.is_dir():
        raise PredictionError(f"{folder}: input folder does not exist")
    names = [p.name for p in visible_files(folder)]
    endings = [e for e in SUPPORTED_FILE_ENDINGS if any(channel_file_pattern(e).match(n) for n in names)]
    if file_ending in endings or not endings:
        ending = file_ending
    elif len(endings) == 1:
        ending = endings[0]
    else:
        raise PredictionError(f"{folder}: images with several endings ({', '.join(endings)}); keep one kind per folder")
    cases = find_images_by_case(folder, ending, num_channels)
    if not cases:
        raise PredictionError(f"{folder}: no images named CASE_0000{ending} (the imagesTr naming) found")
    return cases, ending


def output_ending(input_ending: str) -> str:
    """Label maps keep the input's format, except that lossy JPEG becomes PNG."""
    return ".png" if input_ending in (".jpg", ".jpeg") else input_ending


class Predictor:
    def __init__(self, selection: Selection, device: torch.device, mirror: bool = True,
                 save_probabilities: bool = False, overwrite: bool = False, num_preprocessing: int = 1,
                 batch_size: int | None = None, progress: bool = True):
        self.selection = selection
        self.device = device
        self.mirror = mirror
        self.save_probabilities = save_probabilities
        self.overwrite = overwrite
        self.num_preprocessing = max(1, num_preprocessing)
        self.batch_size = batch_size
        self.progress = progress
        first = selection.configurations[0]
        self.scheme = first.plans.label_scheme
        self.num_channels = first.num_channels
        self.file_ending = first.file_ending

    def prepare(self, case_id: str, files: list[Path]) -> PreparedCase:
        image, geometry = read_case_images(files)
        if image.shape[0] != self.num_channels:
            raise PredictionError(f"{files[0]}: case {case_id} has {image.shape[0]} channel(s), the model was trained "
                                  f"with {self.num_channels} ({', '.join(str(f.name) for f in files)})")
        preprocessed = {}
        for config in self.selection.configurations:
            key = config.plans.sha256()
            if key not in preprocessed:
                pre, _, props = preprocess_arrays(image, geometry, config.plans, None, case_id, [str(f) for f in files])
                preprocessed[key] = (pre, props)
        return PreparedCase(case_id, geometry, preprocessed)

    def probabilities(self, case: PreparedCase) -> np.ndarray:
        """(K, z, y, x) probabilities in the original grid: mean over folds, then over adapters."""
        total = None
        for config in self.selection.configurations:
            image, props = case.preprocessed[config.plans.sha256()]
            # --disable-tta turns mirroring off; otherwise each configuration mirrors as its folds' validations said
            probs = predict_preprocessed_volume(config.ensemble, image, config.plans,
                                                mirror=self.mirror and config.mirror,
                                                batch_size=self.batch_size, device=None)
            restored = restore_probabilities(probs, props, regions=self.scheme.has_regions)
            total = restored if total is None else total + restored
        return total / len(self.selection.configurations)

    def finish(self, case: PreparedCase, probabilities: np.ndarray, output_folder: Path, ending: str) -> Path:
        # saved probabilities stay unsmoothed, as validation saves them: ensembles and find_best start from the models
        smoothed = smooth_probabilities(probabilities, case.geometry.spacing, self.selection.smoothing_sigma,
                                        in_place=not self.save_probabilities)
        segmentation = self.scheme.segmentation(smoothed)
        segmentation = apply_postprocessing(segmentation, self.selection.postprocessing)
        target = output_folder / f"{case.case_id}{ending}"
        if self.save_probabilities:
            save_probabilities(probabilities, case.geometry, self.scheme.labels, output_folder / f"{case.case_id}.npz",
                               self.scheme.regions_class_order)
        write_segmentation(segmentation, case.geometry, target)  # last: its presence marks the case as done
        return target

    def _done(self, case_id: str, output_folder: Path, ending: str) -> bool:
        done = (output_folder / f"{case_id}{ending}").is_file()
        if self.save_probabilities:
            done = done and (output_folder / f"{case_id}.npz").is_file()
        return done

    def find_jobs(self, input_folder: Path, output_folder: Path, num_parts: int = 1,
                  part_id: int = 0) -> tuple[list[tuple[str, list[Path]]], str]:
        """(cases still to predict with their channel files, output file ending); checks inputs before any work.
        With ``num_parts`` > 1 only part ``part_id`` of the sorted cases (``prediction_parts``)."""
        log = get_logger()
        if input_folder.resolve() == output_folder.resolve():
            raise PredictionError(f"{output_folder}: the output folder must differ from the input folder "
                                  f"(inputs are never overwritten)")
        cases, in_ending = input_cases(input_folder, self.file_ending, self.num_channels)
        ending = output_ending(in_ending)
        if num_parts > 1:
            mine = part_of(list(cases), num_parts, part_id)
            log.info("part %d of %d (counting from 0): %d of the %d case(s)", part_id, num_parts, len(mine), len(cases))
            cases = {c: cases[c] for c in mine}
        todo = [(c, f) for c, f in cases.items() if self.overwrite or not self._done(c, output_folder, ending)]
        if len(todo) < len(cases):
            log.info("%d of %d case(s) already predicted in %s: skipped (use --overwrite to redo them)",
                     len(cases) - len(todo), len(cases), output_folder)
        if ending != in_ending:
            log.info("input %s is lossy: label maps are written as %s", in_ending, ending)
        return todo, ending

    def predict_jobs(self, jobs: list[tuple[str, list[Path]]], output_folder: Path, ending: str) -> list[Path]:
        """Predict the cases (models must be loaded); the next cases are read while one is predicted."""
        log = get_logger()
        from samunet.utils.progress import progress as progress_bar

        written = []
        ahead = self.num_preprocessing + 1  # bounded read-ahead keeps memory flat
        with ThreadPoolExecutor(self.num_preprocessing) as pool:
            pending = {i: pool.submit(self.prepare, *jobs[i]) for i in range(min(ahead, len(jobs)))}
            for i in progress_bar(range(len(jobs)), desc="predicting", unit="case", disable=not self.progress):
                case = pending.pop(i).result()
                if i + ahead < len(jobs):
                    pending[i + ahead] = pool.submit(self.prepare, *jobs[i + ahead])
                with torch.inference_mode():
                    probabilities = self.probabilities(case)
                written.append(self.finish(case, probabilities, output_folder, ending))
                log.info("%s -> %s", case.case_id, written[-1].name)
        return written
