"""Training throughput (slices/s) and peak memory per adapter, LiteMedSAM on Hippocampus at the planned input size.

Setup (not timed): the first ``--plan-cases`` Hippocampus cases are converted into a temporary raw folder,
planned with backbone ``litemedsam`` and preprocessed. Then, for every adapter, a fresh process builds the
adapter from those plans and runs the real training step (samunet.training: batches from the preprocessed
cache with augmentation, loss, optimizer, planned precision) for ``--steps`` timed steps after ``--warmup``
untimed ones. Cached-embedding adapters are timed twice: ``cold`` (every input encoded, as in the first epoch)
and ``warm`` (all inputs cached, as later on). Peak RSS is the process's maximum resident set size.

    python benchmarks/bench_training.py [--adapters ssam,samed,...] [--batch-sizes 4,8,16] [--steps 10] [--threads 1]
                                        [--keep DIR] [--json out.json]

``--batch-sizes`` times each adapter at those batch sizes instead of the planned one: slices per second is
per sample, so the fastest batch per sample is the largest figure (the planner caps the batch at 8).

``--threads`` sets torch's intra-op threads in the measuring process (default: torch's choice, one per core).
On a machine where other processes keep the cores busy, one thread is often faster than two (OpenMP
barriers wait for descheduled threads); the load average is printed with the results.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from samunet.core.names import ADAPTER_NAMES

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS_TASK = (REPO / ".." / "shared" / "datasets" / "Task04_Hippocampus").resolve()


def setup(work: Path, plan_cases: int, backbone: str) -> None:
    from samunet.dataset.convert_msd import convert_msd_task, msd_cases
    from samunet.core.names import DATASET_JSON_FILE
    from samunet.planning.cli import plan_dataset
    from samunet.utils.atomic import read_json

    for var, sub in (("SAMUNET_RAW", "raw"), ("SAMUNET_PREPROCESSED", "preprocessed"), ("SAMUNET_RESULTS", "results")):
        os.environ[var] = str(work / sub)
    training, _ = msd_cases(HIPPOCAMPUS_TASK, read_json(HIPPOCAMPUS_TASK / DATASET_JSON_FILE))
    raw = convert_msd_task(HIPPOCAMPUS_TASK, work / "raw", case_ids=[c.case_id for c in training[:plan_cases]],
                           num_processes=1)
    plan_dataset(raw.name, backbone=backbone, num_processes=1, progress=False)


def measure(adapter_name: str, steps: int, warmup: int, threads: int | None, batch_size: int | None = None) -> dict:
    """Runs in its own process (peak RSS per adapter)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from samunet.training.run_setup import TrainingOptions, prepare_run
    from samunet.training.run_training import build_adapter_for
    from samunet.training.ddp import DistributedContext
    from samunet.training.trainer import FoldTrainer

    run = prepare_run(TrainingOptions(dataset="4", adapter=adapter_name, fold="all", batch_size=batch_size),
                      write_splits=False)
    device = torch.device("cpu")
    adapter = build_adapter_for(run, device)
    trainer = FoldTrainer(run, adapter, device, DistributedContext())
    loader = iter(trainer.make_loader())
    batch_size = run.training.batch_size

    def step(batch):
        return trainer.train_step(batch)

    def timed(batches) -> float:
        start = time.perf_counter()
        for batch in batches:
            step(batch)
        return len(batches) * batch_size / (time.perf_counter() - start)

    batches = [next(loader) for _ in range(warmup + steps)]
    for batch in batches[:warmup]:
        step(batch)
    result = {"adapter": adapter_name, "threads": torch.get_num_threads(), "batch_size": batch_size,
              "input_size": run.plans.model.input_size, "precision": trainer.policy.name,
              "trainable_params": sum(p.numel() for p in adapter.trainable_parameters())}
    if trainer.cache is not None:
        trainer.cache.store.clear()
        trainer.cache.bytes = 0
        result["slices_per_s_cold"] = round(timed(batches[warmup:]), 2)
        result["slices_per_s"] = round(timed(batches[warmup:]), 2)  # same inputs again: all cached
    else:
        result["slices_per_s"] = round(timed(batches[warmup:]), 2)
    result["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", default=",".join(ADAPTER_NAMES))
    parser.add_argument("--batch-sizes", help="comma-separated batch sizes to time (default: the planned one)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--plan-cases", type=int, default=20)
    parser.add_argument("--backbone", default="litemedsam")
    parser.add_argument("--threads", type=int, help="torch threads in the measuring process")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(measure(args.worker, args.steps, args.warmup, args.threads, args.worker_batch)),
              flush=True)
        return
    if not HIPPOCAMPUS_TASK.is_dir():
        sys.exit(f"{HIPPOCAMPUS_TASK} is absent: this benchmark needs the shared Hippocampus data")
    from samunet.planning.hardware import describe_cpu

    print(f"{describe_cpu()}; load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_training_"))
    if not (work / "preprocessed").is_dir():
        setup(work, args.plan_cases, args.backbone)
    env = dict(os.environ, SAMUNET_RAW=str(work / "raw"), SAMUNET_PREPROCESSED=str(work / "preprocessed"),
               SAMUNET_RESULTS=str(work / "results"))
    results = []
    batches = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else [None]
    for name, batch in itertools.product(args.adapters.split(","), batches):
        out = subprocess.run([sys.executable, __file__, "--worker", name, "--steps", str(args.steps),
                              "--warmup", str(args.warmup)] + (["--threads", str(args.threads)] if args.threads else [])
                             + (["--worker-batch", str(batch)] if batch else []),
                             env=env, capture_output=True, text=True)
        line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}{f' at batch {batch}' if batch else ''}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(line[len("RESULT "):]))
        r = results[-1]
        cold = f", cold {r['slices_per_s_cold']}" if "slices_per_s_cold" in r else ""
        print(f"{name:11s} {r['slices_per_s']:8.2f} slices/s{cold}  peak RSS {r['peak_rss_gib']:.2f} GiB  "
              f"(batch {r['batch_size']}, input {r['input_size']}, {r['precision']}, {r['threads']} thread(s), "
              f"{r['trainable_params']:,} trainable; load average {os.getloadavg()[0]:.1f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
