"""Training batches: sampled slices -> packed channels -> [0, 1] -> augmented patches, in worker processes.

Every batch is a pure function of ``(seed, rank, epoch, batch index)``: its random generator is seeded from
those four numbers, so results do not depend on the number of workers, a resumed run sees exactly the
batches an uninterrupted one would, and each DDP rank draws different data. Batches are produced by a torch
``DataLoader`` whose workers prefetch a bounded number of batches (``prefetch_factor``), so memory stays flat;
the cache is memory-mapped, so a worker reads only the slices it uses.

Intensity handling matches ``samunet.inference.volume_predictor`` exactly: the packed slice is padded with
zeros (normalised space) symmetrically up to the patch size, then scaled to [0, 1] as a whole slice.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from samunet.planning.plans import Plans
from samunet.training.augmentation import apply_transform, build_augmentation, center_crop_transform, enlarged_window
from samunet.training.slice_dataset import CaseSlices, SliceChoice, SliceSampler, label_lookup, largest_foreground_slice


@contextmanager
def seeded_global_rngs(seed: int):
    """batchgeneratorsv2 draws from numpy's and torch's global generators: seed them, restore afterwards."""
    np_state = np.random.get_state()
    np.random.seed(seed % 2**32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)


def batch_seed(seed: int, rank: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, rank, epoch, index]).generate_state(1)[0])


def forced_count(batch_size: int, share: float, rng: np.random.Generator) -> int:
    """Samples of a batch forced to contain foreground: ``batch_size * share`` with the fraction drawn at random."""
    expected = batch_size * share
    whole = int(math.floor(expected))
    return min(batch_size, whole + int(rng.random() < expected - whole))


def _pad_to_patch(image: np.ndarray, seg: np.ndarray, patch: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric zero padding up to the patch size (the predictor pads the same way)."""
    h, w = seg.shape
    pads = []
    for size, p in ((h, patch[0]), (w, patch[1])):
        extra = max(p - size, 0)
        pads.append((extra // 2, extra - extra // 2))
    if pads == [(0, 0), (0, 0)]:
        return image, seg
    return (np.pad(image, [(0, 0), pads[0], pads[1]], mode="constant", constant_values=0),
            np.pad(seg, [pads[0], pads[1]], mode="constant", constant_values=0))


def _crop_window(array: np.ndarray, center: tuple[int, int], window: tuple[int, int]) -> np.ndarray:
    """Cut ``window`` (last two axes) centred on ``center``; outside the array is zero."""
    out = np.zeros(array.shape[:-2] + tuple(window), dtype=array.dtype)
    src, dst = [], []
    for c, size, length in zip(center, window, array.shape[-2:]):
        start = c - size // 2
        lo, hi = max(start, 0), min(start + size, length)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[(..., dst[0], dst[1])] = array[(..., src[0], src[1])]
    return out


@dataclass
class BatchSpec:
    """Everything a worker needs to build batches (picklable)."""

    cases: list[CaseSlices]
    plans: Plans
    batch_size: int
    seed: int
    rank: int = 0
    augment: bool = True


class TrainingBatches(Dataset):
    """Map-style dataset whose item ``(epoch, index)`` is a whole batch: images (B, Cin, H, W), seg (B, H, W)."""

    def __init__(self, spec: BatchSpec):
        self.spec = spec
        plans = spec.plans
        self.patch = (int(plans.crop.patch_size[0]), int(plans.crop.patch_size[1]))
        self.window = enlarged_window(self.patch, plans.augmentation) if spec.augment else self.patch
        self.lut = label_lookup(list(plans.labels.values()))
        max_slices = None
        if plans.slicing.mode == "max_slice":
            max_slices = {c.case_id: largest_foreground_slice(c.seg_path) for c in spec.cases}
        self.sampler = SliceSampler(spec.cases, plans.slicing.mode, plans.slicing.background_fraction, max_slices)
        self.transform = (build_augmentation(self.patch, plans.augmentation) if spec.augment
                          else center_crop_transform(self.patch))
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:  # indices come from EpochSampler; the length is not used
        return 2**31 - 1

    def _open(self, case_index: int) -> tuple[np.ndarray, np.ndarray]:
        if case_index not in self._arrays:  # memory maps: opened once per worker, paged in on demand
            case = self.spec.cases[case_index]
            self._arrays[case_index] = (np.load(case.image_path, mmap_mode="r"), np.load(case.seg_path, mmap_mode="r"))
        return self._arrays[case_index]

    def _center(self, seg: np.ndarray, choice: SliceChoice, rng: np.random.Generator) -> tuple[int, int]:
        h, w = seg.shape
        if choice.foreground_class is not None:
            ys, xs = np.nonzero(self.lut[seg] == choice.foreground_class)
            if len(ys):
                k = rng.integers(len(ys))
                # jitter so the structure is not always at the patch centre
                jitter = [int(rng.integers(-(p // 4), p // 4 + 1)) for p in self.patch]
                return (int(np.clip(ys[k] + jitter[0], self.patch[0] // 2, max(h - self.patch[0] // 2, self.patch[0] // 2))),
                        int(np.clip(xs[k] + jitter[1], self.patch[1] // 2, max(w - self.patch[1] // 2, self.patch[1] // 2))))
        # ordinary sample: a random patch position inside the (padded) slice
        return tuple(int(rng.integers(p // 2, max(n - p // 2, p // 2) + 1)) if n > p else n // 2
                     for n, p in zip((h, w), self.patch))

    def build_sample(self, choice: SliceChoice, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        from samunet.preprocessing.packing import pack_slices, to_unit_range

        image, seg = self._open(choice.case)
        packed = np.asarray(pack_slices(image, [choice.slice], self.spec.plans))[0]  # (Cin, H, W)
        seg_slice = np.asarray(seg[choice.slice])
        packed, seg_slice = _pad_to_patch(packed, seg_slice, self.patch)
        unit = to_unit_range(torch.from_numpy(np.ascontiguousarray(packed, dtype=np.float32))[None])
        unit = np.asarray(unit[0] if isinstance(unit, torch.Tensor) else unit[0], dtype=np.float32)
        center = self._center(seg_slice, choice, rng)
        window_image = _crop_window(unit, center, self.window)
        window_seg = _crop_window(self.lut[seg_slice], center, self.window)
        return apply_transform(self.transform, window_image, window_seg)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        seed = batch_seed(self.spec.seed, self.spec.rank, epoch, index)
        rng = np.random.default_rng(seed)
        n_forced = forced_count(self.spec.batch_size, self.spec.plans.training.foreground_oversample, rng)
        images, segs = [], []
        with seeded_global_rngs(seed):
            for i in range(self.spec.batch_size):
                choice = self.sampler.draw(rng, force_foreground=i >= self.spec.batch_size - n_forced)
                image, seg = self.build_sample(choice, rng)
                images.append(image)
                segs.append(seg)
        return {"images": torch.stack(images), "seg": torch.stack(segs)}


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys; ``set_epoch`` works with persistent workers (it runs in the main process)."""

    def __init__(self, iterations: int, epoch: int = 0):
        self.iterations, self.epoch = iterations, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter([(self.epoch, i) for i in range(self.iterations)])

    def __len__(self) -> int:
        return self.iterations


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # the training process owns the cores; workers only augment


def make_loader(dataset: TrainingBatches, sampler: EpochSampler, num_workers: int, prefetch_factor: int = 2) -> DataLoader:
    """Bounded, persistent worker pool (or in-process loading with ``num_workers=0``)."""
    extra = {}
    if num_workers > 0:
        extra = {"prefetch_factor": prefetch_factor, "persistent_workers": True, "worker_init_fn": _worker_init,
                 "multiprocessing_context": "spawn" if torch.cuda.is_available() else None}
    return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=num_workers, **extra)
