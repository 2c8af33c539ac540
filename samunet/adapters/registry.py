"""Build an adapter by name, from the plans (``build_adapter``) or from parts (``build_adapter_from_parts``)."""
from __future__ import annotations

import os

from samunet.adapters.base import Adapter
from samunet.adapters.cnnhead import CnnHeadAdapter
from samunet.adapters.decoder import DecoderAdapter
from samunet.adapters.full import FullAdapter
from samunet.adapters.fusion import FusionAdapter
from samunet.adapters.loramednet import LoRaMedNetAdapter
from samunet.adapters.samed import SamedAdapter
from samunet.adapters.ssam import SSamAdapter
from samunet.core.adapter_defaults import default_adapter_config
from samunet.core.plans import PlansError, check_optional_fields

# AdapterConfig fields that only some adapters read (``config_fields`` of the classes that read them)
STRUCTURE_FIELDS = ("lora_rank", "head_width", "unet_widths", "fusion_stage", "deep_supervision")


def adapter_config_fields(cls: type[Adapter]) -> set[str]:
    """The structural AdapterConfig fields an adapter class reads (its bases' and mixins' included)."""
    return {f for klass in cls.__mro__ for f in vars(klass).get("config_fields", ())}


ADAPTER_CLASSES: dict[str, type[Adapter]] = {
    "ssam": SSamAdapter, "samed": SamedAdapter, "loramednet": LoRaMedNetAdapter,
    "cnnhead": CnnHeadAdapter, "decoder": DecoderAdapter, "full": FullAdapter, "fusion": FusionAdapter,
}


def build_adapter_from_parts(name: str, sam, num_classes: int, config=None, input_size: int | None = None,
                             in_channels: int = 3) -> Adapter:
    """An adapter around an already built ``sam`` (``samunet.modeling.build_sam``)."""
    if name not in ADAPTER_CLASSES:
        raise ValueError(f"unknown adapter '{name}'; known: {', '.join(ADAPTER_CLASSES)}")
    if input_size is not None and input_size != sam.backbone_info.input_size:
        raise ValueError(f"sam was built for input {sam.backbone_info.input_size}, not {input_size}")
    config = config if config is not None else default_adapter_config(name)
    cls = ADAPTER_CLASSES[name]
    if config.output not in cls.supported_outputs:
        raise PlansError(f"adapters.{name}.output {config.output!r} is not supported by the {name} adapter; "
                         f"it supports {', '.join(cls.supported_outputs)}")
    check_optional_fields(config, STRUCTURE_FIELDS, adapter_config_fields(cls), f"adapters.{name}",
                          f"the {name} adapter")
    return cls(sam, num_classes, in_channels, config)


def build_adapter(name: str, plans, checkpoint: str | os.PathLike | None = None,
                  adapter_checkpoint: str | os.PathLike | None = None, pretrained: bool = True) -> Adapter:
    """The adapter ``name`` for ``plans``: backbone, input size and attention layout from ``plans.model``,
    classes from ``plans.labels``, input channels from ``plans.packing``, hyper-parameters from
    ``plans.adapter_config(name)``.

    ``checkpoint``: base weights overriding ``plans.model.checkpoint`` (default: looked up by backbone name).
    ``adapter_checkpoint``: trained adapter weights to load (verified against the plans and backbone).
    """
    from samunet.modeling.build import build_sam
    from samunet.preprocessing.packing import packed_channel_count

    model = plans.model
    sam = build_sam(model.backbone, model.input_size, checkpoint if checkpoint is not None else model.checkpoint,
                    model.global_attention, pretrained=pretrained)
    in_channels = packed_channel_count(plans.packing.mode, plans.packing.num_channels)
    scheme = plans.label_scheme
    adapter = build_adapter_from_parts(name, sam, scheme.num_classes, plans.adapter_config(name), model.input_size,
                                       in_channels)
    if scheme.has_regions:
        try:
            adapter.use_region_outputs()
        except ValueError as e:
            raise PlansError(f"plans {plans.plans_name}: {e}") from None
    adapter.identity["plans_sha256"] = plans.sha256()
    adapter.identity["class_names"] = scheme.channel_names()
    if adapter_checkpoint is not None:
        from samunet.adapters.checkpoint import load_adapter_checkpoint

        load_adapter_checkpoint(adapter, adapter_checkpoint)
    return adapter
