"""Plans that mean what they say: every field of a real (tiny) plans.json, edited, changes what its consumer does.

A tiny dataset is planned and preprocessed by samunet itself; each case below edits one field of the JSON file
(sometimes with a context edit applied to both sides, e.g. a CT normalisation for its clip values), loads it
with ``Plans.load`` and runs the field's consumer on the original and the edited plans: their results must
differ. ``test_every_field_is_covered`` fails when a field is added to the plans without a case here, so a
field nobody reads cannot slip in.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import typing

import numpy as np
import pytest
import torch

from samunet.core.plans import Plans
from tests.fixtures_pipeline import plan_and_preprocess, temporary_env, write_structured_dataset

pytestmark = pytest.mark.usefixtures("single_torch_thread")

DATASET = "Dataset901_Fields"
# fields for people, not programs (error messages quote the channel name; ``cost`` states the planner's figures)
DESCRIPTIVE = {"reason", "adapter_reason", "encoder_runtime_reason", "normalization.name", "cost"}
# fields written but read by nobody yet (listed so that a gap is visible here rather than hidden)
NOT_READ_YET: set[str] = set()


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = tmp_path_factory.mktemp("fields")
    raw = write_structured_dataset(root / "raw" / DATASET, num_cases=5, shape=(10, 24, 20))
    dataset = plan_and_preprocess(raw, root / "work")
    return dataset, json.loads(dataset.plans_path.read_text())


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(str((a.shape, a.dtype)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


class Refused(str):
    """An error raised by a consumer: a refusal is a behaviour too."""


def _outcome(function):
    """The result of ``function()``, or the error it raised."""
    try:
        return function()
    except Exception as e:  # noqa: BLE001 - the error's type and message are the observed behaviour
        return Refused(f"{type(e).__name__}: {e}")


# ---- consumers ---------------------------------------------------------------------------------------------
def preprocessed_case(plans: Plans, dataset) -> str:
    from samunet.preprocessing.case_preprocessor import preprocess_case

    raw = dataset.raw / DATASET
    image, seg, _ = preprocess_case([raw / "imagesTr" / "case_001_0000.nii.gz"], plans,
                                    raw / "labelsTr" / "case_001.nii.gz")
    return _digest(image, seg)


def training_batch(plans: Plans, dataset, augment: bool = True) -> str:
    from samunet.training.data_loader import BatchSpec, TrainingBatches
    from samunet.training.slice_dataset import load_case_slices

    cases = [load_case_slices(dataset.cache_folder, c, plans.label_scheme) for c in dataset.case_ids]
    batch = TrainingBatches(BatchSpec(cases, plans, 32, seed=0, augment=augment))[(0, 0)]
    return _digest(batch["images"], batch["seg"], batch["keys"])


def cached_training_batches(plans: Plans, dataset) -> str:
    """Batches of cached (frozen-encoder) training, whose augmentation is the cached variants."""
    from samunet.training.data_loader import BatchSpec, TrainingBatches
    from samunet.training.slice_dataset import load_case_slices

    cases = [load_case_slices(dataset.cache_folder, c, plans.label_scheme) for c in dataset.case_ids]
    batches = TrainingBatches(BatchSpec(cases, plans, 16, seed=0, cached=True))
    return _digest(*[batches[(0, i)]["images"] for i in range(3)])


def built_adapter(name: str):
    def consumer(plans: Plans, dataset) -> str:
        from samunet.adapters import build_adapter

        torch.manual_seed(0)
        adapter = build_adapter(name, plans)
        counts = adapter.parameter_counts()
        return json.dumps({**adapter.identity, **counts, "outputs": adapter.num_outputs}, sort_keys=True, default=str)
    return consumer


def training_outputs(name: str):
    """The shapes of what the adapter's training-mode forward returns (deep supervision adds coarser logits)."""
    def consumer(plans: Plans, dataset) -> str:
        from samunet.adapters import build_adapter

        torch.manual_seed(0)
        adapter = build_adapter(name, plans).train()
        images = torch.rand(1, adapter.in_channels, 48, 40)
        with torch.no_grad():
            outputs = adapter.forward_from_embeddings(adapter.encode(images), images)
        return repr([tuple(x.shape) for x in (outputs if isinstance(outputs, list) else [outputs])])
    return consumer


