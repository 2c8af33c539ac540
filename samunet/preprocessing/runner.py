"""Preprocess every training case of a dataset into ``$SAMUNET_PREPROCESSED/DatasetXXX/<plans_name>/``.

Per case: ``CASE_image.npy`` (C, S, H, W) float32, ``CASE_seg.npy`` (S, H, W), ``CASE.json``
(CaseProperties), each written atomically, the JSON last: a case is finished when its JSON exists, records
the current plans' sha256 and both arrays exist. Finished cases are skipped, so an interrupted run resumes.
"""
from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from samunet.utils.progress import progress as progress_bar

from samunet.core.errors import SamunetUserError
from samunet.core.layout import cache_files, cache_folder
from samunet.core.paths import preprocessed_root, raw_root
from samunet.core.names import FINGERPRINT_FILE
from samunet.utils.processes import default_num_processes, usable_cpu_count
from samunet.core.plans import Plans
from samunet.utils.atomic import write_npy
from samunet.utils.logs import get_logger

# peak memory of one worker relative to the float32 image: channels, crop copy, transpose, resampling, label
WORKER_MEMORY_FACTOR = 8
FALLBACK_WORKER_BYTES = 2 * 1024**3


class PreprocessingError(SamunetUserError, RuntimeError):
    pass


@dataclass(frozen=True)
class CaseOutputs:
    image: Path
    seg: Path
    properties: Path

    @classmethod
    def of(cls, folder: Path, case_id: str) -> "CaseOutputs":
        return cls(*cache_files(folder, case_id))


def is_case_finished(outputs: CaseOutputs, plans_sha256: str) -> bool:
    if not (outputs.image.is_file() and outputs.seg.is_file() and outputs.properties.is_file()):
        return False
    try:
        return json.loads(outputs.properties.read_text()).get("plans_sha256") == plans_sha256
    except (json.JSONDecodeError, OSError):
        return False


def _preprocess_job(job: tuple) -> tuple[str, str | None]:
    from samunet.preprocessing.case_preprocessor import preprocess_case

    case_id, image_files, label_file, plans, folder = job
    try:
        image, seg, props = preprocess_case(image_files, plans, label_file, case_id=case_id)
        outputs = CaseOutputs.of(Path(folder), case_id)
        write_npy(image, outputs.image)
        write_npy(seg, outputs.seg)
        props.save(outputs.properties)  # last: marks the case finished
        return case_id, None
    except Exception as e:  # reported with the case id
        return case_id, f"{type(e).__name__}: {e}"


def default_worker_count(dataset_name: str) -> int:
    """One worker per CPU, fewer when the largest case would not fit in half the available RAM that many times."""
    fingerprint = preprocessed_root() / dataset_name / FINGERPRINT_FILE
    per_worker = FALLBACK_WORKER_BYTES
    if fingerprint.is_file():
        data = json.loads(fingerprint.read_text())
        voxels = max((int(np.prod(c["shape"])) for c in data.get("cases", [])), default=0)
        channels = max(1, len(data.get("intensities", [])))
        if voxels:
            per_worker = voxels * channels * 4 * WORKER_MEMORY_FACTOR
    return default_num_processes(per_worker)


def preprocess_dataset(dataset_name: str, plans: Plans, num_processes: int | None = None, overwrite: bool = False,
                       progress: bool = True) -> dict[str, int]:
    """Preprocess the training cases of ``$SAMUNET_RAW/dataset_name``; returns counts of processed and skipped
    cases. Raises :class:`PreprocessingError` naming every case that failed (the others are kept)."""
    from samunet.dataset.dataset_json import DatasetInfo

    log = get_logger()
    info = DatasetInfo.load(raw_root() / dataset_name)
    folder = cache_folder(preprocessed_root() / dataset_name, plans.plans_name)
    folder.mkdir(parents=True, exist_ok=True)
    sha = plans.sha256()
    cases = info.training_cases()
    pending = [c for c in cases if overwrite or not is_case_finished(CaseOutputs.of(folder, c.case_id), sha)]
    skipped = len(cases) - len(pending)
    if skipped:
        log.info("%d of %d case(s) already preprocessed with these plans: skipped", skipped, len(cases))
    affordable = default_worker_count(dataset_name)  # cases stream through the pool: the largest sets the peak
    if num_processes is None:
        num_processes = affordable
    elif num_processes > affordable and affordable < usable_cpu_count():  # memory, not the CPUs, limits them
        log.info("preprocess: %d worker(s) instead of %d: what the available memory allows for the largest case",
                 affordable, num_processes)
        num_processes = affordable
    workers = max(1, min(num_processes, len(pending)))
    jobs = [(c.case_id, [str(f) for f in c.image_files], str(c.label_file), plans, str(folder)) for c in pending]
    bar = dict(total=len(jobs), desc="preprocess", unit="case", disable=not progress or not jobs)
    if workers <= 1:
        results = [_preprocess_job(j) for j in progress_bar(jobs, **bar)]
    else:
        # spawn: SimpleITK's thread pool is not safe to fork
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = list(progress_bar(pool.imap_unordered(_preprocess_job, jobs), **bar))
    failures = sorted(f"{case_id}: {error}" for case_id, error in results if error)
    if failures:
        raise PreprocessingError(f"{len(failures)} of {len(jobs)} case(s) failed "
                                 f"(the others are saved in {folder}):\n  "
                                 + "\n  ".join(failures))
    log.info("preprocessed %d case(s) into %s with %d worker(s)", len(jobs), folder, workers)
    return {"processed": len(jobs), "skipped": skipped}
