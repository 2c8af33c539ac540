"""Adapter speed and memory on this machine's CPU: ViT-B@256 (random init) and LiteMedSAM@256.

Per adapter (own subprocess, so its peak RSS is its own): inference forward and training forward+backward
time per image, fp32 and bf16 autocast, median of ``--repeats`` runs after one warm-up (batch ``--batch``).
Key ratios, measured interleaved (A, B, A, B, ...) because the CPU is shared and noisy:
- ssam training step (forward, backward, AdamW step) vs the same model with plain frozen linear layers and
  only the other S-SAM parameters (LayerNorms, position embedding, label tokens) trainable (target <= 1.3x);
- merged ssam inference vs that plain model (target <= 1.05x); unmerged ssam inference (cached W') too.

    python benchmarks/bench_adapters.py [--backbones vit_b litemedsam] [--batch 4] [--repeats 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from samunet.core.names import ADAPTER_NAMES

SIZE = 256
NUM_CLASSES = 4


def _build(adapter: str, backbone: str, global_attention: bool):
    from samunet.adapters import build_adapter_from_parts
    from samunet.modeling import build_sam

    sam = build_sam(backbone, SIZE, global_attention=global_attention, pretrained=backbone == "litemedsam")
    return build_adapter_from_parts(adapter, sam, NUM_CLASSES)


def _autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def _forward(model, x, precision):
    model.eval()
    with torch.no_grad(), _autocast(precision):
        model(x)


def _train_step(model, x, precision, optimizer=None):
    model.train()
    with _autocast(precision):
        loss = model(x).float().square().mean()
    loss.backward()
    if optimizer is not None:
        optimizer.step()
    model.zero_grad(set_to_none=True)


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (first-call allocations, cached weights)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _interleaved(fn_a, fn_b, repeats: int) -> dict:
    """A, B, A, B, ...: both see the same background load. The minimum is the least disturbed run."""
    fn_a(), fn_b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, acc in ((fn_a, ta), (fn_b, tb)):
            start = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - start)
    return {"ssam_s": min(ta), "plain_s": min(tb), "ratio": min(ta) / min(tb),
            "ratio_median": statistics.median(ta) / statistics.median(tb), "ssam_runs": ta, "plain_runs": tb}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_adapter(adapter: str, backbone: str, batch: int, repeats: int, global_attention: bool) -> dict:
    torch.manual_seed(0)
    start = time.perf_counter()
    model = _build(adapter, backbone, global_attention)
    row = {"adapter": adapter, "backbone": backbone, "batch": batch, "build_s": time.perf_counter() - start,
           **model.parameter_counts()}
    x = torch.rand(batch, 3, SIZE, SIZE)
    for precision in ("fp32", "bf16"):
        row[f"fwd_{precision}"] = _median_time(lambda: _forward(model, x, precision), repeats) / batch
        row[f"train_{precision}"] = _median_time(lambda: _train_step(model, x, precision), repeats) / batch
    row["peak_rss_mb"] = _peak_rss_mb()
    return row


def worker_ratios(backbone: str, batch: int, repeats: int, global_attention: bool) -> dict:
    """ssam vs the same network with plain frozen layers (S-SAM's other parameters trainable)."""
    import copy

    from samunet.adapters.svd_linear import merge_svd

    torch.manual_seed(0)
    ssam = _build("ssam", backbone, global_attention)
    plain = copy.deepcopy(ssam)
    merge_svd(plain.sam.image_encoder)  # frozen nn.Linear / Conv2d again; LayerNorms etc. still train
    x = torch.rand(batch, 3, SIZE, SIZE)
    out = {"backbone": backbone, "batch": batch, "global_attention": global_attention,
           "trainable_ssam": ssam.parameter_counts()["trainable"],
           "trainable_plain": sum(p.numel() for p in plain.trainable_parameters())}
    opt_s = torch.optim.AdamW(ssam.trainable_parameters(), lr=1e-4)
    opt_p = torch.optim.AdamW(plain.trainable_parameters(), lr=1e-4)
    for precision in ("fp32", "bf16"):
        out[f"train_{precision}"] = _interleaved(lambda: _train_step(ssam, x, precision, opt_s),
                                                 lambda: _train_step(plain, x, precision, opt_p), repeats)
        out[f"infer_unmerged_{precision}"] = _interleaved(lambda: _forward(ssam, x, precision),
                                                          lambda: _forward(plain, x, precision), repeats)
    merged = copy.deepcopy(ssam).merge()
    for precision in ("fp32", "bf16"):
        out[f"infer_merged_{precision}"] = _interleaved(lambda: _forward(merged, x, precision),
                                                        lambda: _forward(plain, x, precision), repeats)
    return out


def _run_worker(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed", "args": args}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def format_report(rows: list[dict], ratios: list[dict]) -> str:
    lines = [f"{'backbone':<11}{'adapter':<11}{'batch':>5}{'trainable':>12}{'fwd fp32':>10}{'fwd bf16':>10}"
             f"{'f+b fp32':>10}{'f+b bf16':>10}{'peak RSS':>10}   (seconds per image)"]
    for r in rows:
        if "error" in r:
            lines.append(f"{' '.join(r['args'][1:3]):<22} failed: {r['error']}")
            continue
        lines.append(f"{r['backbone']:<11}{r['adapter']:<11}{r['batch']:>5}{r['trainable']:>12,}"
                     f"{r['fwd_fp32']:>10.3f}{r['fwd_bf16']:>10.3f}{r['train_fp32']:>10.3f}{r['train_bf16']:>10.3f}"
                     f"{r['peak_rss_mb']:>8.0f}MB")
    for q in ratios:
        if "error" in q:
            lines.append(f"ratios failed: {q['error']}")
            continue
        layout = "global attention (S-SAM layout)" if q["global_attention"] else "stock attention layout"
        lines.append(f"\nssam vs plain frozen layers, {q['backbone']}@{SIZE}, batch {q['batch']}, {layout} "
                     f"(trainable {q['trainable_ssam']:,} vs {q['trainable_plain']:,}); seconds per batch, "
                f"fastest of the interleaved runs (ratio of medians in brackets):")
        for key, label, target in (("train", "training step", 1.3), ("infer_unmerged", "inference, unmerged", None),
                                   ("infer_merged", "inference, merged", 1.05)):
            for precision in ("fp32", "bf16"):
                v = q[f"{key}_{precision}"]
                goal = f"  (target <= {target}x)" if target else ""
                lines.append(f"  {label:<22}{precision}: {v['ssam_s']:7.3f} vs {v['plain_s']:7.3f} = "
                             f"{v['ratio']:.2f}x ({v['ratio_median']:.2f}x){goal}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["vit_b", "litemedsam"])
    p.add_argument("--adapters", nargs="+", default=list(ADAPTER_NAMES))
    p.add_argument("--batch", type=int, default=2, help="per-adapter table batch")
    p.add_argument("--ratio-batch", type=int, default=4, help="batch of the interleaved ssam ratios")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ratio-repeats", type=int, default=5)
    p.add_argument("--stock-attention", action="store_true", help="ViT: windowed layout instead of S-SAM's global")
    p.add_argument("--skip-ratios", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--worker", nargs=2, metavar=("KIND", "NAME"), help=argparse.SUPPRESS)
    p.add_argument("--backbone", help=argparse.SUPPRESS)
    args = p.parse_args()
    global_attention = not args.stock_attention
    if args.worker:
        kind, name = args.worker
        ga = global_attention and args.backbone != "litemedsam"
        result = (worker_ratios(args.backbone, args.ratio_batch, args.ratio_repeats, ga) if kind == "ratios"
                  else worker_adapter(name, args.backbone, args.batch, args.repeats, ga))
        print(json.dumps(result))
        return
    from samunet.planning.hardware import describe_cpu

    print(f"{describe_cpu()}, torch {torch.__version__}", flush=True)
    common = ["--batch", str(args.batch), "--repeats", str(args.repeats), "--ratio-repeats", str(args.ratio_repeats),
              "--ratio-batch", str(args.ratio_batch)]
    common += ["--stock-attention"] if args.stock_attention else []
    rows, ratios = [], []
    for backbone in args.backbones:
        if not args.skip_ratios:
            ratios.append(_run_worker(["--worker", "ratios", "-", "--backbone", backbone, *common]))
            print(format_report([], ratios[-1:]), flush=True)
        for adapter in args.adapters:
            rows.append(_run_worker(["--worker", "adapter", adapter, "--backbone", backbone, *common]))
            print(format_report(rows[-1:], []).splitlines()[-1], flush=True)
    print("\n" + format_report(rows, ratios))
    if args.json:
        args.json.write_text(json.dumps({"adapters": rows, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
