"""Optional on-disk cache of S-SAM's SVD factors, keyed by the base checkpoint's sha256.

The SVD of ViT-B's 50 layers takes 15 s or more on a 2-core CPU, at every ``ssam`` build (training start,
each prediction run). Set ``SAMUNET_SVD_CACHE=/some/folder`` to keep the factors there
(``<sha256>_svd.safetensors``, about 450 MB for ViT-B, 40 MB for LiteMedSAM). Off by default; random-init
backbones (no sha256) are never cached. A damaged cache file is ignored and rewritten.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from samunet.utils.atomic import atomic_path

SVD_CACHE_ENV = "SAMUNET_SVD_CACHE"
log = logging.getLogger("samunet")


def cache_path(checkpoint_sha256: str | None) -> Path | None:
    folder = os.environ.get(SVD_CACHE_ENV)
    if not folder or not checkpoint_sha256:
        return None
    return Path(folder).expanduser() / f"{checkpoint_sha256}_svd.safetensors"


def load_factors(path: Path | None) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None:
    if path is None or not path.is_file():
        return None
    try:
        flat = load_file(str(path))
    except Exception as e:  # a damaged cache must not stop training: recompute
        log.warning("%s: unreadable SVD cache (%s); recomputing", path, e)
        return None
    names = {k.rsplit(".", 1)[0] for k in flat}
    return {n: (flat[f"{n}.u"], flat[f"{n}.s"], flat[f"{n}.vh"]) for n in names}


def save_factors(path: Path, layers) -> None:
    """``layers``: (name, module with u / s / vh buffers) pairs."""
    flat = {}
    for name, module in layers:
        flat.update({f"{name}.u": module.u.contiguous(), f"{name}.s": module.s.contiguous(),
                     f"{name}.vh": module.vh.contiguous()})
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp))
    log.info("SVD factors cached in %s", path)
