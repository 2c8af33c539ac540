"""The plans: every decision samunet makes about a dataset, typed, versioned, JSON, human-editable.

Each section carries a one-line ``reason`` saying why the planner chose it. Users may edit
``plans.json``; ``samunet_plan`` keeps an edited file unless ``--overwrite`` is given.

Array conventions (shared by preprocessing, training and inference):
- Volumes are numpy arrays in SimpleITK order (z, y, x); spacings are in the same order.
- ``slicing.transpose`` moves the slicing axis first; preprocessed images are (C, S, H, W) float32
  and labels (S, H, W) uint8/int16, in the transposed, cropped, resampled space.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from samunet.core.errors import SamunetUserError
from samunet.core.labels import IGNORE_NAME, LabelScheme
from samunet.core.records import VersionedRecord

# 2: every field has one consumer; removed slicing.axis (= transpose[0]), crop.margin (folded into patch_size by
# the planner), channel_names (normalization[i].name), edited_by_user; AdapterConfig defaults moved to
# core/adapter_defaults.py. 3: lora_rank, head_width, focal_alpha, focal_gamma and poly_power are null where the
# adapter, loss or schedule does not read them (and refused when set there)
PLANS_SCHEMA_VERSION = 3

# what replaces spatial augmentation when cached embeddings fix the training inputs (preprocessing/grid_symmetry.py)
CACHED_AUGMENTATIONS = ("grid", "exact_mirrors", "none")
# a forward pass without gradients costs about a third of a training step (forward + backward of about twice the
# forward); what a predicted slice pays for the trainable part
FORWARD_SHARE_OF_STEP = 1.0 / 3.0

T = TypeVar("T")


class PlansError(SamunetUserError, KeyError):
    """The plans lack what a command asks of them."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def named_choice(table: Mapping[str, T], name: str, field_name: str) -> T:
    """``table[name]`` for a name read from the plans field ``field_name`` (e.g. ``adapters.samed.loss``); an unknown
    name is a one-line error naming the field and the known names."""
    if name not in table:
        raise PlansError(f"{field_name} {name!r} is unknown; known: {', '.join(sorted(table))}")
    return table[name]


def check_optional_fields(config, optional, used, where: str, reader: str) -> None:
    """Fields in ``optional`` mean something only to some readers (an adapter, a loss, a schedule): they must be
    set where ``reader`` reads them (``used``) and null where it does not, so no value in the plans is ignored."""
    for name in optional:
        value = getattr(config, name)
        if name in used and value is None:
            raise PlansError(f"{where}.{name} is null, but {reader} needs it")
        if name not in used and value is not None:
            raise PlansError(f"{where}.{name} is {value!r}, but {reader} does not use it; set it to null")


@dataclass
class SlicingPlan:
    transpose: list[int]  # forward transpose of the (z, y, x) volume; slicing axis first
    mode: str  # "all" | "foreground" | "max_slice"
    background_fraction: float  # mode "foreground": share of background-only slices kept (sampled)
    reason: str = ""

    @property
    def axis(self) -> int:
        """The slicing axis in the original (z, y, x) array."""
        return self.transpose[0]


@dataclass
class CropPlan:
    crop_to_nonzero: bool
    patch_size: list[int]  # in-plane (H, W) in preprocessed pixels; covers the foreground with a margin
    reason: str = ""


@dataclass
class ResamplingPlan:
    target_spacing: list[float]  # (S, H, W) spacing after transpose; S is kept as is (2D slices)
    image_order: int = 3  # spline order for images
    label_order: int = 0  # labels: nearest neighbour on the label map (exact when no resampling happens)
    reason: str = ""


@dataclass
class ChannelNormalization:
    channel: int
    name: str  # channel name from dataset.json
    scheme: str  # "ct" | "zscore" | "rgb" | "none"
    use_nonzero_mask: bool = False
    clip_low: float | None = None  # ct: foreground 0.5 percentile
    clip_high: float | None = None  # ct: foreground 99.5 percentile
    mean: float | None = None  # ct: foreground mean
    std: float | None = None  # ct: foreground std
    reason: str = ""


@dataclass
class ChannelPackingPlan:
    # "repeat" (1 channel -> 3) | "neighbours" (2.5D: slices s-1, s, s+1) | "mix" (learned 1x1, >3 channels)
    # | "direct" (3 channels, e.g. RGB)
    mode: str
    num_channels: int  # channels in the preprocessed image
    reason: str = ""


