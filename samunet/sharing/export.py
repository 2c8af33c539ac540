"""``samunet_export_model``: one zip with what prediction needs from trained adapters, never the base weights.

Payload paths are relative to ``$SAMUNET_RESULTS`` (``DatasetXXX_Name/<adapter>__<plans>/fold_N/...``), as in
nnU-Net's export, so installing is unpacking into the results root. Per fold: the adapter-only safetensors
and JSON sidecar of each requested checkpoint, plus ``debug.json``, ``progress.png`` and
``validation/summary.json`` when present; per model folder: ``plans.json``, ``dataset.json`` (and the dataset
fingerprint when present); per dataset: ``inference_information.json`` (find_best's choice and postprocessing)
when present. A manifest (sha256 + size per file) and a README naming the base backbone and its sha256 sit at
the zip's root.
"""
from __future__ import annotations

import datetime
import json
import zipfile
from pathlib import Path

import samunet
from samunet.core.layout import (
    checkpoint_file, dataset_results_folder, describe_checkpoints, fold_folders, model_folders,
)
from samunet.core.names import (
    ALL_FOLD, DATASET_JSON_FILE, DEBUG_FILE, FINGERPRINT_FILE, INFERENCE_INFORMATION_FILE, MODEL_PLANS_FILE,
    MODEL_ZIP_MANIFEST_FILE, MODEL_ZIP_README_FILE, PROGRESS_PLOT_FILE, SUMMARY_FILE, TEST_TIME_MIRRORING_FILE,
    VALIDATION_FOLDER,
    fold_folder_name, model_folder_name,
)
from samunet.sharing.manifest import FileEntry, ModelManifest, ModelZipError, sha256_of_file
from samunet.utils.atomic import atomic_path, read_json
from samunet.utils.logs import get_logger

EXPORT_CHECKPOINTS = ("final", "best")


def checkpoint_choice(text: str) -> str:
    """``final`` / ``best``; nnU-Net's file-name spelling (``checkpoint_final.pth``) means the same."""
    name = text.removeprefix("checkpoint_").removesuffix(".pth").removesuffix(".safetensors")
    if name not in EXPORT_CHECKPOINTS:
        raise ModelZipError(f"-chk {text}: choose from {', '.join(EXPORT_CHECKPOINTS)}")
    return name


def _chosen_folds(folder: Path, folds: list[str] | None, checkpoints: list[str]) -> list[str]:
    """Fold suffixes ("0", "all", ...) whose folders have every requested checkpoint."""
    have = {str(fold): path for fold, path in fold_folders(folder).items()
            if all(checkpoint_file(path, c).is_file() for c in checkpoints)}
    if folds is None:
        if not have:
            raise ModelZipError(f"{folder}: no fold has checkpoint(s) {', '.join(checkpoints)} "
                                f"({describe_checkpoints(folder)})")
        return list(have)
    missing = [f for f in folds if f not in have]
    if missing:
        raise ModelZipError(f"{folder}: fold(s) {', '.join(missing)} lack checkpoint(s) {', '.join(checkpoints)} "
                            f"({describe_checkpoints(folder)})")
    return list(dict.fromkeys(folds))


def _base_weights(sidecars: list[tuple[Path, dict]]) -> tuple[str, str | None]:
    """(backbone, base sha256) recorded by the checkpoint sidecars; they must all agree."""
    found = {(meta.get("backbone"), meta.get("base_checkpoint_sha256")) for _, meta in sidecars}
    if len(found) > 1:
        raise ModelZipError(f"the checkpoints were trained on different base weights: {sorted(map(str, found))} "
                            f"(e.g. {sidecars[0][0]}); export them separately")
    (backbone, sha), = found
    return str(backbone), sha


def _base_file_name(plans: dict, backbone: str) -> str | None:
    """The base weights file prediction will look for: the plans' explicit checkpoint, else the backbone's
    official file name."""
    explicit = (plans.get("model") or {}).get("checkpoint")
    if explicit:
        return Path(explicit).name
    from samunet.modeling.checkpoints import KNOWN_CHECKPOINTS

    known = KNOWN_CHECKPOINTS.get(backbone)
    return known.filename if known else None


