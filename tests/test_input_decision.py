"""The backbone spec table (modeling/specs.py) against the built models, and the planner's input-side decision
(planning/budget.py, budget_fit.py): planned within each backbone's facts, fitted to the budget as new plan sections."""
from __future__ import annotations

import copy

import pytest
import torch

from samunet.core.names import BACKBONE_NAMES
from samunet.core.plans import AugmentationPlan, CropPlan, ModelPlan, SlicingPlan
from samunet.modeling.build import build_sam_architecture
from samunet.modeling.specs import BACKBONE_SPECS, VIT_SPECS, cached_embedding_bytes
from samunet.planning.budget import MAX_INPUT, MIN_INPUT, SliceCounts, choose_input_size
from samunet.planning.budget_fit import BudgetFitRequest, FoldSlices, InputSections, fit_to_budget
from samunet.planning.cost_model import MeasuredCost
from samunet.planning.hardware import GIB, Hardware, seconds_per_training_image, training_memory_per_image

CPU = Hardware("cpu", 64 * GIB, 64 * GIB, 2, False)  # room in the embedding cache for augmented variants


def test_the_spec_table_names_every_backbone_once():
    assert tuple(BACKBONE_SPECS) == BACKBONE_NAMES
    for name, spec in BACKBONE_SPECS.items():
        assert spec.native_input % spec.size_multiple == 0, name
        assert spec.is_vit == (name in VIT_SPECS)
        if spec.is_vit:  # a ViT's facts are its architecture's
            assert (spec.native_input, spec.embedding_stride, spec.embedding_width) == (
                spec.vit.pretrain_image_size, spec.vit.patch_size, spec.vit.prompt_dim)


@pytest.mark.parametrize("backbone", ["tiny", "litemedsam"])
def test_the_built_encoder_has_the_tables_embedding(backbone):
    spec, size = BACKBONE_SPECS[backbone], 64
    encoder = build_sam_architecture(backbone, size).image_encoder.eval()
    with torch.no_grad():
        embedding = encoder(torch.rand(1, 3, size, size))
    grid = spec.embedding_grid(size)
    assert tuple(embedding.shape) == (1, spec.embedding_width, grid, grid)
    assert cached_embedding_bytes(backbone, size) == embedding.numel() * 2  # float16


def test_an_input_side_off_the_size_multiple_is_refused():
    with pytest.raises(ValueError, match=f"multiple of {BACKBONE_SPECS['tiny'].size_multiple}"):
        build_sam_architecture("tiny", 72)


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
@pytest.mark.parametrize("patch", [[24, 32], [48, 56], [200, 180], [584, 568]])
def test_the_planned_input_keeps_to_the_backbones_facts(backbone, patch):
    spec = BACKBONE_SPECS[backbone]
    planned = choose_input_size(backbone, patch)
    assert planned.size % spec.size_multiple == 0
    assert min(MIN_INPUT, spec.native_input) <= planned.size <= min(MAX_INPUT, spec.native_input)
    assert f"native {spec.native_input}" in planned.reason


def test_tiny_is_planned_within_its_native_128():
    """tiny's native side is its pretraining size (128, as its test checkpoint is written), not 256."""
    assert choose_input_size("tiny", [200, 180]).size == 128
    assert choose_input_size("litemedsam", [200, 180]).size == 208  # 1x the patch, under its native 256


def test_tinys_cost_figures_read_at_its_native_side():
    # restated at 128 from the former figures at 256 (0.05 GiB, 0.05 s): the same at every side
    assert training_memory_per_image("tiny", 256, "fp32") == pytest.approx(0.05 * GIB)
    assert seconds_per_training_image("tiny", 64, "cpu") == pytest.approx(0.05 * (64 / 256) ** 2)


def planned_sections(input_size=256, patch=(200, 180)):
    model = ModelPlan(backbone="litemedsam", input_size=input_size, adapter="decoder", reason="planned")
    return InputSections(model, SlicingPlan([0, 1, 2], "all", 1.0, reason="sliced"),
                         CropPlan(True, list(patch), reason="cropped"),
                         AugmentationPlan(cached_augmentation="grid", reason="augmented"))


def fit_with(encode_at_256, sections=None):
    def cost_model(backbone, adapter, precision, device, num_classes, in_channels, global_attention, runtime, batch):
        class Table:
            def __call__(self, s):
                return MeasuredCost(s, encode_at_256 * (s / 256) ** 2, 0.01 * (s / 256) ** 2, None)

            estimate = __call__
        return Table()

    sections = sections or planned_sections()
    counts = SliceCounts(train_cases=24, train_all=2000, train_foreground=900, train_background=1100, val_cases=6,
                         val_slices=500)
    request = BudgetFitRequest(sections, FoldSlices(counts, (200.0, 180.0), 12.0), CPU, frozen_encoder=True,
                               num_classes=2, in_channels=3, cost_model=cost_model)
    return fit_to_budget(request)


def test_the_budget_returns_new_sections_and_leaves_the_planned_ones():
    planned = planned_sections()
    before = copy.deepcopy(planned)
    fit = fit_with(2.0, planned)  # an encoder too slow to encode 2,000 slices at 256 within the share
    assert planned == before  # nothing mutated
    model = fit.sections.model
    assert model.input_size < 256 and model.input_size % BACKBONE_SPECS["litemedsam"].size_multiple == 0
    assert model.reason.startswith("planned; budget: input ") and model.encoder_runtime_reason
    assert fit.sections.augmentation.reason.startswith("augmented; ")
    assert fit.training.reason.endswith("reserved") and fit.cost.source == "measured"


def test_a_cheap_encoder_keeps_the_planned_sections_but_the_runtime():
    fit = fit_with(0.01)
    planned = planned_sections()
    assert fit.sections.model.input_size == 256 and fit.sections.model.reason == "planned"
    assert (fit.sections.slicing, fit.sections.crop) == (planned.slicing, planned.crop)
    assert fit.sections.augmentation.cached_variants > 1  # cheap encodings: augmented variants fit
