"""``samunet_install_model``: unpack a model zip into ``$SAMUNET_RESULTS``, after checking it.

nnU-Net's installer extracts everything over the results folder. This one is stricter: every file must be
listed in the zip's manifest with its sha256 and size; zip-slip paths (absolute, ``..``, outside a
``DatasetXXX_Name`` folder) and links are refused; an existing model folder that differs is kept unless
``--force`` (one identical to the zip's is left as is, so an interrupted install can be re-run); files are
unpacked and checked in a staging folder inside the results root first, then each model folder (and
``inference_information.json``) is moved into place with one rename, so an interrupted or refused install
leaves the results root as it was.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

from samunet.core.names import MODEL_ZIP_MANIFEST_FILE, MODEL_ZIP_README_FILE
from samunet.sharing.manifest import ModelManifest, ModelZipError, payload_path_problem
from samunet.utils.logs import get_logger

STAGING_PREFIX = ".samunet-install-"


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    if not zip_path.is_file():
        raise ModelZipError(f"{zip_path}: file not found")
    try:
        return zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise ModelZipError(f"{zip_path}: not a zip file (damaged or incomplete download?)") from None


def read_manifest(zf: zipfile.ZipFile, zip_path: Path) -> ModelManifest:
    """The manifest, after checking that the zip holds exactly the files it lists, under safe names."""
    try:
        data = zf.read(MODEL_ZIP_MANIFEST_FILE)
    except KeyError:
        raise ModelZipError(f"{zip_path}: no {MODEL_ZIP_MANIFEST_FILE}; not a zip written by "
                            f"samunet_export_model") from None
    manifest = ModelManifest.from_bytes(data, f"{zip_path}:{MODEL_ZIP_MANIFEST_FILE}")
    for name in manifest.files:
        problem = payload_path_problem(name)
        if problem is None and not name.startswith(manifest.dataset_name + "/"):
            problem = f"outside the model's dataset folder {manifest.dataset_name}"
        if problem:
            raise ModelZipError(f"{zip_path}: refusing to install {name!r}: {problem}")
    members = {}
    for info in zf.infolist():
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ModelZipError(f"{zip_path}: refusing to install {info.filename!r}: a symbolic link")
        if info.filename in (MODEL_ZIP_MANIFEST_FILE, MODEL_ZIP_README_FILE) or info.is_dir():
            continue
        if info.filename not in manifest.files:
            raise ModelZipError(f"{zip_path}: {info.filename!r} is not listed in {MODEL_ZIP_MANIFEST_FILE} "
                                f"(altered zip?)")
        members[info.filename] = info
    missing = sorted(set(manifest.files) - set(members))
    if missing:
        raise ModelZipError(f"{zip_path}: {missing[0]} is listed in {MODEL_ZIP_MANIFEST_FILE} but missing")
    return manifest


def install_units(manifest: ModelManifest) -> list[str]:
    """What is moved into place as a whole: each model folder and each dataset-level file."""
    return sorted({"/".join(name.split("/")[:2]) for name in manifest.files})


def unit_installed(results: Path, unit: str, manifest: ModelManifest) -> bool:
    """Whether ``unit`` already holds every file the zip has for it, byte for byte (re-running an install, or
    installing two zips of one dataset that share ``inference_information.json``): then it is kept as is."""
    from samunet.sharing.manifest import sha256_of_file

    for name, entry in manifest.files.items():
        if name == unit or name.startswith(unit + "/"):
            path = results.joinpath(*name.split("/"))
            if not path.is_file() or path.stat().st_size != entry.size or sha256_of_file(path) != entry.sha256:
                return False
    return True


def _unpack_checked(zf: zipfile.ZipFile, manifest: ModelManifest, staging: Path, zip_path: Path) -> None:
    import hashlib

    for name, entry in manifest.files.items():
        target = staging.joinpath(*name.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with zf.open(name) as source, open(target, "wb") as out:
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
                if size > entry.size:
                    break  # never unpack more than the manifest announced
                out.write(block)
        if size != entry.size or digest.hexdigest() != entry.sha256:
            raise ModelZipError(f"{zip_path}: {name} does not match its sha256 in {MODEL_ZIP_MANIFEST_FILE} "
                                f"(damaged or altered zip); nothing was installed")


def install_model(zip_path: Path, results: Path, force: bool = False) -> ModelManifest:
    """Check and unpack ``zip_path`` into ``results``; returns the manifest. Refuses (installing nothing) a
    damaged zip, unsafe paths, and existing model folders unless ``force`` (which replaces them)."""
    log = get_logger()
    zip_path = Path(zip_path)
    with _open_zip(zip_path) as zf:
        manifest = read_manifest(zf, zip_path)
        units = install_units(manifest)
        same = [unit for unit in units if (results / unit).exists() and unit_installed(results, unit, manifest)]
        if same:
            log.info("already installed, identical: %s (kept)", ", ".join(same))
        units = [unit for unit in units if unit not in same]
        existing = [unit for unit in units if (results / unit).exists()]
        if existing and not force:
            raise ModelZipError(f"{results / existing[0]} already exists; samunet_install_model --force replaces "
                                f"it (installing nothing meanwhile)")
        results.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=results))
        try:
            _unpack_checked(zf, manifest, staging, zip_path)
            for unit in units:
                target = results / unit
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():
                    old = staging / ".replaced" / unit
                    old.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(target, old)
                    log.info("replacing %s (--force)", target)
                os.replace(staging / unit, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("installed %s (%s, plans %s, folds %s) into %s", manifest.dataset_name, "+".join(manifest.adapters),
             manifest.plans_name, " ".join(manifest.folds), results)
    if manifest.base_checkpoint_sha256:
        log.info("base weights needed (not in the zip): %s for backbone %s, sha256 %s",
                 manifest.base_checkpoint_file or "the official file", manifest.backbone,
                 manifest.base_checkpoint_sha256)
    return manifest