@dataclass
class ModelPlan:
    backbone: str  # one of BACKBONE_NAMES
    input_size: int  # model input side, a multiple of the backbone's size_multiple (modeling.specs)
    adapter: str  # recommended adapter, one of ADAPTER_NAMES
    checkpoint: str | None = None  # base weights; None: look up by backbone name
    global_attention: bool = False  # True: S-SAM layout (global attention in every block, no windows)
    # how a frozen encoder runs (one of names.ENCODER_RUNTIMES); plans made before the field ran it eagerly
    encoder_runtime: str = "eager"
    reason: str = ""
    adapter_reason: str = ""
    encoder_runtime_reason: str = ""


@dataclass
class AdapterConfig:
    """Per-adapter hyper-parameters (from each adapter's paper, see documentation/adapters.md); the defaults are
    one table, ``core/adapter_defaults.py``. Names (optimizer, lr_schedule, loss) are looked up in the training
    registries, which list the known ones on an unknown name. Overridable from the command line."""

    optimizer: str  # "adamw" | "adam" | "sgd" (training/optimizers.py)
    learning_rate: float
    weight_decay: float
    betas: list[float] | None  # adam / adamw (null for sgd)
    lr_schedule: str  # "poly" | "constant" (training/lr_schedule.py)
    warmup_iterations: int  # linear warm-up before the schedule
    poly_power: float | None  # "poly" schedule (null otherwise)
    loss: str  # "dice_ce" (softmax output) | "dice_focal" (sigmoid_per_label output) (training/losses.py)
    loss_weights: list[float]  # (ce or focal, dice)
    focal_alpha: float | None  # "dice_focal" loss (null otherwise)
    focal_gamma: float | None  # "dice_focal" loss (null otherwise)
    lora_rank: int | None  # LoRA adapters (samed, loramednet; null otherwise)
    head_width: int | None  # CNN head adapters (cnnhead, loramednet; null otherwise): widths start here
    cache_embeddings: bool  # frozen encoder (decoder, cnnhead): run it once per slice and reuse
    output: str  # "softmax": one mask per class incl. background | "sigmoid_per_label"
    # fusion adapter (null otherwise): the U-Net's width per stage (stage s has stride 2**s) and the stage where the
    # frozen embedding joins (the planner matches its grid to the embedding's)
    unet_widths: list[int] | None = None
    fusion_stage: int | None = None
    # fusion adapter (null otherwise): also train on the logits of coarser decoder stages (nnU-Net's deep supervision)
    deep_supervision: bool | None = None
    reason: str = ""


@dataclass
class AugmentationPlan:
    rotation_degrees: float = 15.0
    scale_range: list[float] = field(default_factory=lambda: [0.85, 1.25])
    elastic: bool = False
    brightness: float = 0.25  # multiplicative range +-
    contrast: float = 0.25
    gamma_range: list[float] = field(default_factory=lambda: [0.7, 1.5])
    noise_std: float = 0.05
    mirror_axes: list[int] = field(default_factory=lambda: [0, 1])  # in-plane axes (H, W); also test-time mirroring
    # cached embeddings (frozen encoder): one of CACHED_AUGMENTATIONS; plans written before the field mirrored
    # exactly, so that stays the default when it is missing
    cached_augmentation: str = "exact_mirrors"
    # cached embeddings: augmented variants of each window, each encoded once (1: the window as it is); variant 0
    # is the plain window, the others rotate, scale and change intensity by the ranges above (a fixed draw each)
    cached_variants: int = 1
    reason: str = ""


@dataclass
class TrainingPlan:
    batch_size: int
    epochs: int
    iterations_per_epoch: int
    validate_every: int  # epochs between full-3D validations
    foreground_oversample: float  # share of each batch forced to contain foreground
    num_workers: int
    device: str  # "auto" | "cpu" | "cuda" | "mps" (samunet_train --device overrides it)
    precision: str  # "bf16" | "fp16" | "fp32"
    seed: int = 12345
    time_budget_min: float | None = None  # wall time of one fold incl. validation, honoured by default; None: none
    reason: str = ""


