"""Several trained folds behind the Adapter interface: ``forward`` returns their mean class probabilities.

When every fold keeps the image encoder frozen (decoder, cnnhead, ... adapters) on the same base weights,
the encoder is identical across folds: each window is encoded once and only the folds' decoders run
(5 folds: about 5x less encoder work, which dominates the cost). Averaging per window is the same as
averaging whole-volume predictions, because Gaussian blending and mirroring are linear in the probabilities.
"""
from __future__ import annotations

import torch
from torch import nn


def encoder_is_frozen(adapter: nn.Module) -> bool:
    """Call before ``merge()`` (merging freezes everything): True when nothing up to the embedding trains."""
    return bool(getattr(adapter, "supports_embedding_cache", False))


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def encoders_identical(adapters: list[nn.Module]) -> bool:
    """Same image encoder weights and no learned input mixer in every adapter (checked tensor by tensor)."""
    first = adapters[0]
    if any(getattr(a, "input_mixer", None) is not None for a in adapters):
        return False
    return all(_same_weights(first.sam.image_encoder, a.sam.image_encoder) for a in adapters[1:])


class FoldEnsemble(nn.Module):
    """Mean probabilities of ``members``; ``probabilities`` is the identity so the volume predictor can use it."""

    def __init__(self, members: list[nn.Module], shared_encoder: bool = False) -> None:
        super().__init__()
        if not members:
            raise ValueError("FoldEnsemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.name = members[0].name
        self.shared_encoder = shared_encoder and len(members) > 1
        if self.shared_encoder:
            # one encoder module for all: the duplicates' memory is freed
            for member in members[1:]:
                member.sam.image_encoder = members[0].sam.image_encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_from_embeddings(self.encode(images), images)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The shared embedding (B, C, h, w), or each member's stacked (M, B, C, h, w)."""
        if self.shared_encoder or len(self.members) == 1:
            return self.members[0].encode(images)
        return torch.stack([m.encode(images) for m in self.members])

    def forward_from_embeddings(self, embeddings: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Mean probabilities from ``encode``'s output (so ``probabilities`` stays the identity)."""
        per_member = embeddings if embeddings.dim() == 5 else [embeddings] * len(self.members)
        total = None
        for member, member_embeddings in zip(self.members, per_member):
            probs = member.probabilities(member.forward_from_embeddings(member_embeddings, images)).float()
            total = probs if total is None else total + probs
        return total / len(self.members)

    def probabilities(self, mean_probabilities: torch.Tensor) -> torch.Tensor:
        return mean_probabilities
