"""predict_preprocessed_volume with small fake modules obeying the Adapter interface."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from samunet.inference.volume_predictor import gaussian_importance_map, predict_preprocessed_volume, window_starts
from samunet.preprocessing.packing import pack_slices, to_unit_range

pytestmark = pytest.mark.usefixtures("single_torch_thread")



def fake_plans(patch=(16, 16), mirror_axes=(0, 1), precision="fp32", mode="repeat", batch_size=3):
    return SimpleNamespace(
        crop=SimpleNamespace(patch_size=list(patch)),
        training=SimpleNamespace(batch_size=batch_size, precision=precision),
        augmentation=SimpleNamespace(mirror_axes=list(mirror_axes), cached_augmentation="exact_mirrors"),
        packing=SimpleNamespace(mode=mode),
    )


class PointwiseModel(nn.Module):
    """1x1 convolution: each output pixel depends on its own input pixel only (no spatial context)."""

    def __init__(self, classes=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, classes, 1)
        self.seen_shapes, self.seen_training = [], []

    def forward(self, x):
        self.seen_shapes.append(tuple(x.shape))
        self.seen_training.append(self.training)
        return self.conv(x) * 4

    def probabilities(self, logits):
        return torch.softmax(logits, dim=1)


class AsymmetricModel(PointwiseModel):
    """3x3 convolution with a random kernel: flipping the input does not flip the output."""

    def __init__(self, classes=3, seed=1):
        super().__init__(classes, seed)
        self.conv = nn.Conv2d(3, classes, 3, padding=1)


def _image(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_padding_small_slices_is_removed_and_probabilities_sum_to_one():
    model = PointwiseModel()
    image = _image((1, 4, 10, 13))
    probs = predict_preprocessed_volume(model, image, fake_plans(patch=(16, 16)), mirror=False)
    assert probs.shape == (3, 4, 10, 13) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    assert all(s[2:] == (16, 16) for s in model.seen_shapes)  # the model sees patch-size windows only


def test_sliding_window_equals_whole_slice_for_a_pointwise_model():
    # slices of 40 x 29 with 16 x 16 windows: many overlapping tiles, Gaussian blended
    image = _image((1, 3, 40, 29), seed=2)
    model = PointwiseModel()
    tiled = predict_preprocessed_volume(model, image, fake_plans(patch=(16, 16)), mirror=False)
    whole = predict_preprocessed_volume(model, image, fake_plans(patch=(40, 29)), mirror=False)
    assert max(s[2] for s in model.seen_shapes[:-1]) == 16  # the first run really tiled
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_mirroring_averages_flipped_predictions_flipped_back():
    image = _image((1, 2, 16, 16), seed=3)
    plans = fake_plans(patch=(16, 16), mirror_axes=(0, 1))
    model = AsymmetricModel()
    with_tta = predict_preprocessed_volume(model, image, plans, mirror=True)
    without = predict_preprocessed_volume(model, image, plans, mirror=False)
    x = to_unit_range(torch.from_numpy(pack_slices(image, [0, 1], plans)))
    with torch.no_grad():
        expected = sum(torch.flip(model.probabilities(model(torch.flip(x, d) if d else x)), d) if d
                       else model.probabilities(model(x)) for d in [(), (2,), (3,), (2, 3)]) / 4
    np.testing.assert_allclose(with_tta, expected.numpy().transpose(1, 0, 2, 3), atol=1e-5)
    assert np.abs(with_tta - without).max() > 1e-3  # the asymmetric model makes TTA matter


def test_mirror_axes_from_the_plans_limit_the_flips():
    model = PointwiseModel()
    predict_preprocessed_volume(model, _image((1, 1, 16, 16)), fake_plans(mirror_axes=(1,)), mirror=True)
    assert len(model.seen_shapes) == 2  # no flip and the W flip only


def test_model_mode_is_restored_and_eval_used():
    model = PointwiseModel().train()
    predict_preprocessed_volume(model, _image((1, 2, 16, 16)), fake_plans(), mirror=False)
    assert model.training and not any(model.seen_training)


def test_bf16_autocast_on_cpu_stays_close_to_fp32():
    image = _image((1, 2, 20, 20), seed=4)
    model = PointwiseModel()
    fp32 = predict_preprocessed_volume(model, image, fake_plans(precision="fp32"), mirror=False)
    bf16 = predict_preprocessed_volume(model, image, fake_plans(precision="bf16"), mirror=False)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.05)


def test_bad_shape_is_an_error():
    with pytest.raises(ValueError, match="C, S, H, W"):
        predict_preprocessed_volume(PointwiseModel(), _image((2, 16, 16)), fake_plans())


def test_window_helpers():
    assert window_starts(16, 16) == [0]
    starts = window_starts(40, 16)
    assert starts[0] == 0 and starts[-1] == 24 and all(b - a <= 8 for a, b in zip(starts, starts[1:]))
    g = gaussian_importance_map((16, 16))
    assert g.max() == pytest.approx(1.0) and g.min() > 0 and g[8, 8] > g[0, 0]


def test_real_tiny_adapter_merged_or_not_predicts_the_same(hippocampus_preprocessed):
    """Training validation predicts with the unmerged adapter, samunet_predict with the merged one."""
    from samunet.adapters import build_adapter

    plans = copy.deepcopy(hippocampus_preprocessed.plans)
    plans.training.precision = "fp32"  # merging is exact math; bf16 autocast (planned on CPUs with native bf16) is not
    case = hippocampus_preprocessed.case_ids[0]
    image = np.load(hippocampus_preprocessed.cache_folder / f"{case}_image.npy", mmap_mode="r")
    torch.manual_seed(0)
    adapter = build_adapter("samed", plans)
    with torch.no_grad():  # LoRA starts as a no-op (B = 0): perturb it so merging has work to do
        for p in adapter.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    unmerged = predict_preprocessed_volume(adapter, image[:, :6], plans, mirror=False)
    adapter.merge()
    merged = predict_preprocessed_volume(adapter, image[:, :6], plans, mirror=False)
    assert unmerged.shape == (plans.num_classes, 6, *image.shape[2:])
    np.testing.assert_allclose(unmerged.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(merged, unmerged, atol=1e-4)
