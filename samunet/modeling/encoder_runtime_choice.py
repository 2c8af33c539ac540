"""Which way runs a frozen encoder (``model.encoder_runtime``): what each way needs installed, which was measured
fastest per device and precision, and the planner's choice with its reason. No torch: the planner decides
without loading it (``encoder_runtime.py`` runs the choice)."""
from __future__ import annotations

import importlib.util

from samunet.core.names import ENCODER_RUNTIMES
from samunet.core.plans import PlansError
from samunet.utils.logs import get_logger

log = get_logger()

# the exported-graph runtimes: the package each imports, and what installs it
PACKAGES = {"openvino": ("openvino", "openvino"), "onnxruntime": ("onnxruntime", "'samunet[onnxruntime]'")}
# benchmarks/bench_encoder.py on a 2-core AVX512-BF16 CPU without AMX (documentation/encoder_runtime.md), fastest
# first; a device class without a measurement (CUDA, MPS: no GPU was measured) runs eagerly
MEASURED_FASTEST: dict[tuple[str, str], tuple[str, ...]] = {
    ("cpu", "bf16"): ("openvino", "onnxruntime", "compile"),
    ("cpu", "fp32"): ("openvino", "onnxruntime", "compile"),
}
MEASURED_NOTE: dict[tuple[str, str], str] = {
    ("cpu", "bf16"): "LiteMedSAM, batch 8: 0.189 s/slice at input 256 and 0.016 at 64, against 0.975 and 0.060 "
                     "eager bf16; embeddings within bf16 rounding of eager",
    ("cpu", "fp32"): "LiteMedSAM, batch 8: 0.025 s/slice at input 64 against 0.098 eager fp32; embeddings within "
                     "1e-5 of eager",
}


def runtime_available(name: str, device_type: str = "cpu") -> bool:
    """Whether ``name`` can run here: its package is installed and it serves ``device_type``."""
    if name not in ENCODER_RUNTIMES:
        return False
    if name in PACKAGES:  # the exported-graph runtimes serve the CPU only here
        return device_type == "cpu" and importlib.util.find_spec(PACKAGES[name][0]) is not None
    if name == "jit_freeze":
        return device_type == "cpu"
    return True


def usable_runtime(name: str, device_type: str) -> str:
    """``name`` when it can run on ``device_type`` here, else ``eager`` (one log line says why)."""
    if name not in ENCODER_RUNTIMES:
        raise PlansError(f"model.encoder_runtime {name!r} is unknown; known: {', '.join(ENCODER_RUNTIMES)}")
    if runtime_available(name, device_type):
        return name
    why = (f"the {PACKAGES[name][0]} package is not installed (pip install {PACKAGES[name][1]})"
           if name in PACKAGES and device_type == "cpu" else f"it does not serve {device_type}")
    log.warning("model.encoder_runtime %s: %s; the encoder runs eagerly", name, why)
    return "eager"


def encoder_runtime_reason(runtime: str, device_type: str, precision: str) -> str:
    """Why the planner chose ``runtime`` (the plans' ``model.encoder_runtime_reason``)."""
    ranked = MEASURED_FASTEST.get((device_type, precision), ())
    if not ranked:
        return f"{runtime}: no faster way measured for {device_type} in {precision}"
    measured = MEASURED_NOTE.get((device_type, precision), "")
    if runtime == ranked[0]:
        return f"{runtime}: the fastest measured for {device_type} in {precision} ({measured})"
    how = f"pip install {PACKAGES[ranked[0]][1]}" if ranked[0] in PACKAGES else "unavailable"
    return (f"{runtime}: {ranked[0]} was measured faster for {device_type} in {precision} ({measured}) but cannot "
            f"run here ({how})")


def default_encoder_runtime(device_type: str, precision: str) -> str:
    """The fastest way measured for ``device_type`` and ``precision`` (``MEASURED_FASTEST``) that runs here."""
    for name in MEASURED_FASTEST.get((device_type, precision), ()):
        if runtime_available(name, device_type):
            return name
    return "eager"
