"""The ``Adapter`` interface (documentation/architecture.md) and what every adapter shares.

An adapter owns a ``Sam`` (``samunet.modeling.build_sam``), decides which of its parameters train, and
maps a batch of [0, 1] images (B, Cin, H, W) to logits (B, K, H, W): optional learned 1x1 channel mixer
(Cin != 3), resize to the model's input size, backbone normalisation, encoder, adapter-specific decoding,
logits resized back to (H, W) and returned in float32.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from samunet.modeling.input_normalizer import InputNormalizer

OUTPUT_KINDS = ("softmax", "sigmoid_per_label")


class InputMixer(nn.Conv2d):
    """Cin -> 3 channels, 1x1, starting as the channel mean (so a [0, 1] image stays in [0, 1])."""

    def __init__(self, in_channels: int) -> None:
        super().__init__(in_channels, 3, 1)
        nn.init.constant_(self.weight, 1.0 / in_channels)
        nn.init.zeros_(self.bias)


class Adapter(nn.Module):
    name = "adapter"
    # True where forward_from_embeddings reads the images' pixels (fusion): training then feeds it the images under
    # the same flips as the embeddings, with intensity augmentation of their own
    uses_images_after_encoder = False
    supported_outputs: tuple[str, ...] = OUTPUT_KINDS

    def __init__(self, sam: nn.Module, num_classes: int, in_channels: int, config, output_kind: str) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts background and must be >= 2, got {num_classes}")
        if output_kind not in self.supported_outputs:
            raise ValueError(f"adapter '{self.name}' supports output {self.supported_outputs}, not '{output_kind}'")
        info = sam.backbone_info
        self.sam = sam
        self.backbone = info.name
        self.input_size = info.input_size
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.config = config
        self.output_kind = output_kind
        self.num_outputs = num_classes if output_kind == "softmax" else num_classes - 1
        self.normalizer = InputNormalizer(info.name)
        self.input_mixer = InputMixer(in_channels) if in_channels != 3 else None
        self.merged = False
        self.encoder_runner = None  # a frozen encoder's inference runtime (use_encoder_runtime); None: eager
        # regions (samunet.core.labels): each sigmoid output is an independent region, not an exclusive label
        self.region_outputs = False
        self.identity = {  # what a checkpoint of this adapter must match (checkpoint.py)
            "adapter": self.name, "backbone": info.name, "base_checkpoint_sha256": info.checkpoint_sha256,
            "input_size": info.input_size, "global_attention": info.global_attention,
            "num_classes": num_classes, "in_channels": in_channels, "output_kind": output_kind,
            "plans_sha256": None, "class_names": None,
        }

    # --- which parameters train -------------------------------------------------------------------------
    def _set_trainable(self, parameters) -> None:
        self.requires_grad_(False)
        for p in parameters:
            p.requires_grad_(True)
        if self.input_mixer is not None:
            self.input_mixer.requires_grad_(True)
        self.train(self.training)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True):
        super().train(mode)
        # BatchNorm (TinyViT) keeps its pretrained statistics: small CPU batches would wreck them
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        # a frozen encoder stays in inference mode (its output is the same: no dropout, BatchNorm frozen above), so
        # the embedding cache needs no mode switch per batch: each switch re-derived TinyViT's attention biases,
        # 6 ms twice per batch with a miss (Hippocampus: 13 s of a 210 s profile)
        if mode and self.encoder_is_frozen:
            self.sam.image_encoder.eval()
        return self

    @property
    def encoder_is_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.sam.image_encoder.parameters())

    @property
    def supports_embedding_cache(self) -> bool:
        """True when nothing before the image embedding trains: embeddings may be computed once and reused."""
        return self.input_mixer is None and self.encoder_is_frozen

    # --- forward ----------------------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) in [0, 1] -> (B, 3, S, S) as the encoder expects."""
        if images.dim() != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(images.shape)}")
        if images.shape[1] != self.in_channels:
            if not (self.in_channels == 3 and images.shape[1] == 1):
                raise ValueError(f"adapter expects {self.in_channels} input channels, got {images.shape[1]}")
            images = images.expand(-1, 3, -1, -1)  # one channel: the "repeat" packing
        x = self.input_mixer(images) if self.input_mixer is not None else images
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            shrink = x.shape[-2] > self.input_size or x.shape[-1] > self.input_size
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=shrink)
        return self.normalizer(x)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = self.prepare(images)
        return self.encoder_runner(x) if self.encoder_runner is not None else self.sam.image_encoder(x)

    def use_encoder_runtime(self, runtime: str, policy) -> str:
        """Run the (frozen) encoder through ``runtime`` (``samunet.modeling.encoder_runtime``) from now on;
        returns the runtime used: ``eager`` where the requested one cannot run here (said in the log)."""
        from samunet.modeling.encoder_runtime import EncoderRunner
        from samunet.modeling.encoder_runtime_choice import usable_runtime

        if any(p.requires_grad for p in self.sam.image_encoder.parameters()):
            raise ValueError(f"adapter '{self.name}' trains its encoder: it has no inference runtime")
        runtime = usable_runtime(runtime, policy.device_type)
        self.encoder_runner = None if runtime == "eager" else EncoderRunner(self.sam.image_encoder, runtime, policy)
        return runtime

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, C, h, w) -> low-resolution logits (B, K, h', w')."""
        raise NotImplementedError

    def forward_from_embeddings(self, embeddings: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, H, W) from the embeddings of ``images`` (B, Cin, H, W) in [0, 1], under the same flips.
        Adapters that decode from the embedding alone read only the images' size."""
        logits = self.decode(embeddings)
        out_hw = tuple(images.shape[-2:])
        if tuple(logits.shape[-2:]) != out_hw:
            logits = F.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
        return logits.float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_from_embeddings(self.encode(images), images)

    def use_region_outputs(self) -> None:
        """Make each sigmoid output an independent region (BraTS-style overlapping labels)."""
        if self.output_kind != "sigmoid_per_label":
            raise ValueError(f"regions need one sigmoid per region: adapter '{self.name}' has output "
                             f"'{self.output_kind}' (set output to sigmoid_per_label in its plans entry)")
        self.region_outputs = True
        self.identity["output_kind"] = "sigmoid_per_region"

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, num_classes, H, W), summing to 1 over classes; with region outputs (B, regions, H, W) sigmoids.

        sigmoid_per_label: p_label = sigmoid, p_background = 1 - max_label sigmoid, normalised. Its arg-max is
        S-SAM's rule (background where every label's sigmoid < 0.5, else the highest label); with one label it
        is exactly (1 - p, p)."""
        logits = logits.float()
        if self.output_kind == "softmax":
            return torch.softmax(logits, dim=1)
        p = torch.sigmoid(logits)
        if self.region_outputs:
            return p
        background = 1.0 - p.max(dim=1, keepdim=True).values
        joint = torch.cat([background, p], dim=1)
        return joint / joint.sum(dim=1, keepdim=True).clamp_min(1e-12)

    # --- weights ----------------------------------------------------------------------------------------
    def trainable_state_dict(self) -> "OrderedDict[str, torch.Tensor]":
        if self.merged:
            raise RuntimeError("merge() folded the adaptation into plain weights: save before merging")
        return OrderedDict((n, p.detach()) for n, p in self.named_parameters() if p.requires_grad)

    @torch.no_grad()
    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.merged:
            raise RuntimeError("load the checkpoint before merge()")
        own = dict(self.named_parameters())
        expected = {n for n, p in own.items() if p.requires_grad}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise KeyError(f"adapter '{self.name}' weights do not match: missing {missing[:5]}"
                           f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                           f"{' ...' if len(unexpected) > 5 else ''}")
        for name in sorted(expected):
            if tuple(state[name].shape) != tuple(own[name].shape):
                raise ValueError(f"adapter '{self.name}' weight {name}: shape {tuple(state[name].shape)}, "
                                 f"expected {tuple(own[name].shape)}")
        for name in expected:
            own[name].copy_(state[name].to(own[name].dtype))
        self.train(self.training)  # TinyViT re-derives its cached attention biases on mode changes

    def _merge_layers(self) -> None:
        """Fold adapter layers into plain ones (subclasses with such layers override)."""

    @torch.no_grad()
    def merge(self) -> "Adapter":
        """Inference form: adaptation folded into plain weights (same outputs, no extra cost), all frozen."""
        if not self.merged:
            self._merge_layers()
            self.merged = True
        self.requires_grad_(False)
        return self.eval()

    def parameter_counts(self) -> dict[str, int]:
        """Trainable and total parameters. A singular-value-adapted layer's frozen weight is held as U, s, V
        buffers; total counts it as the weight matrix it represents."""
        from samunet.adapters.svd_linear import svd_layers

        total = sum(p.numel() for p in self.parameters())
        total += sum(m.u.shape[0] * m.vh.shape[1] for _, m in svd_layers(self))
        return {"trainable": sum(p.numel() for p in self.trainable_parameters()), "total": total}