def loss_value(name: str):
    def consumer(plans: Plans, dataset) -> float:
        from samunet.training.losses import build_loss

        outputs = plans.num_classes if plans.adapters[name].output == "softmax" else plans.num_classes - 1
        logits = torch.randn(2, outputs, 8, 8, generator=torch.Generator().manual_seed(0))
        seg = torch.randint(0, plans.num_classes, (2, 8, 8), generator=torch.Generator().manual_seed(1))
        return float(build_loss(plans, name)(logits, seg))
    return consumer


def _write_plans(plans: Plans, dataset) -> None:
    plans.save(dataset.dataset_folder / f"{plans.plans_name}.json")


def trainer_facts(name: str):
    """What the trainer set up from the plans: optimizer, learning rates along the run, batches, validation
    rhythm, precision, embedding cache."""
    def consumer(plans: Plans, dataset) -> str:
        from samunet.training.ddp import DistributedContext
        from samunet.training.run_setup import TrainingOptions, prepare_run
        from samunet.training.run_training import build_adapter_for, training_device
        from samunet.training.trainer import FoldTrainer

        original = dataset.plans_path.read_text()
        try:
            _write_plans(plans, dataset)
            with temporary_env(dataset.env()):
                options = TrainingOptions(dataset=DATASET, adapter=name, fold=0, plans_name=plans.plans_name)
                device = training_device(options)
                run = prepare_run(options)
                trainer = FoldTrainer(run, build_adapter_for(run, device), device, DistributedContext())
                loader = trainer.make_loader()
                batch = next(iter(loader))
                lrs = []
                for trainer.iteration in (0, 5, 40, 150, 400):
                    lrs.append(trainer.learning_rate(0.0))
                group = {k: v for k, v in trainer.optimizer.param_groups[0].items() if k != "params"}
                return json.dumps({
                    "device": str(device), "optimizer": type(trainer.optimizer).__name__, "group": group, "lrs": lrs,
                    "batch": _digest(batch["images"], batch["seg"]), "iterations": len(loader),
                    "workers": loader.num_workers,
                    "validate": [e for e in range(1, run.training.epochs + 1) if trainer.validates_after(e)],
                    "precision": trainer.policy.name, "cached": trainer.cache is not None,
                    "encoder_runtime": getattr(trainer.adapter.encoder_runner, "runtime", "eager"),
                    "raw_labels": [str(c.raw_label_path) for c in run.validation_cases()],
                    "epochs": run.training.epochs, "time_limit_s": trainer.budget.limit_s},
                    sort_keys=True, default=str)
        finally:
            dataset.plans_path.write_text(original)
    return consumer


def recommended_adapter(plans: Plans, dataset) -> str:
    from samunet.inference.model_loading import _recommended_adapter

    folder = dataset.results / "recommend" / DATASET
    for adapter in ("decoder", "samed"):
        (folder / f"{adapter}__{plans.plans_name}").mkdir(parents=True, exist_ok=True)
        plans.save(folder / f"{adapter}__{plans.plans_name}" / "plans.json")
    return _recommended_adapter(folder, plans.plans_name)


def cache_folder_written(plans: Plans, dataset) -> list[str]:
    from samunet.preprocessing.runner import preprocess_dataset

    with temporary_env(dataset.env()):
        preprocess_dataset(DATASET, plans, num_processes=1, progress=False)
    return sorted(p.name for p in dataset.dataset_folder.iterdir() if p.is_dir())


def plan_again_log(plans: Plans, dataset) -> str:
    from samunet.planning.cli import plan_dataset

    original = dataset.plans_path.read_text()
    try:
        _write_plans(plans, dataset)
        with temporary_env(dataset.env()), _captured() as lines:
            plan_dataset(DATASET, plans_name=plans.plans_name, num_processes=1, preprocess=False, progress=False)
        return "\n".join(m for m in lines if "changed" in m)
    finally:
        dataset.plans_path.write_text(original)


class _captured:
    def __enter__(self):
        import logging

        self.lines: list[str] = []
        self.handler = logging.Handler()
        self.handler.emit = lambda record: self.lines.append(record.getMessage())
        logging.getLogger("samunet").addHandler(self.handler)
        return self.lines

    def __exit__(self, *exc):
        import logging

        logging.getLogger("samunet").removeHandler(self.handler)


def region_label_map(plans: Plans, dataset) -> str:
    """Region probabilities (both above 0.5 everywhere) written into a label map."""
    return _digest(plans.label_scheme.segmentation(np.full((2, 2, 2), 0.9, dtype=np.float32)))


def loaded_plans(plans: Plans, dataset) -> str:
    return "loaded"


