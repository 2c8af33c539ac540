"""What the planned model costs on this machine, measured, not assumed.

The planner trades input resolution, slices per epoch, validation and the time budget against each other; the
figures it trades with come from here. For each candidate input size it times, on random inputs (weights and
content do not change the cost), a few passes of:

- the encoder forward without gradients (frozen encoders: what every uncached slice, validation slice and
  predicted slice pays);
- the trainable part after the embedding: forward, a Dice + cross-entropy loss, backward and an AdamW step (a
  cached training step of a frozen-encoder adapter);
- the same for the whole adapter (adapters that train before the embedding).

Steps are timed at the planned batch: the per-slice cost of the trainable part is not flat in the batch (LiteMedSAM's
mask decoder at input 256 on a 2-core CPU: 0.069 s/slice at batch 2, 0.098 at batch 8). They are timed before the
encoder's runtime is built: right after OpenVINO's build and inferences the same step measured 1.5-2x slower.

Timings are cached per machine, torch version, backbone, adapter, precision, batch and input size in
``$SAMUNET_PREPROCESSED/cost_model_cache.json``, so a re-plan is instant. Sizes are measured as the planner asks
for them (the planned side always: about 22 s with OpenVINO's build at 224 px on a 2-core CPU), and those asked for
once the 20 s cap is spent are extrapolated from the measured ones (a power law in the input side), which the
plans' reason records.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from samunet.core.names import COST_MODEL_CACHE_FILE
from samunet.core.plans import FORWARD_SHARE_OF_STEP
from samunet.planning.hardware import machine_key
from samunet.utils.atomic import write_json
from samunet.utils.logs import get_logger

log = get_logger()

DEFAULT_TIME_CAP_S = 20.0
DEFAULT_BATCH = 2  # when the caller does not say; the planner passes the planned batch
MIN_TIMED_PASSES, MAX_TIMED_PASSES, TIMED_SECONDS = 3, 15, 1.0  # after one untimed warm-up pass
CACHE_VERSION = 5  # 2: steps include the loss and the optimizer, at the planned batch; 3: steps timed before the
# encoder runtime is built; 4: the encoder timed at ENCODE_TIMING_BATCH; 5: fusion's step has deep supervision
# The frozen encoder is timed on at most this many slices: its per-slice time does not depend on the batch
# (LiteMedSAM through OpenVINO at 240 px, AVX-512: fp32 0.270 / 0.243 / 0.295 / 0.268 s at batch 1 / 2 / 4 / 8,
# bf16 0.142 / 0.167 / 0.185 / 0.143), but its memory does: OpenVINO at batch 8 peaked at 2,816 MiB (fp32),
# the step at the same batch at 2,510. The step is timed at the planned batch: its per-slice time does depend on it
# (fp32 0.220 s at batch 2, 0.338 at batch 8).
ENCODE_TIMING_BATCH = 2


@dataclass
class MeasuredCost:
    """Seconds per slice at one input size (None: not applicable to this adapter)."""

    input_size: int
    encode_seconds: float | None  # frozen encoder forward, no gradients
    head_step_seconds: float | None  # trainable part after the embedding, forward + backward
    full_step_seconds: float | None  # whole adapter forward + backward (encoder trains)
    measured: bool = True  # False: extrapolated from measured sizes

    def uncached_step_seconds(self) -> float:
        """One training slice whose embedding is not cached yet."""
        if self.full_step_seconds is not None:
            return self.full_step_seconds
        return (self.encode_seconds or 0.0) + (self.head_step_seconds or 0.0)

    def cached_step_seconds(self) -> float:
        """One training slice served from the embedding cache (= uncached when nothing can be cached)."""
        return self.head_step_seconds if self.full_step_seconds is None else self.full_step_seconds

    def inference_seconds(self) -> float:
        """One predicted slice: encoder forward plus the decoder's forward (a share of its training step)."""
        if self.encode_seconds is not None:
            return self.encode_seconds + (self.head_step_seconds or 0.0) * FORWARD_SHARE_OF_STEP
        return (self.full_step_seconds or 0.0) * FORWARD_SHARE_OF_STEP


