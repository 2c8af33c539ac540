"""How fast can this machine run a frozen SAM-family image encoder, against its own matmul peak?

    python benchmarks/bench_encoder.py [--backbones litemedsam,vit_b] [--sizes 64,128,256] [--batches 1,8]
        [--runtimes eager_fp32,eager,channels_last,compile,jit_freeze,openvino,onnxruntime] [--repeats 3]
        [--threads N] [--gemm-seconds S] [--quick] [--json]

1. The ceiling: sustained GEMM throughput through torch (fp32, and bf16 where the CPU has native bf16).
2. The encoder's FLOPs per slice at each input size (``torch.utils.flop_counter``).
3. For each way of running it (``samunet.modeling.encoder_runtime``; ``eager_fp32`` is eager without autocast,
   the others use the precision the planner picks on this machine): seconds per slice at each size and batch,
   achieved GFLOP/s and its share of the peak, first-call time (tracing/conversion/compilation), peak RSS of a
   process that ran only that way, and the largest absolute difference of the embeddings from eager fp32.

Weights are random (seeded; speed does not depend on them). Warm-up calls are excluded from timings; threads are
set once (``--threads``, default all cores). Each (backbone, runtime) runs in its own process, so peak RSS and
compiled state do not leak between ways. ``--quick``: LiteMedSAM at input 256 and batch 8, today's baseline (eager
at the planner's precision) against samunet's default runtime; ``--json`` prints one JSON object as the last line.
Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from samunet.planning.hardware import (  # noqa: E402
    cpu_bf16_capability, cpu_has_native_bf16, cpu_model_name, describe_cpu,
)


def gemm_gflops(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Sustained GFLOP/s of an n x n x n matrix product (warm-up excluded)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        torch.mm(a, b)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - start) / 1e9


def build_encoder(backbone: str, size: int) -> torch.nn.Module:
    from samunet.modeling.build import build_sam_architecture

    torch.manual_seed(0)
    encoder = build_sam_architecture(backbone, size).image_encoder.eval()
    encoder.requires_grad_(False)
    return encoder


def encoder_flops(backbone: str, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    encoder = build_encoder(backbone, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(torch.rand(1, 3, size, size))
    return float(counter.get_total_flops())


def planner_precision() -> str:
    """What samunet_plan picks on this CPU: bf16 where native, otherwise fp32 (the planner then measures)."""
    return "bf16" if cpu_has_native_bf16() else "fp32"


def measure_way(backbone: str, runtime: str, sizes: list[int], batches: list[int], repeats: int, threads: int,
                queue) -> None:
    """Child process: every size x batch for one way of running the encoder; puts a list of rows on ``queue``."""
    torch.set_num_threads(threads)
    from samunet.modeling.encoder_runtime import EncoderRunner
    from samunet.modeling.runtime import precision_policy

    precision = "fp32" if runtime == "eager_fp32" else planner_precision()
    name = "eager" if runtime == "eager_fp32" else runtime
    policy = precision_policy(torch.device("cpu"), precision)
    rows = []
    try:
        for size in sizes:
            encoder = build_encoder(backbone, size)
            reference = EncoderRunner(build_encoder(backbone, size), "eager",
                                      precision_policy(torch.device("cpu"), "fp32"))
            runner = EncoderRunner(encoder, name, policy, threads)
            for batch in batches:
                x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(size + batch))
                start = time.perf_counter()
                out = runner(x)  # first call: builds (traces, converts, compiles) and runs
                first_call = time.perf_counter() - start
                runner(x)  # warm-up
                start = time.perf_counter()
                for _ in range(repeats):
                    out = runner(x)
                seconds = (time.perf_counter() - start) / repeats
                error = float((out - reference(x)).abs().max())
                rows.append({"backbone": backbone, "runtime": runtime, "precision": precision, "size": size,
                             "batch": batch, "seconds_per_slice": seconds / batch, "first_call_seconds": first_call,
                             "max_abs_embedding_error": error,
                             "embedding_scale": float(out.abs().max())})
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        for row in rows:
            row["peak_rss_mib"] = peak_rss
        queue.put(rows)
    except Exception as error:  # a runtime that cannot run this encoder: reported, not fatal
        queue.put([{"backbone": backbone, "runtime": runtime, "error": f"{type(error).__name__}: {error}"[:300]}])


def run_way(backbone, runtime, sizes, batches, repeats, threads) -> list[dict]:
    context = mp.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=measure_way, args=(backbone, runtime, sizes, batches, repeats, threads, queue))
    child.start()
    rows = queue.get()
    child.join()
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", default="litemedsam,vit_b")
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--runtimes", default="eager_fp32,eager,channels_last,compile,jit_freeze,openvino,onnxruntime")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--gemm-seconds", type=float, default=None,
                        help="how long each GEMM peak is timed (default 3 s, 1 s with --quick)")
    parser.add_argument("--quick", action="store_true", help="LiteMedSAM at 256, batch 8: baseline against default")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from samunet.modeling.encoder_runtime_choice import default_encoder_runtime, runtime_available

    default = default_encoder_runtime("cpu", planner_precision())
    print(f"{describe_cpu()}, {args.threads} threads, torch {torch.__version__}; "
          f"planner precision {planner_precision()}, samunet's default runtime {default}", flush=True)
    if args.quick:
        backbones, sizes, batches = ["litemedsam"], [256], [8]
        runtimes = ["eager"] + ([default] if default != "eager" else [])
        repeats = 2
    else:
        backbones, sizes = args.backbones.split(","), [int(s) for s in args.sizes.split(",")]
        batches, runtimes, repeats = [int(b) for b in args.batches.split(",")], args.runtimes.split(","), args.repeats

    gemm_seconds = args.gemm_seconds or (1.0 if args.quick else 3.0)
    peaks = {"fp32": gemm_gflops(torch.float32, seconds=gemm_seconds)}
    if cpu_has_native_bf16():
        peaks["bf16"] = gemm_gflops(torch.bfloat16, seconds=gemm_seconds)
    print("GEMM peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()), flush=True)
    flops = {(b, s): encoder_flops(b, s) for b in backbones for s in sizes}
    for (b, s), f in flops.items():
        print(f"{b} at {s}: {f / 1e9:.2f} GFLOP per slice", flush=True)

    rows = []
    for backbone in backbones:
        for runtime in runtimes:
            base = "eager" if runtime == "eager_fp32" else runtime
            if not runtime_available(base, "cpu"):
                print(f"{backbone} {runtime}: not installed here, skipped", flush=True)
                continue
            for row in run_way(backbone, runtime, sizes, batches, repeats, args.threads):
                if "error" in row:
                    print(f"{backbone} {runtime}: failed ({row['error']})", flush=True)
                    continue
                row["gflops"] = flops[(backbone, row["size"])] / row["seconds_per_slice"] / 1e9
                row["peak_share"] = row["gflops"] / peaks.get(row["precision"], peaks["fp32"])
                rows.append(row)
                print(f"{backbone:10s} {runtime:13s} {row['precision']:4s} input {row['size']:4d} "
                      f"batch {row['batch']}: "
                      f"{row['seconds_per_slice']:.4f} s/slice, {row['gflops']:.0f} GFLOP/s "
                      f"({row['peak_share']:.0%} of peak), first call {row['first_call_seconds']:.1f} s, "
                      f"peak RSS {row['peak_rss_mib']:.0f} MiB, max |emb - fp32| {row['max_abs_embedding_error']:.3g}",
                      flush=True)
    result = {"cpu": cpu_model_name(), "capability": cpu_bf16_capability(), "threads": args.threads,
              "peaks_gflops": peaks, "rows": rows}
    if args.quick:
        base = next(r for r in rows if r["runtime"] == "eager")
        chosen = next((r for r in rows if r["runtime"] == default), base)
        result = {"baseline_seconds_per_slice": base["seconds_per_slice"],
                  "default_seconds_per_slice": chosen["seconds_per_slice"],
                  "speedup": base["seconds_per_slice"] / chosen["seconds_per_slice"],
                  "default_runtime": default, "max_abs_embedding_error": chosen["max_abs_embedding_error"],
                  "baseline_precision": base["precision"], "capability": cpu_bf16_capability(),
                  "threads": args.threads}
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