CT = {"normalization.scheme": "ct", "normalization.clip_low": 20.0, "normalization.clip_high": 80.0,
      "normalization.mean": 50.0, "normalization.std": 20.0}
FINER = {"resampling.target_spacing": lambda v: [v[0], 0.7, 0.7]}
TRAINER = trainer_facts("samed")

# field path -> (new value or function of the old one, consumer, context edits applied to both sides)
CASES = {
    "dataset_name": ("Dataset902_Other", TRAINER, {}),
    "plans_name": ("otherPlans", cache_folder_written, {}),
    "labels": (lambda v: {**v, "extra": 3}, built_adapter("samed"), {}),
    "file_ending": (".nrrd", TRAINER, {}),
    "fingerprint_sha256": ("0" * 64, plan_again_log, {}),
    "schema_version": (1, loaded_plans, {}),
    "regions_class_order": ([2, 1], region_label_map,
                            {"labels": {"background": 0, "whole": [1, 2], "core": 2}, "regions_class_order": [1, 2]}),
    "slicing.transpose": (lambda v: [v[0], v[2], v[1]], preprocessed_case, {}),
    "slicing.mode": ("max_slice", training_batch, {}),
    "slicing.background_fraction": (0.05, training_batch, {"slicing.mode": "foreground"}),
    "crop.crop_to_nonzero": (lambda v: not v, preprocessed_case, {}),
    "crop.patch_size": (lambda v: [v[0] - 8, v[1]], training_batch, {}),
    "resampling.target_spacing": (lambda v: [v[0], v[1] * 2, v[2] * 2], preprocessed_case, {}),
    "resampling.image_order": (1, preprocessed_case, FINER),
    "resampling.label_order": (1, preprocessed_case, FINER),
    "normalization.channel": (1, preprocessed_case, {}),
    "normalization.scheme": ("none", preprocessed_case, {}),
    "normalization.use_nonzero_mask": (lambda v: not v, preprocessed_case, {"crop.crop_to_nonzero": False}),
    "normalization.clip_low": (40.0, preprocessed_case, CT),
    "normalization.clip_high": (60.0, preprocessed_case, CT),
    "normalization.mean": (10.0, preprocessed_case, CT),
    "normalization.std": (5.0, preprocessed_case, CT),
    "packing.mode": ("repeat", training_batch, {"packing.mode": "neighbours"}),
    "packing.num_channels": (2, built_adapter("samed"), {"packing.mode": "mix"}),
    "model.backbone": ("litemedsam", built_adapter("decoder"),
                       {"model.input_size": 64, "model.global_attention": False}),
    "model.input_size": (lambda v: v + 16, built_adapter("samed"), {}),
    "model.adapter": ("samed", recommended_adapter, {"model.adapter": "decoder"}),
    "model.checkpoint": ("TINY_CHECKPOINT", built_adapter("decoder"), {}),
    "model.global_attention": (lambda v: not v, built_adapter("decoder"), {}),
    "model.encoder_runtime": ("channels_last", trainer_facts("decoder"), {}),
    "adapters.optimizer": ("adam", TRAINER, {}),
    "adapters.learning_rate": (0.5, TRAINER, {}),
    "adapters.weight_decay": (0.3, TRAINER, {}),
    "adapters.betas": ([0.5, 0.9], TRAINER, {}),
    "adapters.lr_schedule": ("constant", TRAINER, {}),
    "adapters.warmup_iterations": (10, TRAINER, {}),
    "adapters.poly_power": (2.0, TRAINER, {}),
    # dice_focal needs focal_alpha/gamma, null in samed's entry: the edit is refused, naming them
    "adapters.loss": ("dice_focal", loss_value("samed"), {"adapters.output": "sigmoid_per_label",
                                                           "adapters.loss": "dice_bce"}),
    "adapters.loss_weights": ([0.9, 0.1], loss_value("samed"), {}),
    "adapters.focal_alpha": (0.25, loss_value("ssam"), {}),
    "adapters.focal_gamma": (1.0, loss_value("ssam"), {}),
    "adapters.lora_rank": (8, built_adapter("samed"), {}),
    "adapters.head_width": (64, built_adapter("cnnhead"), {}),
    "adapters.unet_widths": (lambda v: [w // 2 for w in v], built_adapter("fusion"), {}),
    "adapters.fusion_stage": (lambda v: 0 if v else 1, built_adapter("fusion"), {}),
    # 4 stages: a U-Net of 3 has no decoder stage to supervise deeply
    "adapters.deep_supervision": (lambda v: not v, training_outputs("fusion"),
                                  {"adapters.unet_widths": [8, 16, 32, 64]}),
    "adapters.cache_embeddings": (lambda v: not v, trainer_facts("decoder"), {}),
    "adapters.output": ("sigmoid_per_label", built_adapter("samed"), {}),
    "augmentation.rotation_degrees": (90.0, training_batch, {}),
    "augmentation.scale_range": ([0.5, 0.6], training_batch, {}),
    "augmentation.elastic": (lambda v: not v, training_batch, {}),
    "augmentation.brightness": (0.9, training_batch, {}),
    "augmentation.contrast": (0.9, training_batch, {}),
    "augmentation.gamma_range": ([0.2, 0.3], training_batch, {}),
    "augmentation.noise_std": (0.5, training_batch, {}),
    "augmentation.mirror_axes": ([], training_batch, {}),
    "augmentation.cached_augmentation": ("exact_mirrors", trainer_facts("decoder"), {}),
    "augmentation.cached_variants": (lambda v: 1 if v > 1 else 3, cached_training_batches, {}),
    "training.batch_size": (lambda v: v + 1, TRAINER, {}),
    "training.epochs": (lambda v: v + 3, TRAINER, {}),
    "training.iterations_per_epoch": (lambda v: v + 7, TRAINER, {}),
    "training.validate_every": (lambda v: v + 2, TRAINER, {}),
    "training.foreground_oversample": (1.0, training_batch, {}),
    "training.num_workers": (lambda v: 1 if v == 0 else 0, TRAINER, {}),
    "training.device": ("mps", TRAINER, {}),
    "training.precision": (lambda v: "fp32" if v != "fp32" else "bf16", TRAINER, {}),
    "training.seed": (lambda v: v + 1, TRAINER, {}),
    "training.time_budget_min": (lambda v: (v or 30) + 5, TRAINER, {}),
}
# the adapter whose entry an ``adapters.<field>`` case edits (the consumer above trains or builds it)
ADAPTER_OF = {"focal_alpha": "ssam", "focal_gamma": "ssam", "head_width": "cnnhead", "cache_embeddings": "decoder",
              "unet_widths": "fusion", "fusion_stage": "fusion", "deep_supervision": "fusion"}


def _set(data: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    old = node[int(last)] if isinstance(node, list) else node[last]
    new = value(old) if callable(value) else value
    if isinstance(node, list):
        node[int(last)] = new
    else:
        node[last] = new


def _json_path(field: str) -> str:
    section, _, name = field.partition(".")
    if section == "adapters":
        return f"adapters.{ADAPTER_OF.get(name, 'samed')}.{name}"
    if section == "normalization":
        return f"normalization.0.{name}"
    return field


def _plans_fields(cls=Plans, prefix: str = "") -> set[str]:
    """Every field path of the plans ("training.epochs"; list and dict entries by their element type)."""
    out = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = typing.get_args(tp)
        inner = args[-1] if typing.get_origin(tp) in (list, dict) and args else tp
        if dataclasses.is_dataclass(inner):
            out |= _plans_fields(inner, f"{prefix}{f.name}.")
        else:
            out.add(f"{prefix}{f.name}")
    return out


def test_every_field_is_covered():
    fields = {f for f in _plans_fields() if f.rsplit(".", 1)[-1] not in DESCRIPTIVE and f not in DESCRIPTIVE}
    covered = set(CASES) | NOT_READ_YET
    assert fields == covered, f"fields without a case: {sorted(fields - covered)}; " \
                              f"cases without a field: {sorted(covered - fields)}"


@pytest.mark.parametrize("field", sorted(CASES))
def test_editing_the_field_changes_behaviour(field, planned, tiny_sam_checkpoint):
    dataset, data = planned
    value, consumer, context = CASES[field]
    if value == "TINY_CHECKPOINT":
        value = str(tiny_sam_checkpoint)
    base = copy.deepcopy(data)
    for path, v in context.items():
        _set(base, _json_path(path), v)
    edited = copy.deepcopy(base)
    _set(edited, _json_path(field), value)

    def observe(content: dict):
        path = dataset.dataset_folder / "edited.json"
        path.write_text(json.dumps(content))
        return _outcome(lambda: consumer(Plans.load(path), dataset))

    before, after = observe(base), observe(edited)
    assert not isinstance(before, Refused), f"{field}: the unedited plans fail: {before}"
    assert before != after, f"{field}: editing it changed nothing ({before!r})"
