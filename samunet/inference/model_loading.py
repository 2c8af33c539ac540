"""Which trained models ``samunet_predict`` uses, and loading them once (merged, in eval mode).

Defaults: the adapters, folds and checkpoint that ``samunet_find_best`` chose (inference_information.json),
else the plans' recommended adapter (``plans.model.adapter``) with every fold that has the checkpoint.
``-m MODEL_FOLDER`` names the models by folder instead of by dataset id (``resolve_model_folder``), e.g. one
installed from a zip; the base SAM weights are then found by name and checked against the sha256 that the
checkpoints recorded (``base_weights_for``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from samunet.evaluation.inference_information import InferenceInformation
from samunet.evaluation.postprocessing import PostprocessingStep
from samunet.evaluation.mirroring_decision import folds_mirror
from samunet.core.layout import (
    TrainedModelError, describe_checkpoints, folds_with_checkpoint, model_folders,
)
from samunet.core.names import (
    ADAPTER_NAMES, ALL_FOLD, DATASET_JSON_FILE, DEFAULT_PLANS_NAME, INFERENCE_INFORMATION_FILE, MODEL_FOLDER_SEPARATOR,
    MODEL_PLANS_FILE, model_folder_name,
)
from samunet.core.plans import Plans
from samunet.utils.atomic import read_json
from samunet.utils.logs import get_logger

DEFAULT_CHECKPOINT = "final"


@dataclass
class ModelRequest:
    """What the command line asked for; None means "use the default"."""

    adapters: list[str] | None = None
    plans_name: str | None = None
    # None: every numbered fold with the checkpoint (else fold_all); "all": fold_all
    folds: list[int | str] | None = None
    checkpoint: str | None = None
    use_postprocessing: bool = True


@dataclass
class TrainedConfiguration:
    """One adapter's trained folds, loaded."""

    adapter: str
    folder: Path
    plans: Plans
    labels: dict  # dataset.json labels (name -> value, or list of values for a region)
    file_ending: str
    num_channels: int
    checkpoints: dict[int | str, Path]  # fold (number or "all") -> checkpoint file
    # test-time mirroring, as most folds' validations found (``evaluation.mirroring_decision``)
    mirror: bool = True
    mirror_reason: str = ""  # why ``mirror``, for the one line that reports the final decision
    networks: list[nn.Module] = field(default_factory=list)  # one per fold, same order as checkpoints
    ensemble: nn.Module | None = None  # FoldEnsemble of the networks (mean probabilities)

    @property
    def label_values(self) -> list[int]:
        return self.plans.label_scheme.label_values


@dataclass
class Selection:
    configurations: list[TrainedConfiguration]
    postprocessing: list[PostprocessingStep]
    checkpoint: str
    smoothing_sigma: float | None = None  # probability smoothing before the arg-max (find_best's choice)


def _read_information(dataset_folder: Path) -> InferenceInformation | None:
    path = dataset_folder / INFERENCE_INFORMATION_FILE
    return InferenceInformation.load(path) if path.is_file() else None


def _recommended_adapter(dataset_folder: Path, plans_name: str) -> str:
    """plans.model.adapter from a trained model folder's plans (or the preprocessed plans)."""
    folders = model_folders(dataset_folder, plans_name)
    if not folders:
        raise TrainedModelError(f"{dataset_folder}: no trained model folder <adapter>__{plans_name}; train first")
    plans = Plans.load(next(iter(folders.values())) / MODEL_PLANS_FILE)
    if plans.model.adapter in folders:
        return plans.model.adapter
    if len(folders) == 1:
        return next(iter(folders))
    raise TrainedModelError(f"{dataset_folder}: the recommended adapter '{plans.model.adapter}' is not trained and "
                            f"several others are ({', '.join(folders)}); choose one with -a")


def _is_model_folder(path: Path) -> bool:
    adapter, sep, plans_name = path.name.partition(MODEL_FOLDER_SEPARATOR)
    return bool(sep and plans_name) and adapter in ADAPTER_NAMES and (path / MODEL_PLANS_FILE).is_file()


