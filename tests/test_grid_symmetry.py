"""Grid augmentation: a symmetry of the embedding grid matches the same symmetry of the image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samunet.preprocessing.grid_symmetry import apply_symmetries, apply_symmetry, draw_symmetry, symmetry_count


def strided_encoder(images: torch.Tensor, stride: int = 4) -> torch.Tensor:
    """An encoder that is equivariant by construction: average pooling over stride x stride cells."""
    return F.avg_pool2d(images, stride)


@pytest.mark.parametrize("code", range(8))
def test_symmetry_of_the_grid_is_the_symmetry_of_the_image(code):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(code))
    via_grid = apply_symmetry(strided_encoder(images), code)
    via_image = strided_encoder(apply_symmetry(images, code))
    assert torch.allclose(via_grid, via_image, atol=1e-6)  # pooling sums in another order


def test_codes_are_distinct_symmetries_and_per_sample():
    image = torch.arange(16.0).reshape(1, 4, 4)
    results = {tuple(apply_symmetry(image, c).flatten().tolist()) for c in range(8)}
    assert len(results) == 8  # the 8 symmetries of a square, no two alike
    grids = torch.stack([image, image])
    out = apply_symmetries(grids, torch.tensor([0, 3]))
    assert torch.equal(out[0], image) and torch.equal(out[1], image.flip((-2, -1)))


def test_draws_respect_the_mirror_axes_and_the_window_shape():
    rng = np.random.default_rng(0)
    assert symmetry_count((64, 64)) == 8 and symmetry_count((64, 48)) == 4
    assert {draw_symmetry(rng, (64, 64), [0, 1]) for _ in range(200)} == set(range(8))
    assert {draw_symmetry(rng, (64, 48), [0, 1]) for _ in range(200)} == {0, 1, 2, 3}  # no transpose
    assert {draw_symmetry(rng, (64, 64), [1]) for _ in range(200)} == {0, 2}
    assert {draw_symmetry(rng, (64, 64), []) for _ in range(20)} == {0}
    assert {draw_symmetry(rng, (64, 64), [0, 1], transpose=False) for _ in range(200)} == {0, 1, 2, 3}


@pytest.mark.parametrize("cached_augmentation, encodes_per_batch", [("grid", 1), ("exact_mirrors", 4)])
def test_test_time_mirroring_follows_the_training_augmentation(hippocampus_preprocessed, cached_augmentation,
                                                               encodes_per_batch):
    """A grid-trained decoder learned flipped embeddings, not the embeddings of flipped images: its test-time
    mirroring flips the embedding (each window encoded once); exact-mirror training flips the image."""
    import copy

    from samunet.adapters import build_adapter
    from samunet.inference.volume_predictor import predict_preprocessed_volume

    ds = hippocampus_preprocessed
    plans = copy.deepcopy(ds.plans)
    plans.augmentation.cached_augmentation = cached_augmentation
    torch.manual_seed(0)
    adapter = build_adapter("decoder", plans).merge()
    image = np.load(ds.cache_folder / f"{ds.case_ids[0]}_image.npy")[:, :5]
    encoded = []
    original = adapter.encode
    adapter.encode = lambda images: encoded.append(images.clone()) or original(images)
    plain = predict_preprocessed_volume(adapter, image, plans, mirror=False, batch_size=8)
    plain_inputs = list(encoded)
    encoded.clear()
    mirrored = predict_preprocessed_volume(adapter, image, plans, mirror=True, batch_size=8)
    assert len(encoded) == encodes_per_batch * len(plain_inputs)
    if cached_augmentation == "grid":
        assert all(torch.equal(a, b) for a, b in zip(encoded, plain_inputs))  # the images are never flipped
    assert mirrored.shape == plain.shape and not np.allclose(mirrored, plain)
