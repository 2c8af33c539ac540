"""Every adapter learns through the training step (tiny backbone, real Hippocampus slices), and one case can be
overfitted to a high Dice, measured on the whole volume by the predictor."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from samunet.adapters import build_adapter
from samunet.inference.volume_predictor import predict_preprocessed_volume
from samunet.training.data_loader import BatchSpec, TrainingBatches
from samunet.training.losses import build_loss
from samunet.core.adapter_defaults import default_adapter_config
from samunet.modeling.runtime import precision_policy
from samunet.training.lr_schedule import learning_rate_at, set_learning_rate
from samunet.training.optimizers import build_optimizer
from samunet.training.slice_dataset import SliceChoice, load_case_slices
from samunet.training.train_step import StepRunner

pytestmark = pytest.mark.usefixtures("single_torch_thread")

CPU = torch.device("cpu")
# tiny random backbones need larger steps than the papers' pretrained ones to move within a dozen steps
LEARNING_RATES = {"ssam": 3e-2, "samed": 1e-2, "loramednet": 3e-3, "cnnhead": 3e-3, "decoder": 1e-2, "full": 3e-3,
                  "fusion": 3e-3}


def _runner(name: str, plans, lr: float):
    torch.manual_seed(0)
    adapter = build_adapter(name, plans)
    config = plans.adapter_config(name)
    optimizer = build_optimizer(adapter.trainable_parameters(), config, lr)
    loss = build_loss(plans, name)
    return adapter, optimizer, StepRunner(adapter, loss, optimizer, CPU, precision_policy(CPU, "fp32"))


@pytest.fixture(scope="module")
def first_case(hippocampus_preprocessed):
    ds = hippocampus_preprocessed
    return load_case_slices(ds.cache_folder, ds.case_ids[0], ds.plans.label_scheme)


@pytest.mark.parametrize("name", list(LEARNING_RATES))
def test_adapter_loss_goes_down_on_a_fixed_batch(hippocampus_preprocessed, first_case, name):
    plans = copy.deepcopy(hippocampus_preprocessed.plans)
    plans.training.foreground_oversample = 1.0
    batch = TrainingBatches(BatchSpec([first_case], plans, 6, seed=0, augment=False))[(0, 0)]
    _, _, runner = _runner(name, plans, LEARNING_RATES[name])
    losses = [runner.step(batch["images"], batch["seg"]) for _ in range(12)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), f"{name}: {losses}"


def test_overfitting_one_case_reaches_high_volume_dice(hippocampus_preprocessed, first_case):
    plans = hippocampus_preprocessed.plans
    source = TrainingBatches(BatchSpec([first_case], plans, 1, seed=0, augment=False))
    rng = np.random.default_rng(0)
    samples = [source.build_sample(SliceChoice(0, s, None), rng) for s in range(first_case.num_slices)]
    images, segs = torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])
    adapter, optimizer, runner = _runner("samed", plans, 1e-2)
    steps, order = 200, torch.Generator().manual_seed(0)
    for i in range(steps):
        set_learning_rate(optimizer, learning_rate_at(i, default_adapter_config(
            "samed", learning_rate=1e-2, warmup_iterations=0, poly_power=0.9), steps))
        pick = torch.randperm(len(images), generator=order)[:8]
        runner.step(images[pick], segs[pick])
    probs = predict_preprocessed_volume(adapter, np.load(first_case.image_path), plans, mirror=False)
    prediction, reference = probs.argmax(0), np.load(first_case.seg_path)
    dice = [2 * np.sum((prediction == c) & (reference == c)) / (np.sum(prediction == c) + np.sum(reference == c))
            for c in (1, 2)]
    assert min(dice) > 0.8, dice


@pytest.mark.parametrize("cached_augmentation, variants", [("grid", 1), ("exact_mirrors", 4)])
def test_cached_encoder_predicts_like_the_adapter_and_encodes_once(hippocampus_preprocessed, first_case,
                                                                   cached_augmentation, variants):
    from samunet.training.embedding_cache import CachedEncoderAdapter, EmbeddingCache

    plans = copy.deepcopy(hippocampus_preprocessed.plans)
    plans.augmentation.cached_augmentation = cached_augmentation
    torch.manual_seed(0)
    adapter = build_adapter("decoder", plans)
    image = np.load(first_case.image_path)[:, 12:18]  # six slices keep it quick
    direct = predict_preprocessed_volume(adapter, image, plans, mirror=True)
    cache = EmbeddingCache(adapter, CPU, max_bytes=2**30)
    cached = CachedEncoderAdapter(adapter, cache)
    first = predict_preprocessed_volume(cached, image, plans, mirror=True)
    misses = cache.misses
    # every slice encoded once: as is (grid training mirrors the embedding), or in each of the 4 mirror variants
    assert misses == variants * image.shape[1]
    again = predict_preprocessed_volume(cached, image, plans, mirror=True)
    assert cache.misses == misses and cache.hits >= misses
    np.testing.assert_allclose(first, direct, atol=2e-2)  # embeddings are stored in float16
    np.testing.assert_allclose(again, first, atol=1e-6)