def resolve_model_folder(path: Path, request: ModelRequest) -> tuple[Path, ModelRequest]:
    """``-m``: an ``<adapter>__<plans>`` folder (that adapter and plans) or a dataset results folder holding such
    folders (defaults as with ``-d``). Returns the dataset results folder and the request completed."""
    path = Path(path)
    if not path.is_dir():
        raise TrainedModelError(f"-m {path}: folder does not exist")
    if _is_model_folder(path):
        adapter, _, plans_name = path.name.partition(MODEL_FOLDER_SEPARATOR)
        if request.adapters not in (None, [adapter]):
            raise TrainedModelError(f"-m {path} is the model folder of adapter {adapter}; -a "
                                    f"{' '.join(request.adapters)} contradicts it (give the dataset folder "
                                    f"{path.parent} to choose adapters)")
        if request.plans_name not in (None, plans_name):
            raise TrainedModelError(f"-m {path} holds plans {plans_name}; -p {request.plans_name} contradicts it")
        return path.parent, ModelRequest([adapter], plans_name, request.folds, request.checkpoint,
                                         request.use_postprocessing)
    if any(_is_model_folder(p) for p in path.iterdir() if p.is_dir()):
        return path, request
    raise TrainedModelError(f"-m {path}: not a model folder (<adapter>__<plans> with {MODEL_PLANS_FILE} and "
                            f"fold_N) nor a dataset results folder holding one")


def select_models(dataset_folder: Path, request: ModelRequest) -> Selection:
    """Resolve defaults and check that every requested fold has its checkpoint (nothing loaded yet)."""
    log = get_logger()
    info = _read_information(dataset_folder)
    plans_name = request.plans_name or (info.plans_name if info else None)

    plans_name = plans_name or DEFAULT_PLANS_NAME
    follows_info = info is not None and info.plans_name == plans_name and (
        request.adapters is None or sorted(request.adapters) == sorted(info.adapters))
    if request.adapters:
        adapters = list(request.adapters)
    elif follows_info:
        adapters = list(info.adapters)
        log.info("adapters from %s: %s", INFERENCE_INFORMATION_FILE, "+".join(adapters))
    else:
        adapters = [_recommended_adapter(dataset_folder, plans_name)]
        log.info("adapter: %s (the plans' recommendation; run samunet_find_best to compare adapters)", adapters[0])
    checkpoint = request.checkpoint or (info.checkpoint if follows_info else DEFAULT_CHECKPOINT)
    configurations = []
    for adapter in adapters:
        folder = dataset_folder / model_folder_name(adapter, plans_name)
        if not folder.is_dir():
            raise TrainedModelError(f"{folder}: no trained model for adapter {adapter} with plans {plans_name}")
        available = folds_with_checkpoint(folder, checkpoint)
        if request.folds is None:
            # like nnU-Net: the cross-validation folds by default; fold_all only when it is all there is
            chosen = {f: p for f, p in available.items() if f != ALL_FOLD} or available
        else:
            missing = [f for f in request.folds if f not in available]
            if missing:
                raise TrainedModelError(f"{folder}: fold(s) {missing} have no checkpoint_{checkpoint}.safetensors "
                                        f"(found: {describe_checkpoints(folder)})")
            chosen = {f: available[f] for f in request.folds}
        if not chosen:
            raise TrainedModelError(f"{folder}: no trained folds found with checkpoint_{checkpoint} "
                                    f"({describe_checkpoints(folder)}); train first or pick another -chk")
        dataset_json = read_json(folder / DATASET_JSON_FILE)
        mirror, why = folds_mirror([path.parent for path in chosen.values()])
        labels = {str(k): v for k, v in dataset_json["labels"].items()}
        configurations.append(TrainedConfiguration(
            adapter, folder, Plans.load(folder / MODEL_PLANS_FILE), labels, dataset_json["file_ending"],
            len(dataset_json["channel_names"]), chosen, mirror, why))
        # mirroring is reported once, by the caller, who knows whether --disable-tta overrides it
        log.info("%s: fold(s) %s, checkpoint_%s", adapter, sorted(chosen), checkpoint)
    label_sets = {json.dumps([c.labels, c.plans.regions_class_order], sort_keys=True) for c in configurations}
    if len(label_sets) > 1:
        raise TrainedModelError(f"{dataset_folder}: the adapters {', '.join(adapters)} "
                                "were trained with different labels")
    steps, sigma = [], None
    if info is not None and not follows_info and info.changes_predictions:
        log.info("postprocessing in %s was decided for %s (plans %s), not for this selection: not applied",
                 INFERENCE_INFORMATION_FILE, "+".join(info.adapters), info.plans_name)
    if follows_info and request.use_postprocessing:
        steps, sigma = info.kept_postprocessing, info.smoothing_sigma
        if sigma:
            log.info("postprocessing (from %s): probability smoothing, sigma %.2f voxel(s)", INFERENCE_INFORMATION_FILE,
                     sigma)
        if steps:
            log.info("postprocessing (from %s): largest component of %s", INFERENCE_INFORMATION_FILE,
                     ", ".join(str(s.labels) for s in steps))
    return Selection(configurations, steps, checkpoint, sigma)