@dataclass
class CostPlan:
    """What one fold costs on the machine that planned (measured by planning/cost_model.py, or estimated);
    samunet_train compares these figures with what it sees and records both in debug.json."""

    adapter: str  # the recommended adapter these figures are for
    precision: str
    source: str  # "measured" | "estimated"
    machine: str  # processor or GPU, CPUs, torch version
    seconds_per_encoded_slice: float
    seconds_per_cached_iteration: float  # one batch whose embeddings are cached
    seconds_per_uncached_iteration: float  # one batch encoded on the fly (or any batch when the encoder trains)
    seconds_per_iteration: float  # the planned run's average iteration (what samunet_train compares)
    seconds_per_validation_case: float  # one validation volume, first encoding included, no mirroring
    predicted_minutes_per_fold: float
    reason: str = ""
    # the distinct inputs the cached loader draws from (each encoded once, on its first draw); None: no embedding
    # cache (the encoder trains) or plans made before this field
    distinct_inputs: int | None = None

    def seconds_per_decoded_slice(self, batch_size: int) -> float:
        """The trainable part's forward for one slice whose embedding is known (the decoder, for a frozen encoder)."""
        return self.seconds_per_cached_iteration / max(1, batch_size) * FORWARD_SHARE_OF_STEP

    def seconds_per_iteration_at(self, iterations: int, batch_size: int) -> float:
        """The planned average iteration for a run of ``iterations`` (the fit or the clock changes the count): with
        an embedding cache the encodings fall in the first draws, so a shorter run averages more per iteration.
        Without a pool (or iterations), the planned run's own average."""
        if not self.distinct_inputs or iterations <= 0 or batch_size <= 0:
            return self.seconds_per_iteration
        return training_seconds(iterations * batch_size, batch_size, self.seconds_per_cached_iteration,
                                self.seconds_per_uncached_iteration, self.distinct_inputs) / iterations


def expected_distinct(samples: float, pool: int) -> float:
    """Distinct inputs among ``samples`` drawn uniformly from ``pool`` (each one is encoded once)."""
    return pool * (1.0 - math.exp(-samples / pool)) if pool > 0 else 0.0


def training_seconds(samples: float, batch_size: int, cached_iteration: float, uncached_iteration: float,
                     pool: int | None) -> float:
    """Seconds to train on ``samples``: with an embedding cache over ``pool`` inputs, each distinct input pays its
    encoding once and every sample the cached step; without one (``pool`` None), every sample the uncached step.
    The planner sizes runs with it and samunet_train compares runs against it."""
    if pool is None:
        return samples * uncached_iteration / batch_size
    per_sample_encode = (uncached_iteration - cached_iteration) / batch_size
    return expected_distinct(samples, pool) * per_sample_encode + samples * cached_iteration / batch_size


@dataclass
class Plans(VersionedRecord):
    dataset_name: str
    plans_name: str
    labels: dict[str, int | list[int]]  # name -> value (or list of values: a region), background included (nnU-Net v2)
    file_ending: str
    slicing: SlicingPlan
    crop: CropPlan
    resampling: ResamplingPlan
    normalization: list[ChannelNormalization]
    packing: ChannelPackingPlan
    model: ModelPlan
    adapters: dict[str, AdapterConfig]
    augmentation: AugmentationPlan
    training: TrainingPlan
    cost: CostPlan | None = None  # None: plans made before the cost model
    fingerprint_sha256: str = ""  # of dataset_fingerprint.json the plans were made from
    schema_version: int = PLANS_SCHEMA_VERSION
    regions_class_order: list[int] | None = None  # region datasets: the value each region writes (samunet.core.labels)

    SCHEMA_VERSION = PLANS_SCHEMA_VERSION
    RERUN_HINT = "run samunet_plan (--overwrite to replace stale plans)"

    @property
    def label_scheme(self) -> LabelScheme:
        """How the labels map to outputs, targets and evaluated structures (regions, ignore label)."""
        return LabelScheme.from_plans(self)

    @property
    def num_classes(self) -> int:
        """Classes including background (regions: one per region plus background; the ignore label not counted)."""
        return self.label_scheme.num_classes

    @property
    def foreground_labels(self) -> dict[str, int | list[int]]:
        return {k: v for k, v in self.labels.items() if v != 0 and k != IGNORE_NAME}

    def sha256(self) -> str:
        """Hash of the decisions that change what a model sees (checkpoints record it)."""
        relevant = {k: v for k, v in self.to_dict().items() if k not in ("training", "adapters", "cost")}
        # how the frozen encoder runs and what replaces augmentation for cached embeddings do not change what a
        # trained model sees at prediction (and plans hash as before these fields existed)
        relevant["model"].pop("encoder_runtime", None)
        relevant["model"].pop("encoder_runtime_reason", None)
        relevant["augmentation"].pop("cached_augmentation", None)
        relevant["augmentation"].pop("cached_variants", None)
        if relevant.get("regions_class_order") is None:
            # plans without regions hash as before the field existed: their caches and checkpoints stay valid
            relevant.pop("regions_class_order", None)
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()

    def adapter_config(self, adapter: str) -> AdapterConfig:
        if adapter not in self.adapters:
            raise PlansError(f"adapter '{adapter}' has no entry in the plans ({self.plans_name}); "
                             f"known: {sorted(self.adapters)}")
        return self.adapters[adapter]
