"""What the machine offers: device, free memory, CPU count, precision; and what one training image costs.

The planner sizes batches and run length from these numbers. Estimates are deliberately rough
(order of magnitude, on the safe side): users can edit ``training.batch_size`` in the plans. Finding the device
needs torch; a planner that has not loaded it (``samunet_plan``: each cost measurement loads torch in a child
process of its own) asks a short-lived child, so torch is never held beside a measurement.
"""
from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from samunet.modeling.specs import BACKBONE_SPECS
from samunet.utils.processes import usable_cpu_count

GIB = 1024**3

# Backbone -> (training activation memory per image at its native input side (modeling.specs) in GiB at fp32,
# seconds per image forward+backward on a 2-core CPU at the native side). Memory grows with the number of
# tokens, i.e. (input / native)^2. The LiteMedSAM time was measured on this project's CPU (3-5 s at 256);
# ViT-B measured on the same CPU (batch 4 at 256: 2.4-3.7 s), scaled to 1024 by the token count; L/H by their FLOPs.
BACKBONE_COSTS: dict[str, tuple[float, float]] = {
    "vit_b": (8.0, 12.0),
    "medsam_vit_b": (8.0, 12.0),
    "vit_l": (14.0, 36.0),
    "vit_h": (20.0, 70.0),
    "litemedsam": (0.6, 4.0),
    "tiny": (0.0125, 0.0125),  # at its native 128 (0.05 at 256)
}
# a GPU runs these workloads roughly this many times faster than the 2-core CPU the costs were measured on
GPU_SPEEDUP = 100.0


@dataclass
class Hardware:
    device: str  # "cpu" | "cuda" | "mps"
    free_memory_bytes: int  # on the device that trains (GPU memory or system RAM)
    system_ram_available_bytes: int
    cpu_count: int
    bf16_supported: bool
    name: str = ""
    timing_key: str = ""  # machine_key(device) where detected: what this machine's timings depend on

    @property
    def precision(self) -> str:
        if self.device == "cuda":
            return "bf16" if self.bf16_supported else "fp16"
        return "bf16" if self.bf16_supported else "fp32"


def cpu_model_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# the CPU's native bf16 class, as benchmarks print it
AMX, AVX512_BF16, NO_NATIVE_BF16 = "AMX", "AVX512-BF16 (no AMX)", "no native bf16"


def bf16_capability_from_flags(flags: str) -> str:
    """``AMX``, ``AVX512_BF16`` or ``NO_NATIVE_BF16`` from /proc/cpuinfo's flags."""
    words = set(flags.split())
    if "amx_bf16" in words:
        return AMX
    return AVX512_BF16 if "avx512_bf16" in words else NO_NATIVE_BF16


def cpu_bf16_capability() -> str:
    """This CPU's native bf16 class (benchmarks print it: bf16 autocast is faster than fp32 only with one)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        return bf16_capability_from_flags(cpuinfo.read_text(errors="ignore"))
    try:  # pragma: no cover (not Linux)
        import torch

        return {"AMX": AMX, "AVX512_BF16": AVX512_BF16}.get(torch.backends.cpu.get_cpu_capability(), NO_NATIVE_BF16)
    except Exception:  # pragma: no cover
        return NO_NATIVE_BF16


def describe_cpu() -> str:
    """One line for benchmark output: the CPU, its bf16 class and the cores this process may use."""
    return f"{cpu_model_name()}: {cpu_bf16_capability()}, {usable_cpu_count()} usable cores"


def cpu_has_native_bf16() -> bool:
    """True only with bf16 instructions (AVX512-BF16 or AMX). Without them PyTorch emulates bf16 and it is
    slower than fp32: measured on this project's AVX512 CPU, a transformer block forward+backward under
    bf16 autocast took 2.5x the fp32 time."""
    return cpu_bf16_capability() != NO_NATIVE_BF16


def machine_key(device: str) -> str:
    """Identity of what the timings depend on: processor (or GPU), usable CPUs, torch version and threads."""
    import torch

    what = torch.cuda.get_device_name() if device == "cuda" else cpu_model_name()
    return f"{device}|{what}|{usable_cpu_count()} cpus|torch {torch.__version__}|threads {torch.get_num_threads()}"


def detect_hardware(device: str | None = None) -> Hardware:
    """Auto-detect (CUDA, else Apple MPS, else CPU) unless ``device`` names one; in a fresh child interpreter when
    this one has not imported torch (the module docstring says why), else here."""
    if "torch" in sys.modules:
        return _detect_here(device)
    from samunet.utils.processes import run_in_fresh_process

    return Hardware(**run_in_fresh_process(_detect_as_data, device))


def _detect_as_data(device: str | None) -> dict:
    return asdict(_detect_here(device))


def _detect_here(device: str | None) -> Hardware:
    import torch

    from samunet.modeling.runtime import auto_device

    if device is None:
        device = auto_device().type
    ram = psutil.virtual_memory().available
    cpus = usable_cpu_count()
    key = machine_key(device)
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return Hardware("cuda", int(free), int(ram), cpus, bool(torch.cuda.is_bf16_supported()),
                        torch.cuda.get_device_name(), key)
    if device == "mps":
        # unified memory: the GPU shares system RAM
        return Hardware("mps", int(ram), int(ram), cpus, False, "Apple MPS", key)
    return Hardware("cpu", int(ram), int(ram), cpus, cpu_has_native_bf16(), "CPU", key)


def training_memory_per_image(backbone: str, input_size: int, precision: str) -> float:
    """Bytes of activations one training image needs (plus a 2x safety factor folded into the table)."""
    native = BACKBONE_SPECS[backbone].native_input
    gib_at_native, _ = BACKBONE_COSTS[backbone]
    scale = (input_size / native) ** 2
    half = 0.5 if precision in ("bf16", "fp16") else 1.0
    return gib_at_native * scale * half * GIB


def seconds_per_training_image(backbone: str, input_size: int, device: str) -> float:
    native = BACKBONE_SPECS[backbone].native_input
    _, seconds = BACKBONE_COSTS[backbone]
    cost = seconds * (input_size / native) ** 2
    return cost / GPU_SPEEDUP if device in ("cuda", "mps") else cost


def batch_size_for_memory(hw: Hardware, backbone: str, input_size: int, cap: int) -> int:
    """Largest batch whose activations fit in half the free memory (the rest: weights, optimizer,
    data loaders, other programs), between 1 and ``cap``."""
    per_image = training_memory_per_image(backbone, input_size, hw.precision)
    fits = int(0.5 * hw.free_memory_bytes // max(per_image, 1.0))
    return max(1, min(cap, fits))
