"""Distributed data parallel training: process group set-up from torchrun's environment, and the launcher.

``torchrun --nproc_per_node N -m samunet.training.cli DATASET ADAPTER FOLD`` starts N processes; each reads
RANK / WORLD_SIZE / LOCAL_RANK from the environment, joins the group (NCCL on GPUs, gloo on CPU), draws its
own batches (the rank is part of every batch seed) and only rank 0 writes files. ``samunet_train --num-gpus N``
re-launches itself through torchrun.
"""
from __future__ import annotations

import datetime
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

# validation runs on rank 0 while the others wait at a barrier: allow it to take long
PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=3)


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device_type: str) -> DistributedContext:
    """Join the process group when started by torchrun; a single process otherwise."""
    if not launched_by_torchrun():
        return DistributedContext()
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=PROCESS_GROUP_TIMEOUT)
    return DistributedContext(rank, world_size, local_rank)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    if ctx.enabled:
        dist.barrier()


def max_over_ranks(ctx: DistributedContext, value: float, device: torch.device) -> float:
    """The largest ``value`` of all ranks, on every rank (so values that steer training agree everywhere)."""
    if not ctx.enabled:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def wrap_model(model: torch.nn.Module, ctx: DistributedContext, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel over the trainable parameters (frozen ones are ignored by DDP)."""
    if not ctx.enabled:
        return model
    device_ids = [ctx.local_rank] if device.type == "cuda" else None
    # some adapters own trainable parameters that the loss does not reach (e.g. SAM's IoU head): let DDP cope.
    # Buffers are not broadcast: they are identical on every rank (frozen SVD factors, frozen BatchNorm stats)
    # and some are large.
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True,
                                                     broadcast_buffers=False)


def torchrun_command(num_processes: int, cli_args: list[str]) -> list[str]:
    """The torchrun command running ``samunet.training.cli`` with ``cli_args`` on ``num_processes`` local processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_processes}",
            "-m", "samunet.training.cli", *cli_args]


def strip_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option`` and its value (``--opt V`` or ``--opt=V``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == option:
            skip = True
            continue
        if arg.startswith(option + "="):
            continue
        out.append(arg)
    return out


def launch_torchrun(num_processes: int, argv: list[str]) -> int:
    """Re-run this training under torchrun with ``num_processes`` processes; returns its exit code."""
    command = torchrun_command(num_processes, strip_option(argv, "--num-gpus"))
    print("Launching: " + " ".join(command), file=sys.stderr)
    return subprocess.call(command)