class CostCache:
    """The measured timings of this machine, one JSON file; unreadable or foreign files are ignored."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict] = {}
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if data.get("version") == CACHE_VERSION and isinstance(data.get("entries"), dict):
                    self.entries = data["entries"]
            except (OSError, json.JSONDecodeError, AttributeError):
                log.warning("%s: unreadable, measuring again", self.path)

    @staticmethod
    def key(machine: str, backbone: str, adapter: str, precision: str, batch: int, input_size: int) -> str:
        return hashlib.sha256(
            f"{machine}|{backbone}|{adapter}|{precision}|{batch}|{input_size}".encode()).hexdigest()[:24]

    def get(self, key: str) -> MeasuredCost | None:
        entry = self.entries.get(key)
        if not entry:
            return None
        try:
            return MeasuredCost(**entry)
        except TypeError:
            return None

    def put(self, key: str, cost: MeasuredCost) -> None:
        self.entries[key] = asdict(cost)

    def save(self) -> None:
        if self.path is not None:
            write_json({"version": CACHE_VERSION, "entries": self.entries}, self.path)


def cost_cache_path(preprocessed_root: Path) -> Path:
    return Path(preprocessed_root) / COST_MODEL_CACHE_FILE


def _timed(fn, device: str) -> float:
    """Seconds per call: the median of timed calls after one warm-up call (first calls pay allocation, kernel
    selection and an exported runtime's build). Calls repeat until about a second is timed (at least
    ``MIN_TIMED_PASSES``, at most ``MAX_TIMED_PASSES``): single calls of a few milliseconds varied 2x between
    planning runs on the 2-core CPU. One timed call when the warm-up alone took over a second (the cap is about
    20 s for every size together)."""
    import torch

    def one_call() -> float:
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    if one_call() > 1.0:
        return one_call()
    seconds = [one_call() for _ in range(MIN_TIMED_PASSES)]
    while sum(seconds) < TIMED_SECONDS and len(seconds) < MAX_TIMED_PASSES:
        seconds.append(one_call())
    return statistics.median(seconds)


def release_freed_memory() -> None:
    """Hand freed heap pages back to the system (glibc keeps them mapped) between the phases of an in-process
    measurement and after it. It helps little against OpenVINO's own allocator (two LiteMedSAM sizes at 240 px,
    batch 8, in samunet_plan on 10 x 256 x 256 volumes: 3,800 MiB without, 3,540 with)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator keeps its pages, nothing else changes
        pass


def measure_input_size(backbone: str, adapter_name: str, input_size: int, precision: str, device: str,
                       batch: int = DEFAULT_BATCH, num_classes: int = 3, in_channels: int = 3,
                       global_attention: bool = False, encoder_runtime: str = "eager") -> MeasuredCost:
    """Time one input size (random weights and inputs); per-slice seconds. A frozen encoder runs through
    ``encoder_runtime``, as training and prediction will run it (its build is the untimed warm-up call)."""
    import torch

    from samunet.adapters.registry import build_adapter_from_parts
    from samunet.modeling.build import build_sam
    from samunet.modeling.runtime import precision_policy

    sam = build_sam(backbone, input_size, pretrained=False, global_attention=global_attention)
    adapter = build_adapter_from_parts(adapter_name, sam, num_classes, input_size=input_size,
                                       in_channels=in_channels).to(device)
    images = torch.rand(batch, in_channels, input_size, input_size, device=device)
    frozen = adapter.supports_embedding_cache
    adapter.train()
    policy = precision_policy(torch.device(device), precision)  # what training will use

    encoded = images[:min(batch, ENCODE_TIMING_BATCH)]

    def encode():
        with torch.no_grad(), policy.autocast():
            return adapter.encode(encoded)

    # what the trainer's step does (training/train_step.py, a layer above this one): forward, a Dice +
    # cross-entropy loss in fp32, backward and an AdamW step; the loss's cost does not depend on the label values
    optimizer = torch.optim.AdamW(list(adapter.trainable_parameters()), lr=1e-8)  # lr: the weights barely move
    if frozen:
        # the step is timed before the encoder runtime is built: steps timed right after OpenVINO's build and
        # first inferences ran 40-80% slower for a second or two (0.08 against 0.05 s/slice, LiteMedSAM's
        # decoder at 224 px, batch 8), which planned LeftAtrium_LGE_30's cached step at 2x the real one. One
        # eager slice, repeated, stands for the batch: the step's cost does not depend on the embedding's values
        with torch.no_grad():
            one = adapter.encode(images[:1]).float()
        inputs = one.expand(batch, *one.shape[1:]).contiguous()
    else:
        inputs = images
    target = torch.zeros(batch, input_size, input_size, dtype=torch.long, device=device)

    def loss_of(logits):
        logits = logits.float()
        labels = target[:, :logits.shape[-2], :logits.shape[-1]]  # all zeros: any grid of them will do
        probs = torch.softmax(logits, dim=1)
        one_hot = torch.nn.functional.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).float()
        dice = 1 - (2 * (probs * one_hot).sum((2, 3)) + 1) / (probs.sum((2, 3)) + one_hot.sum((2, 3)) + 1)
        return torch.nn.functional.cross_entropy(logits, labels) + dice.mean()

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with policy.autocast():
            outputs = adapter.forward_from_embeddings(inputs, images) if frozen else adapter(inputs)
        # deep supervision (fusion): one loss per output as in training (its weights do not change the cost)
        sum(loss_of(x) for x in (outputs if isinstance(outputs, list) else [outputs])).backward()
        optimizer.step()

    if frozen:
        step_s = _timed(train_step, device) / batch
        del optimizer, inputs  # the step's state is not needed for the encoder's timing
        release_freed_memory()
        adapter.use_encoder_runtime(encoder_runtime, policy)
        return MeasuredCost(input_size, _timed(encode, device) / len(encoded), step_s, None)

    return MeasuredCost(input_size, None, None, _timed(train_step, device) / batch)


