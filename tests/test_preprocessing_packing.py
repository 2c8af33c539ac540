"""Channel packing (the model's input channels) and the per-sample [0, 1] scaling; numpy and torch alike."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from samunet.preprocessing.packing import pack_slices, packed_channel_count, to_unit_range


def plans_with(mode: str):
    return types.SimpleNamespace(packing=types.SimpleNamespace(mode=mode))


def volume(channels: int, slices: int = 5) -> np.ndarray:
    """Voxel value = 100 * channel + slice, so every packed value says where it came from."""
    c = np.arange(channels)[:, None, None, None] * 100
    s = np.arange(slices)[None, :, None, None]
    return (c + s + np.zeros((channels, slices, 4, 6))).astype(np.float32)


def test_repeat_copies_the_slice_three_times():
    packed = pack_slices(volume(1), [2, 0], plans_with("repeat"))
    assert packed.shape == (2, 3, 4, 6)
    assert packed[0, :, 0, 0].tolist() == [2, 2, 2] and packed[1, :, 0, 0].tolist() == [0, 0, 0]


def test_neighbours_take_adjacent_slices_clamped_at_the_edges():
    packed = pack_slices(volume(1, slices=5), [0, 2, 4], plans_with("neighbours"))
    assert [p[:, 0, 0].tolist() for p in packed] == [[0, 0, 1], [1, 2, 3], [3, 4, 4]]


def test_direct_and_mix_keep_the_channels():
    direct = pack_slices(volume(3), [3, 1], plans_with("direct"))
    assert direct.shape == (2, 3, 4, 6) and direct[0, :, 0, 0].tolist() == [3, 103, 203]
    mix = pack_slices(volume(5), [1], plans_with("mix"))
    assert mix.shape == (1, 5, 4, 6) and mix[0, :, 0, 0].tolist() == [1, 101, 201, 301, 401]
    assert packed_channel_count("mix", 5) == 5 and packed_channel_count("neighbours", 1) == 3


@pytest.mark.parametrize("mode,channels", [("repeat", 1), ("neighbours", 1), ("direct", 3), ("mix", 2)])
def test_torch_and_memmap_inputs_pack_identically(mode, channels, tmp_path):
    image = volume(channels)
    np.save(tmp_path / "img.npy", image)
    mapped = np.load(tmp_path / "img.npy", mmap_mode="r")
    expected = pack_slices(image, [4, 0, 2], plans_with(mode))
    np.testing.assert_array_equal(pack_slices(mapped, [4, 0, 2], plans_with(mode)), expected)
    as_torch = pack_slices(torch.from_numpy(image), [4, 0, 2], plans_with(mode))
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_array_equal(as_torch.numpy(), expected)


def test_wrong_inputs_are_refused():
    with pytest.raises(ValueError, match="1-channel"):
        pack_slices(volume(2), [0], plans_with("neighbours"))
    with pytest.raises(ValueError, match="3-channel"):
        pack_slices(volume(4), [0], plans_with("direct"))
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        pack_slices(volume(1), [5], plans_with("repeat"))
    with pytest.raises(ValueError, match="unknown channel packing"):
        pack_slices(volume(1), [0], plans_with("stack"))


def test_to_unit_range_is_per_sample():
    x = np.stack([np.linspace(-3, 5, 24).reshape(2, 3, 4), np.full((2, 3, 4), 7.0)]).astype(np.float32)
    out = to_unit_range(x)
    assert out.dtype == np.float32
    assert out[0].min() == 0.0 and out[0].max() == pytest.approx(1.0)
    assert np.all(out[1] == 0.0)  # a constant sample has no range
    torch_out = to_unit_range(torch.from_numpy(x))
    np.testing.assert_allclose(torch_out.numpy(), out, atol=1e-6)
