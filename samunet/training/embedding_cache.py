"""Cached image embeddings for adapters whose encoder is frozen (``cache_embeddings`` in the plans).

The encoder is the expensive part of a SAM forward pass; when nothing before the embedding trains, its
output for a given input never changes, so each distinct input is encoded once and reused. Entries are
keyed by the input's content (a hash of its bytes), so the same cache serves training batches and the
validation predictor, mirrored inputs included. The training inputs are kept to a finite set for this (see
``data_loader``: fixed windows, augmentation as a fixed set of variants per window), so the cache
fills up during the first epochs and later steps only run the decoder; validation slices are encoded at the
first validation only. Entries are float16 on the CPU, up to ``max_bytes``; beyond that, misses are encoded
but not kept.
"""
from __future__ import annotations

import hashlib
import time

import numpy as np
import psutil
import torch
from torch import nn

from samunet.modeling.runtime import PrecisionPolicy
from samunet.preprocessing.grid_symmetry import apply_symmetries
from samunet.modeling.specs import EMBEDDING_CACHE_RAM_SHARE
from samunet.utils.logs import get_logger

log = get_logger()

def default_cache_bytes() -> int:
    return int(psutil.virtual_memory().available * EMBEDDING_CACHE_RAM_SHARE)


class EmbeddingCache:
    def __init__(self, adapter: nn.Module, device: torch.device, max_bytes: int | None = None,
                 policy: PrecisionPolicy | None = None):
        self.adapter, self.device = adapter, device
        self.max_bytes = default_cache_bytes() if max_bytes is None else int(max_bytes)
        self.policy = policy or PrecisionPolicy(device.type, None, False)
        self.store: dict[bytes, torch.Tensor] = {}
        self.bytes = 0
        self.hits = self.misses = 0
        self.encode_seconds = 0.0
        self._warned_full = False

    @torch.no_grad()
    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        # the frozen encoder is in inference mode whatever the adapter's (Adapter.train keeps it there)
        with self.policy.autocast():
            return self.adapter.encode(images.to(self.device)).float()

    def embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, C, h, w) float32 on the device for ``images`` (B, Cin, H, W) in [0, 1]."""
        keys = [content_key(image) for image in images]
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh = {}
        if missing:
            started = time.perf_counter()
            encoded = self._encode(images[missing])
            self.encode_seconds += time.perf_counter() - started
            # rounded like the stored copies, so results do not depend on what was cached (resume is exact)
            encoded = encoded.to(torch.float16)
            for i, emb in zip(missing, encoded):
                fresh[i] = emb.to(torch.float32)
                self._keep(keys[i], emb)
        return torch.stack([fresh[i] if i in fresh else self.store[k].to(self.device, torch.float32)
                            for i, k in enumerate(keys)])

    def _keep(self, key: bytes, embedding: torch.Tensor) -> None:
        size = embedding.numel() * 2
        if self.bytes + size > self.max_bytes:
            if not self._warned_full:
                log.info("Embedding cache full (%.1f GiB, %d entries): further inputs are encoded every time",
                         self.bytes / 1024**3, len(self.store))
                self._warned_full = True
            return
        self.store[key] = embedding.detach().to("cpu")
        self.bytes += size

    @property
    def full(self) -> bool:
        """Whether an input was turned away for lack of room (it is encoded again each time it is seen)."""
        return self._warned_full

    def seconds_per_encode(self) -> float | None:
        return self.encode_seconds / self.misses if self.misses else None

    def summary(self) -> str:
        total = max(1, self.hits + self.misses)
        return f"{len(self.store)} cached embeddings ({self.bytes / 1024**3:.2f} GiB), hit rate {self.hits / total:.0%}"


def content_key(image: torch.Tensor) -> bytes:
    """Identity of one input: its dtype, shape and bytes, hashed."""
    array = np.ascontiguousarray(image.detach().to("cpu").numpy())
    digest = hashlib.blake2b(array.tobytes(), digest_size=16)
    digest.update(str((array.dtype, array.shape)).encode())
    return digest.digest()


class CachedEncoderAdapter(nn.Module):
    """The adapter with its frozen encoder served from the cache; used by validation (Adapter interface)."""

    def __init__(self, adapter: nn.Module, cache: EmbeddingCache):
        super().__init__()
        self.adapter = adapter
        self.cache = cache
        self.name = adapter.name
        self.output_kind = adapter.output_kind

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.cache.embeddings(images)

    def forward_from_embeddings(self, embeddings: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return self.adapter.forward_from_embeddings(embeddings, images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_from_embeddings(self.encode(images), images)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return self.adapter.probabilities(logits)


class EmbeddingHead(nn.Module):
    """The trainable part after the embedding, as a module (DDP wraps this one in cached mode)."""

    def __init__(self, adapter: nn.Module):
        super().__init__()
        self.adapter = adapter

    def forward(self, embeddings: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return self.adapter.forward_from_embeddings(embeddings, images)


def head_inputs(cache: EmbeddingCache, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """What the trainable part after the embedding gets for a cached-mode batch: (embeddings, images).

    The loader hands over the inputs as encoded (the cache's keys) and the labels already under each sample's
    grid symmetry; the embeddings take that symmetry here. ``branch_images`` (fusion: the images the U-Net sees)
    carry it from the loader, with their own intensity augmentation; without them the images only give the size."""
    embeddings = apply_symmetries(cache.embeddings(batch["images"]), batch["grid_symmetries"])
    return embeddings, batch.get("branch_images", batch["images"])