def _measure_seeded(arguments: tuple, threads: int | None) -> dict:
    """A child process's measurement: the planner's threads (None: the default) and seed, results as plain data."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    cost = measure_input_size(*arguments)
    return {"cost": asdict(cost), "seconds": time.perf_counter() - start}


def measure_in_child_process(arguments: tuple) -> tuple[MeasuredCost, float]:
    """``measure_input_size(*arguments)`` in a fresh interpreter (utils.processes): (cost, seconds it measured for).

    What a measurement allocates (the model, its optimizer, the traced and compiled encoder, OpenVINO's own
    allocator) goes with the process, so the peak is one measurement's, however many sizes are measured
    (samunet_plan's own process does not load torch, hardware.py; figures per stage in documentation/results.md).
    The seconds are the child's own, without its start, so the time cap spends as in one process."""
    import sys

    from samunet.utils.processes import run_in_fresh_process

    # this process's threads where it has torch (a test may have set them); else the child's own default, the
    # same as this process would have
    threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    result = run_in_fresh_process(_measure_seeded, arguments, threads)
    return MeasuredCost(**result["cost"]), result["seconds"]


def _extrapolate(measured: list[MeasuredCost], input_size: int) -> MeasuredCost:
    """Power law in the input side through the two measured sizes nearest to ``input_size`` (exponent at least 2:
    the cost grows at least with the pixels); from one measured size, the square law."""
    near = sorted(measured, key=lambda c: abs(c.input_size - input_size))[:2]
    near.sort(key=lambda c: c.input_size)
    b = near[-1]
    a = near[0] if len(near) == 2 and near[0].input_size != b.input_size else None

    def scale(x: float | None, y: float | None) -> float | None:
        if y is None:
            return None
        exponent = 2.0
        if a is not None and x is not None:
            exponent = max(2.0, math.log(max(y, 1e-9) / max(x, 1e-9)) / math.log(b.input_size / a.input_size))
        return y * (input_size / b.input_size) ** exponent

    return MeasuredCost(input_size, scale(a.encode_seconds if a else None, b.encode_seconds),
                        scale(a.head_step_seconds if a else None, b.head_step_seconds),
                        scale(a.full_step_seconds if a else None, b.full_step_seconds), measured=False)


class TimeCap:
    """Seconds of measuring left, shared by every cost table of one planning run."""

    def __init__(self, seconds: float = DEFAULT_TIME_CAP_S):
        self.seconds, self.spent = seconds, 0.0

    @property
    def left(self) -> bool:
        return self.spent < self.seconds


class MeasuredCosts:
    """Input side -> per-slice cost for one backbone/adapter/precision: from the cache, else measured on first
    request while the time cap lasts, else interpolated (power law) from the measured sizes nearest to it."""

    def __init__(self, backbone: str, adapter_name: str, precision: str, device: str, cache: CostCache,
                 batch: int = DEFAULT_BATCH, time_cap: TimeCap | None = None, num_classes: int = 3,
                 in_channels: int = 3, global_attention: bool = False, encoder_runtime: str = "eager",
                 isolated: bool = False, machine: str | None = None):
        self.backbone, self.adapter_name, self.precision, self.device = backbone, adapter_name, precision, device
        self.encoder_runtime = encoder_runtime
        self.isolated = isolated  # each measurement in a child process (samunet_plan), else in this one
        self.cache, self.batch, self.time_cap = cache, batch, time_cap or TimeCap()
        self.num_classes, self.in_channels, self.global_attention = num_classes, in_channels, global_attention
        self.machine = machine or machine_key(device)  # samunet_plan passes the key its child detected
        self.known: dict[int, MeasuredCost] = {}

    def _key(self, size: int) -> str:
        adapter = f"{self.adapter_name}{'+global' if self.global_attention else ''}"
        if self.encoder_runtime != "eager":  # eager keeps the keys of caches written before runtimes existed
            adapter += f"+{self.encoder_runtime}"
        return CostCache.key(self.machine, self.backbone, adapter, self.precision, self.batch, size)

    def __call__(self, input_size: int) -> MeasuredCost:
        size = int(input_size)
        known = self.known.get(size)
        if known is not None and known.measured:
            return known
        cached = self.cache.get(self._key(size))
        if cached is not None:
            self.known[size] = cached
            return cached
        measured = [c for c in self.known.values() if c.measured]
        if measured and not self.time_cap.left:
            self.known[size] = _extrapolate(measured, size)
            return self.known[size]
        return self.measure(size)

    def estimate(self, input_size: int) -> MeasuredCost:
        """Like calling, but measures only when nothing is known yet (for sweeping many candidate sizes)."""
        size = int(input_size)
        cached = self.known.get(size) or self.cache.get(self._key(size))
        if cached is not None:
            return cached
        measured = [c for c in self.known.values() if c.measured]
        return _extrapolate(measured, size) if measured else self(size)

    def measure(self, size: int) -> MeasuredCost:
        arguments = (self.backbone, self.adapter_name, size, self.precision, self.device, self.batch,
                     self.num_classes, self.in_channels, self.global_attention, self.encoder_runtime)
        if self.isolated:
            cost, took = measure_in_child_process(arguments)
        else:
            import torch

            start = time.perf_counter()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                cost = measure_input_size(*arguments)
            release_freed_memory()  # the model, its compiled encoder and their buffers are gone by now
            took = time.perf_counter() - start
        self.time_cap.spent += took
        self.known[size] = cost
        self.cache.put(self._key(size), cost)
        self.cache.save()
        log.info("cost model: %s + %s at %d px, batch %d, %s, encoder %s: %s (%.1f s to measure)", self.backbone,
                 self.adapter_name, size, self.batch, self.precision, self.encoder_runtime, describe(cost), took)
        return cost


def describe(cost: MeasuredCost) -> str:
    parts = []
    if cost.encode_seconds is not None:
        parts.append(f"encode {cost.encode_seconds:.3f} s/slice")
    if cost.head_step_seconds is not None:
        parts.append(f"cached step {cost.head_step_seconds:.3f} s/slice")
    if cost.full_step_seconds is not None:
        parts.append(f"step {cost.full_step_seconds:.3f} s/slice")
    return ", ".join(parts) + ("" if cost.measured else " (extrapolated)")


class EstimatedCosts:
    """Costs from the fixed table in ``hardware.py`` (when measuring is turned off): rough, and said so."""

    ENCODE_SHARE_OF_STEP = 0.35  # frozen-encoder forward / whole forward+backward (LiteMedSAM, 2-core CPU)
    HEAD_SHARE_OF_STEP = 0.05

    def __init__(self, backbone: str, device: str, frozen_encoder: bool):
        self.backbone, self.device, self.frozen_encoder = backbone, device, frozen_encoder

    def __call__(self, input_size: int) -> MeasuredCost:
        from samunet.planning.hardware import seconds_per_training_image

        step = seconds_per_training_image(self.backbone, input_size, self.device)
        if self.frozen_encoder:
            return MeasuredCost(input_size, step * self.ENCODE_SHARE_OF_STEP, step * self.HEAD_SHARE_OF_STEP, None,
                                measured=False)
        return MeasuredCost(input_size, None, None, step, measured=False)

    estimate = __call__
