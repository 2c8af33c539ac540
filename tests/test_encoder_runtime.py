"""Encoder runtimes: every way that runs here gives the eager embeddings, and the adapters use the chosen one."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from samunet.core.plans import PlansError
from samunet.modeling.build import build_sam
from samunet.modeling.encoder_runtime import SHAPE_SPECIALISED, EncoderRunner
from samunet.modeling.encoder_runtime_choice import PACKAGES, default_encoder_runtime, runtime_available, usable_runtime
from samunet.modeling.runtime import precision_policy

pytestmark = pytest.mark.usefixtures("single_torch_thread")

FP32 = precision_policy(torch.device("cpu"), "fp32")
# compile needs a C++ compiler and tens of seconds; it is exercised by benchmarks/bench_encoder.py
FAST_WAYS = ["eager", "channels_last", "jit_freeze"] + [
    name for name in ("openvino", "onnxruntime") if importlib.util.find_spec(name) is not None]


def frozen_encoder(backbone: str = "litemedsam", size: int = 64):
    torch.manual_seed(0)
    encoder = build_sam(backbone, size, pretrained=False).image_encoder.eval()
    return encoder.requires_grad_(False)


@pytest.mark.parametrize("runtime", FAST_WAYS)
def test_runtime_gives_the_eager_embeddings(runtime):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = frozen_encoder()(x)
    runner = EncoderRunner(frozen_encoder(), runtime, FP32)
    assert not runner.built
    out = runner(x)
    assert runner.built and out.dtype == torch.float32 and out.shape == expected.shape
    assert torch.allclose(out, expected, atol=1e-3 * float(expected.abs().max()))
    smaller = runner(x[:1])  # the last batch of an epoch is smaller: same runner, right answer
    assert torch.allclose(smaller, expected[:1], atol=1e-3 * float(expected.abs().max()))


def test_runner_refuses_a_training_encoder_and_unknown_names():
    encoder = build_sam("tiny", 64, pretrained=False).image_encoder
    with pytest.raises(ValueError, match="frozen encoder"):
        EncoderRunner(encoder, "eager", FP32)
    with pytest.raises(PlansError, match="model.encoder_runtime 'tensorrt' is unknown"):
        usable_runtime("tensorrt", "cpu")


def test_missing_optional_runtime_falls_back_to_eager_with_a_warning(monkeypatch):
    import logging

    import samunet.modeling.encoder_runtime_choice as er
    from samunet.utils.logs import get_logger

    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    get_logger().addHandler(handler)  # the samunet logger may not propagate (commands set it up)
    monkeypatch.setattr(er.importlib.util, "find_spec", lambda name: None)
    try:
        assert not runtime_available("openvino", "cpu")
        assert usable_runtime("openvino", "cpu") == "eager"
    finally:
        get_logger().removeHandler(handler)
    assert any("the openvino package is not installed (pip install openvino)" in line for line in lines), lines
    assert usable_runtime("jit_freeze", "cuda") == "eager"  # a CPU-only way asked for on a GPU
    assert default_encoder_runtime("cpu", "bf16") in er.ENCODER_RUNTIMES


def test_adapter_encodes_through_its_runtime(monkeypatch):
    from samunet.adapters.registry import build_adapter_from_parts

    sam = build_sam("litemedsam", 64, pretrained=False)
    adapter = build_adapter_from_parts("decoder", sam, 3, input_size=64, in_channels=1).eval()
    images = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        eager = adapter.encode(images)
    assert adapter.use_encoder_runtime("jit_freeze", FP32) == "jit_freeze"
    calls = []
    original = EncoderRunner.__call__
    monkeypatch.setattr(EncoderRunner, "__call__", lambda self, x: calls.append(x.shape) or original(self, x))
    with torch.no_grad():
        fast = adapter.encode(images)
    assert calls == [torch.Size([2, 3, 64, 64])]
    assert torch.allclose(fast, eager, atol=1e-3 * float(eager.abs().max()))
    trains_encoder = build_adapter_from_parts("full", build_sam("tiny", 64, pretrained=False), 3, input_size=64,
                                              in_channels=1)
    with pytest.raises(ValueError, match="trains its encoder"):
        trains_encoder.use_encoder_runtime("eager", FP32)


@pytest.mark.parametrize("runtime", [w for w in FAST_WAYS if w in ("openvino", "onnxruntime")])
def test_exported_runtime_builds_inside_the_callers_autocast(runtime):
    """The embedding cache encodes under the plans' autocast: the export must still trace a plain fp32 graph."""
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = frozen_encoder()(x)
    runner = EncoderRunner(frozen_encoder(), runtime, FP32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = runner(x)
    assert torch.allclose(out, expected, atol=1e-3 * float(expected.abs().max()))


@pytest.mark.parametrize("runtime", [w for w in FAST_WAYS if w in ("openvino", "onnxruntime")])
@pytest.mark.unmemoised  # the first build sees the bf16 input
def test_exported_runtime_takes_a_bf16_input(runtime):
    """A learned channel mixer before the encoder runs under bf16 autocast, so the encoder's input is bf16: the
    export still traces its fp32 graph (it failed with "Input type (c10::BFloat16) and bias type (float)")."""
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = frozen_encoder()(x.bfloat16().float())
    runner = EncoderRunner(frozen_encoder(), runtime, FP32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = runner(x.bfloat16())
    assert out.dtype == torch.float32 and torch.allclose(out, expected, atol=1e-3 * float(expected.abs().max()))


@pytest.mark.parametrize("runtime", [w for w in FAST_WAYS if w in SHAPE_SPECIALISED or w in PACKAGES])
@pytest.mark.unmemoised  # what a real build prints is the subject
def test_tracing_the_encoder_prints_no_warnings(runtime):
    """Tracing LiteMedSAM's encoder warns (torch.jit.trace's deprecation, a TracerWarning on its shape assert)
    at every run's start; the runner keeps those out of the user's console, and only those."""
    import warnings

    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        EncoderRunner(frozen_encoder(), runtime, FP32)(x)
        warnings.warn("a warning raised after the build still shows", UserWarning)
    kinds = [(w.category.__name__, str(w.message)[:60]) for w in caught]
    assert not [k for k in kinds if k[0] in ("TracerWarning", "FutureWarning")], kinds
    assert ("UserWarning", "a warning raised after the build still shows") in kinds
