"""Ways to run a frozen image encoder for pure inference (``model.encoder_runtime`` in the plans).

A frozen encoder (``decoder``/``cnnhead`` training with cached embeddings, and every adapter at prediction time
after ``merge()``) never needs gradients, so it may run outside PyTorch eager:

- ``eager``: the module as it is, under the plans' autocast (the reference);
- ``channels_last``: eager with NHWC tensors (faster convolutions in oneDNN);
- ``compile``: ``torch.compile`` with inductor (C++/OpenMP kernels on a CPU, Triton on a GPU);
- ``jit_freeze``: TorchScript trace, ``torch.jit.freeze`` and ``optimize_for_inference`` (oneDNN fusions; fp32);
- ``openvino``: the encoder converted by OpenVINO and compiled for the CPU, in bf16 where the plans ask for it
  (a dependency of samunet: the fastest way measured on CPUs);
- ``onnxruntime``: the encoder exported to ONNX and run by ONNX Runtime (fp32; ``pip install samunet[onnxruntime]``).

Every runner maps the prepared input (B, 3, S, S) to float32 embeddings (B, C, h, w) on the input's device.
A runner is built lazily at its first call, from that call's input: building (tracing, converting, compiling)
is what a first call costs, and ``benchmarks/bench_encoder.py`` reports it apart from the steady speed. The
exported ways take any batch size (``samunet.modeling.tinyvit`` keeps the batch dimension symbolic);
``jit_freeze`` is built once per input shape, since TorchScript freezes shapes into its fusions.
"""
from __future__ import annotations

import contextlib
import sys
import warnings

import torch
from torch import nn

from samunet.core.names import ENCODER_RUNTIMES
from samunet.core.plans import PlansError
from samunet.modeling.encoder_runtime_choice import PACKAGES
from samunet.modeling.runtime import PrecisionPolicy
from samunet.utils.logs import get_logger

log = get_logger()

SHAPE_SPECIALISED = ("jit_freeze",)


@contextlib.contextmanager
def quiet_tracing():
    """Silence what tracing the encoder prints at every run's start: torch.jit.trace's deprecation notice
    (FutureWarning) and TracerWarnings about Python-level shape checks. Both are harmless here: the graph
    is traced at the input size it will run at, and only the batch dimension varies (tested against eager)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


class EncoderRunner:
    """A frozen encoder behind one of ``ENCODER_RUNTIMES``; call it with prepared inputs (B, 3, S, S)."""

    def __init__(self, encoder: nn.Module, runtime: str, policy: PrecisionPolicy, threads: int | None = None):
        if runtime not in ENCODER_RUNTIMES:
            raise PlansError(f"model.encoder_runtime {runtime!r} is unknown; known: {', '.join(ENCODER_RUNTIMES)}")
        if any(p.requires_grad for p in encoder.parameters()):
            raise ValueError(f"encoder runtime {runtime!r} needs a frozen encoder (it runs without gradients)")
        self.encoder, self.runtime, self.policy = encoder.eval(), runtime, policy
        self.threads = threads or torch.get_num_threads()
        self._runs: dict[tuple | None, object] = {}  # input shape (None: any shape) -> built function

    @property
    def built(self) -> bool:
        return bool(self._runs)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape) if self.runtime in SHAPE_SPECIALISED else None
        if key not in self._runs:
            self._runs[key] = self._build(x)
        return self._runs[key](x)

    # --- one builder per runtime; each returns a function of the prepared input --------------------------
    def _build(self, example: torch.Tensor):
        # exported graphs are traced in fp32, outside the caller's autocast
        exported = self.runtime in PACKAGES
        if exported:  # a bf16 input (a channel mixer run under autocast) would trace against the fp32 weights
            example = example.float()
        precision = torch.autocast(example.device.type, enabled=False) if exported else contextlib.nullcontext()
        with precision, quiet_tracing():
            return getattr(self, f"_build_{self.runtime}")(example)

    def _build_eager(self, example):
        def run(x):
            with self.policy.autocast():
                return self.encoder(x).float()
        return run

    def _build_channels_last(self, example):
        self.encoder.to(memory_format=torch.channels_last)

        def run(x):
            with self.policy.autocast():
                return self.encoder(x.contiguous(memory_format=torch.channels_last)).float().contiguous()
        return run

    def _build_compile(self, example):
        # dynamic=False: one graph per batch shape (a fold sees two: the batch and the last, smaller one)
        compiled = torch.compile(self.encoder, dynamic=False)

        def run(x):
            with self.policy.autocast():
                return compiled(x).float()
        return run

    def _build_jit_freeze(self, example):
        traced = torch.jit.trace(self.encoder, example, check_trace=False)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))

        def run(x):
            return frozen(x).float()
        return run

    def _build_openvino(self, example):
        # without its telemetry package ovc uses its no-op stub: each convert_model otherwise forked the process
        # about 35 times to send usage events (a 1 GiB planning process then read 2.5 GiB as a process tree)
        sys.modules.setdefault("openvino_telemetry", None)
        import openvino as ov

        # traced on one slice (the trace runs the encoder eagerly in fp32); the batch dimension stays dynamic
        model = ov.convert_model(self.encoder, example_input=example[:1],
                                 input=[ov.PartialShape([-1, *example.shape[1:]])])
        precision = "bf16" if self.policy.autocast_dtype == torch.bfloat16 else "f32"
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                          "INFERENCE_NUM_THREADS": self.threads,
                                                          "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()

        def run(x):
            out = request.infer({0: x.detach().to("cpu", torch.float32).numpy()}, share_inputs=True)
            return torch.from_numpy(out[0].copy()).to(x.device)
        return run

    def _build_onnxruntime(self, example):
        import io

        import onnxruntime as ort

        buffer = io.BytesIO()
        torch.onnx.export(self.encoder, (example[:1],), buffer, input_names=["x"], output_names=["embedding"],
                          dynamic_axes={"x": {0: "batch"}, "embedding": {0: "batch"}}, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

        def run(x):
            out = session.run(None, {"x": x.detach().to("cpu", torch.float32).numpy()})[0]
            return torch.from_numpy(out).to(x.device)
        return run
