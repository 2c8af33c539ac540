"""Adapter-only checkpoints: trainable tensors as safetensors plus a JSON sidecar saying what they belong to.

``checkpoint_best.safetensors`` holds only what trained (a ViT-B ``ssam`` checkpoint is about 1.3 MB);
``checkpoint_best.json`` records the adapter, backbone, base checkpoint sha256, input size, plans sha256,
class names, samunet version, the safetensors file's sha256 and any caller metadata (epoch, ...).
Loading refuses, with one clear line, a checkpoint of another adapter / backbone / base weights / plans,
and a damaged file. Both files are written atomically.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import samunet
from samunet.core.errors import SamunetUserError
from samunet.modeling.checkpoints import file_digest
from samunet.utils.atomic import atomic_path, write_json

FORMAT = "samunet-adapter-checkpoint"
FORMAT_VERSION = 1
EXTRA_PREFIX = "extra/"
# identity fields compared on load (a None on either side means "not known": not compared)
CHECKED_FIELDS = ("adapter", "backbone", "base_checkpoint_sha256", "input_size", "global_attention", "num_classes",
                  "in_channels", "output_kind", "plans_sha256", "class_names", "lora_rank", "head_width")


class AdapterCheckpointError(SamunetUserError, ValueError):
    pass


def checkpoint_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights .safetensors, metadata .json) for ``x``, ``x.safetensors`` or ``x.json``."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_adapter_checkpoint(adapter, path: str | os.PathLike, metadata: dict | None = None,
                            extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the adapter's trainable tensors (+ optional ``extra_tensors``) and the sidecar; returns the
    weights path. ``metadata`` (JSON-able) is stored alongside; it may not contradict the adapter's identity."""
    weights_path, meta_path = checkpoint_files(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in adapter.trainable_state_dict().items()}
    for key, value in (extra_tensors or {}).items():
        tensors[EXTRA_PREFIX + key] = value.detach().to("cpu").contiguous()
    identity = dict(adapter.identity)
    for key, value in (metadata or {}).items():
        if key in identity and identity[key] is not None and value is not None and value != identity[key]:
            raise AdapterCheckpointError(f"metadata '{key}'={value!r} contradicts the adapter ({identity[key]!r})")
        if key in identity and identity[key] is None:
            identity[key] = value
    with atomic_path(weights_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    sidecar = {**(metadata or {}), **identity, "format": FORMAT, "format_version": FORMAT_VERSION,
               "samunet_version": samunet.__version__, "num_tensors": len(tensors),
               "weights_file": weights_path.name, "weights_sha256": file_digest(weights_path)}
    write_json(sidecar, meta_path)
    return weights_path


def read_checkpoint_metadata(path: str | os.PathLike) -> dict:
    weights_path, meta_path = checkpoint_files(path)
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise AdapterCheckpointError(f"{meta_path}: metadata file missing (it must sit next to "
                                     f"{weights_path.name})") from None
    except json.JSONDecodeError as e:
        raise AdapterCheckpointError(f"{meta_path}: damaged metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise AdapterCheckpointError(f"{meta_path}: not a samunet adapter checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise AdapterCheckpointError(f"{meta_path}: checkpoint format {meta.get('format_version')}, this samunet "
                                     f"reads {FORMAT_VERSION}")
    return meta


def _read_tensors(weights_path: Path, meta: dict) -> dict[str, torch.Tensor]:
    if not weights_path.is_file():
        raise AdapterCheckpointError(f"{weights_path}: weights file missing")
    if meta.get("weights_sha256") and file_digest(weights_path) != meta["weights_sha256"]:
        raise AdapterCheckpointError(f"{weights_path}: corrupted (sha256 differs from the one recorded when it "
                                     "was written)")
    try:
        return load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise AdapterCheckpointError(f"{weights_path}: unreadable safetensors file ({e})") from None


def load_adapter_checkpoint(adapter, path: str | os.PathLike, expected: dict | None = None) -> dict:
    """Verify and load into ``adapter``; returns the metadata. ``expected``: extra metadata values that must
    match (e.g. ``{"fold": 0}``)."""
    weights_path, meta_path = checkpoint_files(path)
    meta = read_checkpoint_metadata(weights_path)
    wanted = {k: adapter.identity.get(k) for k in CHECKED_FIELDS}
    wanted.update(expected or {})
    for key, value in wanted.items():
        stored = meta.get(key)
        if value is not None and stored is not None and stored != value:
            raise AdapterCheckpointError(f"{meta_path}: {key} is {stored!r}, expected {value!r} "
                                         f"(this checkpoint belongs to another {_what(key)})")
        if value is not None and stored is None and key in (expected or {}):
            raise AdapterCheckpointError(f"{meta_path}: records no {key} (expected {value!r})")
    tensors = _read_tensors(weights_path, meta)
    weights = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    try:
        adapter.load_trainable_state_dict(weights)
    except (KeyError, ValueError) as e:
        raise AdapterCheckpointError(f"{weights_path}: {e.args[0] if e.args else e}") from None
    return meta


def read_extra_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``extra_tensors`` saved with a checkpoint (e.g. optimizer moments), verified like the weights."""
    weights_path, _ = checkpoint_files(path)
    tensors = _read_tensors(weights_path, read_checkpoint_metadata(weights_path))
    return {k[len(EXTRA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}


def _what(key: str) -> str:
    return {"adapter": "adapter", "backbone": "backbone", "base_checkpoint_sha256": "set of base weights",
            "plans_sha256": "plans", "class_names": "label set", "num_classes": "label set"}.get(key, "configuration")
