"""Checkpoints of a training run: adapter weights (models' checkpoint module) plus the state needed to resume.

``checkpoint_<name>.safetensors`` + ``.json`` hold the adapter's trainable weights and metadata (what
prediction loads). For ``latest``, the optimizer, grad scaler, RNG state, epoch and history go in a separate
``checkpoint_latest_state_eNNNN.pt`` (a dict of tensors and plain numbers, loaded with ``weights_only=True``).
The state file is written first and named by its epoch; the adapter checkpoint's metadata names it; older
state files are deleted last. A kill at any moment leaves a matching (weights, state) pair on disk.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from samunet.utils.atomic import atomic_path
from samunet.utils.logs import get_logger

log = get_logger()

STATE_FILE_RE = re.compile(r"^checkpoint_latest_state_e(\d+)\.pt$")


class CheckpointError(RuntimeError):
    pass


def checkpoint_path(fold_folder: Path, name: str) -> Path:
    return fold_folder / f"checkpoint_{name}.safetensors"


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
    """Adapter-only checkpoint ``checkpoint_<name>`` (atomic, via the models engineer's checkpoint module)."""
    from samunet.adapters.checkpoint import save_adapter_checkpoint

    path = checkpoint_path(fold_folder, name)
    save_adapter_checkpoint(adapter, path, metadata)
    return path


def save_latest(adapter, fold_folder: Path, metadata: dict, optimizer: torch.optim.Optimizer,
                grad_scaler, history: dict, best_metric: float | None) -> Path:
    """``checkpoint_latest`` plus its resume state; see the module docstring for the write order."""
    epoch = int(metadata["epoch"])
    state_name = f"checkpoint_latest_state_e{epoch:04d}.pt"
    state = {
        "epoch": epoch,
        "iteration": int(metadata["iteration"]),
        "optimizer": optimizer.state_dict(),
        "grad_scaler": grad_scaler.state_dict() if grad_scaler is not None else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "history": history,
        "best_metric": best_metric,
    }
    with atomic_path(fold_folder / state_name) as tmp:
        torch.save(state, tmp)
    path = save_checkpoint(adapter, fold_folder, "latest", dict(metadata, training_state=state_name))
    for old in fold_folder.glob("checkpoint_latest_state_e*.pt"):
        if old.name != state_name and STATE_FILE_RE.match(old.name):
            old.unlink(missing_ok=True)
    return path


def read_metadata(path: Path) -> dict:
    """The JSON metadata next to an adapter checkpoint (clear error when missing or damaged)."""
    meta_path = path.with_suffix(".json")
    try:
        return json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: missing (the checkpoint {path.name} cannot be resumed without it)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_path}: damaged JSON ({e}); delete the fold folder's checkpoint_latest.* "
                              "and resume from an earlier copy, or start again without --continue") from None


def load_latest(adapter, fold_folder: Path, expected: dict) -> ResumeState:
    """Load ``checkpoint_latest`` into ``adapter`` and return the resume state. Clear errors for damaged files."""
    from samunet.adapters.checkpoint import load_adapter_checkpoint

    path = checkpoint_path(fold_folder, "latest")
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to continue from (train without --continue first)")
    metadata = read_metadata(path)
    state_name = metadata.get("training_state")
    if not state_name:
        raise CheckpointError(f"{path.with_suffix('.json')}: names no training state file; cannot resume")
    try:
        load_adapter_checkpoint(adapter, path, expected=expected)
    except Exception as e:  # the checkpoint module raises its own clear errors; keep them, add what to do
        raise CheckpointError(f"{path}: cannot be loaded ({e}); delete it to start again without --continue") from None
    state_path = fold_folder / state_name
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{state_path}: missing (named by {path.name}); cannot resume") from None
    except Exception as e:
        raise CheckpointError(f"{state_path}: corrupted or not a samunet training state ({type(e).__name__}: {e}); "
                              "delete checkpoint_latest.* to start again without --continue") from None
    if not isinstance(state, dict) or int(state.get("epoch", -1)) != int(metadata.get("epoch", -2)):
        raise CheckpointError(f"{state_path}: does not match {path.name} (epoch {state.get('epoch') if isinstance(state, dict) else '?'} "
                              f"vs {metadata.get('epoch')}); delete checkpoint_latest.* to start again")
    return ResumeState(
        epoch=int(state["epoch"]), iteration=int(state["iteration"]), optimizer=state["optimizer"],
        grad_scaler=state.get("grad_scaler"), torch_rng=state["torch_rng"], cuda_rng=state.get("cuda_rng"),
        history=state.get("history") or {}, best_metric=state.get("best_metric"), metadata=metadata)


def restore_rng(state: ResumeState) -> None:
    torch.set_rng_state(state.torch_rng)
    if state.cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state.cuda_rng)
