"""Training batches from the real preprocessed Hippocampus cache: determinism, sampling, train/predict parity."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from samunet.preprocessing.padding import pad_in_plane
from samunet.preprocessing.packing import pack_slices, to_unit_range
from samunet.training.data_loader import BatchSpec, EpochSampler, TrainingBatches, make_loader
from samunet.training.slice_dataset import SliceChoice, SliceSampler, load_case_slices

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def cases(hippocampus_preprocessed):
    ds = hippocampus_preprocessed
    return [load_case_slices(ds.cache_folder, c, ds.plans.label_scheme) for c in ds.case_ids[:6]]


def _spec(ds, cases, **kw):
    return BatchSpec(cases, kw.pop("plans", ds.plans), kw.pop("batch_size", 6), kw.pop("seed", 3), **kw)


def test_case_slices_match_the_label_arrays(hippocampus_preprocessed, cases):
    for case in cases[:3]:
        seg = np.load(case.seg_path)
        for cls, slices in case.slices_by_class.items():
            expected = np.flatnonzero((seg == cls).reshape(seg.shape[0], -1).any(1))
            assert np.array_equal(np.sort(slices), expected)
        assert len(case.foreground_slices) + len(case.background_slices) == case.num_slices


def test_batches_are_deterministic_and_independent_of_workers(hippocampus_preprocessed, cases):
    ds = hippocampus_preprocessed
    batches = TrainingBatches(_spec(ds, cases))
    a, b = batches[(2, 5)], TrainingBatches(_spec(ds, cases))[(2, 5)]
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["seg"], b["seg"])
    assert not torch.equal(a["images"], batches[(2, 6)]["images"])  # another index, another batch
    other_rank = TrainingBatches(_spec(ds, cases, rank=1))[(2, 5)]
    assert not torch.equal(a["images"], other_rank["images"])
    # a worker process produces exactly what the training process would
    sampler = EpochSampler(2, epoch=2)
    loader = make_loader(TrainingBatches(_spec(ds, cases)), sampler, num_workers=1)
    from_worker = list(loader)
    del loader
    assert torch.equal(from_worker[1]["images"], batches[(2, 1)]["images"])
    assert torch.equal(from_worker[1]["seg"], batches[(2, 1)]["seg"])


def test_augmented_batches_stay_in_range_with_valid_labels(hippocampus_preprocessed, cases):
    ds = hippocampus_preprocessed
    batch = TrainingBatches(_spec(ds, cases, batch_size=8))[(0, 0)]
    patch = tuple(ds.plans.crop.patch_size)
    assert batch["images"].shape == (8, 3, *patch) and batch["seg"].shape == (8, *patch)
    assert batch["images"].min() >= 0 and batch["images"].max() <= 1
    assert set(batch["seg"].unique().tolist()) <= {0, 1, 2}


def test_foreground_oversampling_forces_foreground(hippocampus_preprocessed, cases):
    ds = hippocampus_preprocessed
    plans = copy.deepcopy(ds.plans)
    plans.training.foreground_oversample = 0.5
    batches = TrainingBatches(_spec(ds, cases, plans=plans, batch_size=4, augment=False))
    for index in range(5):
        seg = batches[(0, index)]["seg"]
        assert all((seg[i] > 0).any() for i in (2, 3)), "the last half of every batch must contain foreground"


def test_unaugmented_sample_is_exactly_what_the_predictor_sees(hippocampus_preprocessed, cases):
    """Training and prediction pad (zeros, normalised space) and scale ([0, 1] per slice) identically."""
    ds = hippocampus_preprocessed
    plans = ds.plans
    batches = TrainingBatches(_spec(ds, cases, augment=False))
    case, s = cases[0], cases[0].foreground_slices[0]
    image, seg, _, _ = batches.build_sample(SliceChoice(0, int(s), None), np.random.default_rng(0))
    volume = np.load(case.image_path)
    patch = tuple(plans.crop.patch_size)
    assert volume.shape[2] <= patch[0] and volume.shape[3] <= patch[1]  # Hippocampus slices fit one patch
    padded, keep = pad_in_plane(volume, patch)
    expected = to_unit_range(torch.from_numpy(pack_slices(padded, [int(s)], plans)).float())[0]
    assert torch.allclose(image, expected, atol=1e-6)
    label = plans.label_scheme.target_lookup()[np.load(case.seg_path)[int(s)]]
    assert np.array_equal(seg.numpy()[keep], label)


def test_slicing_modes(hippocampus_preprocessed, cases):
    rng = np.random.default_rng(0)
    only_fg = SliceSampler(cases, "foreground", background_fraction=0.0)
    for _ in range(50):
        c = only_fg.draw(rng, force_foreground=False)
        assert c.slice in cases[c.case].foreground_slices
    one = SliceSampler(cases, "max_slice", 0.0)
    for _ in range(20):
        c = one.draw(rng, False)
        seg = np.load(cases[c.case].seg_path)
        assert c.slice == int(np.argmax((seg > 0).reshape(seg.shape[0], -1).sum(1)))
    forced = SliceSampler(cases, "all", 1.0)
    for _ in range(20):
        c = forced.draw(rng, True)
        assert c.slice in cases[c.case].slices_by_class[c.foreground_class]


def _with_cached_augmentation(plans, mode: str):
    plans = copy.deepcopy(plans)
    plans.augmentation.cached_augmentation = mode
    plans.augmentation.cached_variants = 1  # the plain windows only (the planner may give more)
    return plans


def test_cached_mode_draws_a_finite_set_with_exact_mirrors(hippocampus_preprocessed, cases):
    ds = hippocampus_preprocessed
    plans = _with_cached_augmentation(ds.plans, "exact_mirrors")
    batches = TrainingBatches(_spec(ds, cases, plans=plans, cached=True, batch_size=8))
    seen: dict[tuple, torch.Tensor] = {}
    for index in range(12):
        batch = batches[(0, index)]
        assert not batch["grid_symmetries"].any()
        for image, key in zip(batch["images"], batch["keys"].tolist()):
            case, s, y0, x0, flips, variant = key
            assert (y0, x0) == (0, 0)  # Hippocampus slices fit one predictor window
            assert variant == 0  # no augmented variants: the plain window
            base, _ = batches._unit_slice(SliceChoice(case, s, None))
            expected = torch.from_numpy(base)
            for axis in (0, 1):
                if flips & (1 << axis):
                    expected = torch.flip(expected, (axis + 1,))
            assert torch.equal(image, expected)
            seen.setdefault(tuple(key), image)
    assert len(seen) < 12 * 8  # inputs repeat: the cache gets hits


def test_cached_grid_mode_keeps_images_plain_and_moves_the_label(hippocampus_preprocessed, cases):
    """grid: every input is the plain window (one cache entry per window); the label carries the drawn symmetry,
    which the batch reports for the training step to apply to the embedding."""
    from samunet.preprocessing.grid_symmetry import apply_symmetry

    ds = hippocampus_preprocessed
    plans = _with_cached_augmentation(ds.plans, "grid")
    plans.crop.patch_size = [max(plans.crop.patch_size)] * 2  # square: transposes allowed
    batches = TrainingBatches(_spec(ds, cases, plans=plans, cached=True, batch_size=8))
    codes = set()
    for index in range(12):
        batch = batches[(0, index)]
        for image, seg, key, code in zip(batch["images"], batch["seg"], batch["keys"].tolist(),
                                         batch["grid_symmetries"].tolist()):
            case, s, y0, x0, flips, _ = key
            assert flips == 0
            base, target = batches._unit_slice(SliceChoice(case, s, None))
            assert torch.equal(image, torch.from_numpy(base))
            assert torch.equal(seg, apply_symmetry(torch.from_numpy(target).long(), code))
            codes.add(code)
    assert len(codes) == 8  # both flips and the transpose are drawn


def test_cached_variants_are_fixed_augmented_copies_of_each_window(hippocampus_preprocessed, cases):
    """cached_variants: variant 0 is the plain window; the others are rotated/scaled/intensity-changed, but each
    (window, variant) is always the same input, whatever the epoch or rank, so the cache encodes it once."""
    ds = hippocampus_preprocessed
    plans = _with_cached_augmentation(ds.plans, "none")
    plans.augmentation.cached_variants = 3
    by_key: dict[tuple, torch.Tensor] = {}
    variants = set()
    for rank in (0, 1):
        batches = TrainingBatches(_spec(ds, cases, plans=plans, cached=True, batch_size=8, rank=rank))
        for epoch, index in [(0, i) for i in range(6)] + [(5, i) for i in range(6)]:
            batch = batches[(epoch, index)]
            for image, seg, key in zip(batch["images"], batch["seg"], batch["keys"].tolist()):
                case, s, _, _, _, variant = key
                variants.add(variant)
                base, target = batches._unit_slice(SliceChoice(case, s, None))
                plain = torch.equal(image, torch.from_numpy(base)) and torch.equal(seg, torch.from_numpy(target).long())
                assert plain == (variant == 0)
                assert image.shape == torch.from_numpy(base).shape and 0 <= image.min() and image.max() <= 1
                if tuple(key) in by_key:
                    assert torch.equal(by_key[tuple(key)], image)  # drawn again: the very same input
                by_key[tuple(key)] = image
    assert variants == {0, 1, 2}
    assert len(by_key) < 2 * 12 * 8  # inputs repeat across epochs and ranks: the cache gets hits
    plans.augmentation.cached_variants = 0
    from samunet.core.plans import PlansError

    with pytest.raises(PlansError, match="augmentation.cached_variants"):
        TrainingBatches(_spec(ds, cases, plans=plans, cached=True))


def test_built_variants_are_kept_and_reused_within_the_memory_limit(hippocampus_preprocessed, cases, monkeypatch):
    """A built variant is kept: drawn again, it is not transformed again; the batches are the same as when
    nothing is kept, and nothing is kept past the byte limit."""
    ds = hippocampus_preprocessed
    plans = _with_cached_augmentation(ds.plans, "none")
    plans.augmentation.cached_variants = 3
    builds = []
    original = TrainingBatches._build_variant

    def counting(self, choice, unit, seg, start, variant):
        builds.append((choice.case, choice.slice, *start, variant))
        return original(self, choice, unit, seg, start, variant)

    monkeypatch.setattr(TrainingBatches, "_build_variant", counting)
    keys = [(epoch, i) for epoch in range(4) for i in range(6)]
    kept = TrainingBatches(_spec(ds, cases, plans=plans, cached=True, batch_size=8))
    kept_batches = [kept[k] for k in keys]
    assert len(builds) == len(set(builds)) == len(kept._variant_memo) > 0  # each variant built once
    variant_draws = sum(int((b["keys"][:, 5] > 0).sum()) for b in kept_batches)
    assert variant_draws > len(builds)  # some were drawn again without being built again
    builds.clear()
    rebuilt = TrainingBatches(_spec(ds, cases, plans=plans, cached=True, batch_size=8, variant_memo_bytes=0))
    for k, batch in zip(keys, kept_batches):
        other = rebuilt[k]
        assert all(torch.equal(batch[name], other[name]) for name in ("images", "seg", "keys"))
    assert not rebuilt._variant_memo and len(builds) == variant_draws  # nothing kept: built on every draw


def test_cached_none_mode_draws_plain_windows(hippocampus_preprocessed, cases):
    ds = hippocampus_preprocessed
    batch = TrainingBatches(_spec(ds, cases, plans=_with_cached_augmentation(ds.plans, "none"), cached=True))[(0, 0)]
    assert not batch["grid_symmetries"].any() and not batch["keys"][:, 4].any()


def test_unknown_cached_augmentation_is_refused_naming_the_field(hippocampus_preprocessed, cases):
    from samunet.core.plans import PlansError

    ds = hippocampus_preprocessed
    with pytest.raises(PlansError, match="augmentation.cached_augmentation 'rotate'"):
        TrainingBatches(_spec(ds, cases, plans=_with_cached_augmentation(ds.plans, "rotate"), cached=True))