def collect_files(dataset: str | int, adapters: list[str], plans_name: str, folds: list[str] | None,
                  checkpoints: list[str]) -> tuple[Path, dict[str, Path], ModelManifest]:
    """(results root, zip path -> source file, manifest without file hashes); every problem found before writing."""
    checkpoints = [checkpoint_choice(c) for c in checkpoints]
    if folds is not None:
        bad = [f for f in folds if not (f.isdigit() or f == ALL_FOLD)]
        if bad:
            raise ModelZipError(f"-f {' '.join(bad)}: folds are numbers or 'all'")
        folds = [str(int(f)) if f.isdigit() else f for f in folds]
    dataset_folder = dataset_results_folder(dataset)
    root = dataset_folder.parent
    files: dict[str, Path] = {}

    def add(path: Path, required: bool = True) -> None:
        if path.is_file():
            files[path.relative_to(root).as_posix()] = path
        elif required:
            raise ModelZipError(f"{path}: missing; it is needed to predict with the exported model")

    sidecars: list[tuple[Path, dict]] = []
    used_folds: list[str] = []
    plans: dict = {}
    for adapter in dict.fromkeys(adapters):
        folder = dataset_folder / model_folder_name(adapter, plans_name)
        if not folder.is_dir():
            trained = ", ".join(model_folders(dataset_folder, plans_name)) or "none"
            raise ModelZipError(f"{folder}: no trained model for adapter {adapter} with plans {plans_name} "
                                f"(trained adapters with these plans: {trained})")
        add(folder / MODEL_PLANS_FILE)
        add(folder / DATASET_JSON_FILE)
        add(folder / FINGERPRINT_FILE, required=False)
        plans = read_json(folder / MODEL_PLANS_FILE)
        for fold in _chosen_folds(folder, folds, checkpoints):
            fold_folder = folder / fold_folder_name(fold)
            used_folds.append(fold)
            for which in checkpoints:
                weights = checkpoint_file(fold_folder, which)
                sidecar = weights.with_suffix(".json")
                add(weights)
                add(sidecar)
                try:
                    sidecars.append((sidecar, json.loads(sidecar.read_text())))
                except json.JSONDecodeError as e:
                    raise ModelZipError(f"{sidecar}: damaged checkpoint metadata ({e})") from None
            add(fold_folder / DEBUG_FILE, required=False)
            add(fold_folder / TEST_TIME_MIRRORING_FILE, required=False)  # the fold's mirroring, measured
            add(fold_folder / PROGRESS_PLOT_FILE, required=False)
            add(fold_folder / VALIDATION_FOLDER / SUMMARY_FILE, required=False)
    add(dataset_folder / INFERENCE_INFORMATION_FILE, required=False)
    backbone, base_sha = _base_weights(sidecars)
    manifest = ModelManifest(
        dataset_name=dataset_folder.name, plans_name=plans_name, adapters=list(dict.fromkeys(adapters)),
        folds=list(dict.fromkeys(used_folds)), checkpoints=list(checkpoints), backbone=backbone,
        base_checkpoint_sha256=base_sha, base_checkpoint_file=_base_file_name(plans, backbone),
        samunet_version=samunet.__version__)
    return root, files, manifest


def readme_text(manifest: ModelManifest) -> str:
    first = model_folder_name(manifest.adapters[0], manifest.plans_name)
    base = (f"`{manifest.base_checkpoint_file or manifest.backbone}` (backbone `{manifest.backbone}`), "
            f"sha256 `{manifest.base_checkpoint_sha256}`" if manifest.base_checkpoint_sha256 else
            f"none: backbone `{manifest.backbone}` was randomly initialised")
    lines = [
        f"# samunet model: {manifest.dataset_name}, adapter(s) {', '.join(manifest.adapters)}, "
        f"plans {manifest.plans_name}",
        "",
        f"Exported by samunet {manifest.samunet_version} on {datetime.date.today().isoformat()}. "
        f"Folds: {', '.join(manifest.folds)}; checkpoint(s): {', '.join(manifest.checkpoints)}.",
        "",
        f"Base SAM weights (NOT in this zip): {base}.",
        "Put that file in `$SAMUNET_CHECKPOINTS` (default `~/samunet_data/checkpoints`); prediction finds it by "
        "name and refuses a file whose sha256 differs. See samunet's documentation/checkpoints.md for downloads.",
        "",
        "Install and predict:",
        "",
        "    samunet_install_model model.zip",
        f"    samunet_predict -m $SAMUNET_RESULTS/{manifest.dataset_name}/{first} -i INPUT_FOLDER -o OUTPUT_FOLDER",
        "",
        f"`{MODEL_ZIP_MANIFEST_FILE}` lists the sha256 of every file; installing checks them.",
        "Using these weights is subject to the licence of the data they were trained on.",
        "",
    ]
    return "\n".join(lines)


def export_model(dataset: str | int, adapters: list[str], output: Path, plans_name: str,
                 folds: list[str] | None = None, checkpoints: list[str] | None = None) -> ModelManifest:
    """Write the zip atomically (a failed export leaves no partial file) and return its manifest."""
    log = get_logger()
    output = Path(output)
    if output.suffix != ".zip":
        raise ModelZipError(f"-o {output}: the output file must end in .zip")
    root, files, manifest = collect_files(dataset, adapters, plans_name, folds, list(checkpoints or ["final"]))
    for name, path in files.items():
        manifest.files[name] = FileEntry(sha256_of_file(path), path.stat().st_size)
    with atomic_path(output) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, path in files.items():
                zf.write(path, name)
            zf.writestr(MODEL_ZIP_MANIFEST_FILE, json.dumps(manifest.to_dict(), indent=2) + "\n")
            zf.writestr(MODEL_ZIP_README_FILE, readme_text(manifest))
    log.info("exported %s (%s, folds %s) from %s: %d files, %.1f MB -> %s", "+".join(manifest.adapters),
             manifest.plans_name, " ".join(manifest.folds), root / manifest.dataset_name, len(files),
             output.stat().st_size / 1e6, output)
    return manifest
