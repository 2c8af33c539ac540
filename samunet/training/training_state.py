"""Checkpoints of a training run: adapter weights for prediction, and one file with everything to resume.

``checkpoint_<name>.safetensors`` + ``.json`` (latest / best / final) hold the adapter's trainable weights
and metadata, written by ``samunet.adapters.checkpoint``; prediction loads these.

Resuming reads only ``checkpoint_latest_state.pt``: the trainable weights again, optimizer, grad scaler,
RNG state, epoch, iteration and history, as one ``torch.save`` dict of tensors and plain values (loaded with
``weights_only=True``) written atomically. One file cannot be caught half-updated, whereas a kill between
the two files of an adapter checkpoint could leave weights and sidecar from different epochs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from samunet.core.errors import SamunetUserError
from samunet.core.layout import checkpoint_file
from samunet.core.names import TRAINING_STATE_FILE
from samunet.utils.atomic import atomic_path
from samunet.utils.logs import get_logger

log = get_logger()



class CheckpointError(SamunetUserError, RuntimeError):
    pass


def checkpoint_path(fold_folder: Path, name: str) -> Path:
    return checkpoint_file(fold_folder, name)


@dataclass
class ResumeState:
    epoch: int  # epochs completed
    iteration: int  # optimizer steps taken
    optimizer: dict
    grad_scaler: dict | None
    torch_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None
    history: dict
    best_metric: float | None
    metadata: dict


def save_checkpoint(adapter, fold_folder: Path, name: str, metadata: dict) -> Path:
    """Adapter-only checkpoint ``checkpoint_<name>`` (atomic, via ``samunet.adapters.checkpoint``)."""
    from samunet.adapters.checkpoint import save_adapter_checkpoint

    path = checkpoint_path(fold_folder, name)
    save_adapter_checkpoint(adapter, path, metadata)
    return path


def save_latest(adapter, fold_folder: Path, metadata: dict, optimizer: torch.optim.Optimizer,
                grad_scaler, history: dict, best_metric: float | None) -> Path:
    """The resume state (atomic, one file), then ``checkpoint_latest`` for prediction."""
    state = {
        "metadata": metadata,
        "weights": {k: v.detach().to("cpu").clone() for k, v in adapter.trainable_state_dict().items()},
        "epoch": int(metadata["epoch"]),
        "iteration": int(metadata["iteration"]),
        "optimizer": optimizer.state_dict(),
        "grad_scaler": grad_scaler.state_dict() if grad_scaler is not None else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "history": history,
        "best_metric": best_metric,
    }
    with atomic_path(fold_folder / TRAINING_STATE_FILE) as tmp:
        torch.save(state, tmp)
    return save_checkpoint(adapter, fold_folder, "latest", metadata)


def load_latest(adapter, fold_folder: Path, expected: dict) -> ResumeState:
    """Load the resume state into ``adapter``; clear errors for a missing, damaged or foreign file."""
    path = fold_folder / TRAINING_STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing, so this fold cannot be resumed; "
                              "start again without --continue") from None
    except Exception as e:
        raise CheckpointError(f"{path}: corrupted or not a samunet training state ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); "
                              "delete it to start again without --continue") from None
    if not isinstance(state, dict) or not {"metadata", "weights", "optimizer", "epoch"} <= set(state):
        raise CheckpointError(f"{path}: not a samunet training state; delete it to start again without --continue")
    metadata = state["metadata"]
    for key, value in expected.items():
        if metadata.get(key) != value:
            raise CheckpointError(f"{path}: was written for {key}={metadata.get(key)!r}, this run has {value!r}; "
                                  "resume with the same adapter and plans, or start again without --continue")
    try:
        adapter.load_trainable_state_dict(state["weights"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: weights do not fit this adapter ({e})") from None
    return ResumeState(
        epoch=int(state["epoch"]), iteration=int(state["iteration"]), optimizer=state["optimizer"],
        grad_scaler=state.get("grad_scaler"), torch_rng=state["torch_rng"], cuda_rng=state.get("cuda_rng"),
        history=state.get("history") or {}, best_metric=state.get("best_metric"), metadata=metadata)


def restore_rng(state: ResumeState) -> None:
    torch.set_rng_state(state.torch_rng)
    if state.cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state.cuda_rng)