def load_networks(selection: Selection, device: torch.device, encoder_runtime: str | None = None) -> None:
    """Build each fold's adapter, load its checkpoint, fold the adaptation into plain weights, eval mode; the
    merged (frozen) encoders run through ``encoder_runtime`` (None: the plans' ``model.encoder_runtime``)."""
    from samunet.modeling.runtime import precision_policy
    from samunet.adapters import build_adapter
    from samunet.adapters.checkpoint import load_adapter_checkpoint
    from samunet.inference.fold_ensemble import FoldEnsemble, encoder_is_frozen, encoders_identical

    log = get_logger()
    for config in selection.configurations:
        config.networks, frozen = [], []
        base = base_weights_for(config)
        for fold, path in config.checkpoints.items():
            network = build_adapter(config.adapter, config.plans, checkpoint=base)
            load_adapter_checkpoint(network, path, expected={"fold": fold})
            frozen.append(encoder_is_frozen(network))
            network.merge()
            config.networks.append(network.to(device).eval())
        shared = all(frozen) and encoders_identical(config.networks)
        if shared and len(config.networks) > 1:
            log.info("%s: the folds share one frozen encoder: each slice is encoded once for all %d folds",
                     config.adapter, len(config.networks))
        config.ensemble = FoldEnsemble(config.networks, shared_encoder=shared).eval()
        runtime = encoder_runtime or config.plans.model.encoder_runtime
        policy = precision_policy(device, config.plans.training.precision)
        used = {m.use_encoder_runtime(runtime, policy) for m in (config.networks[:1] if shared else config.networks)}
        log.info("%s: encoder runs through %s", config.adapter, ", ".join(sorted(used)))


def base_weights_for(config: TrainedConfiguration) -> Path | None:
    """The base SAM weights to build ``config``'s adapters on, checked against the sha256 its checkpoints
    recorded before anything is built. The plans' explicit file when it exists; else a file of that name in
    ``$SAMUNET_CHECKPOINTS`` (a model trained or installed elsewhere); None: the backbone's default lookup
    (which names the file and where to put it when absent)."""
    from samunet.adapters.checkpoint import read_checkpoint_metadata
    from samunet.modeling.checkpoints import (
        CheckpointIntegrityError, CheckpointNotFoundError, checkpoints_folder, default_checkpoint_path, file_digest,
    )

    recorded = read_checkpoint_metadata(next(iter(config.checkpoints.values()))).get("base_checkpoint_sha256")
    backbone, explicit = config.plans.model.backbone, config.plans.model.checkpoint
    chosen: Path | None = None
    if explicit:
        chosen = Path(explicit).expanduser()
        if not chosen.is_file():
            by_name = checkpoints_folder() / chosen.name
            if not by_name.is_file():
                raise CheckpointNotFoundError(
                    f"{config.folder}: base weights {chosen.name} (backbone {backbone}, sha256 {recorded}) not found "
                    f"at {chosen} nor in {by_name.parent}; put that file in {by_name.parent} (set "
                    f"$SAMUNET_CHECKPOINTS to choose that folder)")
            get_logger().info("%s: base weights %s absent; using %s (same name)", config.adapter, chosen, by_name)
            chosen = by_name
    candidate = chosen if chosen is not None else default_checkpoint_path(backbone)
    if recorded and candidate is not None and candidate.is_file() and file_digest(candidate) != recorded:
        raise CheckpointIntegrityError(
            f"{candidate}: sha256 {file_digest(candidate)} differs from {recorded}, the base weights "
            f"{config.folder.name} was trained on (backbone {backbone}); put the right file there")
    return chosen
