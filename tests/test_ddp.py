"""Distributed data parallel on CPU: two gloo processes under torchrun end with identical, trained weights."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from safetensors.torch import load_file

from samunet.training.ddp import strip_option, torchrun_command
from tests.training_helpers import ONE_THREAD_ENV, fold_folder, private_roots, same_weights

pytestmark = pytest.mark.usefixtures("single_torch_thread")

HARNESS = textwrap.dedent('''
    import sys
    from pathlib import Path
    import torch
    from safetensors.torch import save_file
    from samunet.training.ddp import init_distributed, shutdown_distributed
    from samunet.training.run_setup import TrainingOptions, write_model_folder_files
    from samunet.training.run_training import _prepare, build_adapter_for
    from samunet.training.trainer import FoldTrainer

    out = Path(sys.argv[1])
    ctx = init_distributed("cpu")
    torch.set_num_threads(1)
    for adapter_name in ("samed", "decoder"):  # plain DDP, and DDP around the cached-embedding head
        options = TrainingOptions(dataset="4", adapter=adapter_name, fold="all", epochs=1, iters_per_epoch=3,
                                  batch_size=4, num_workers=0)
        run = _prepare(options, ctx)
        adapter = build_adapter_for(run, torch.device("cpu"))
        if ctx.is_main:  # as run_training does once the adapter is built
            write_model_folder_files(run)
        save_file({k: v.contiguous() for k, v in adapter.trainable_state_dict().items()},
                  str(out / f"{adapter_name}_initial_{ctx.rank}.safetensors"))
        FoldTrainer(run, adapter, torch.device("cpu"), ctx).train()
        save_file({k: v.contiguous() for k, v in adapter.trainable_state_dict().items()},
                  str(out / f"{adapter_name}_rank{ctx.rank}.safetensors"))
    shutdown_distributed()
''')


def test_two_gloo_ranks_end_with_identical_trained_weights(hippocampus_preprocessed, tmp_path):
    roots = private_roots(hippocampus_preprocessed, tmp_path)
    harness = tmp_path / "ddp_harness.py"
    harness.write_text(HARNESS)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(harness),
               str(tmp_path)]
    result = subprocess.run(command, env={**os.environ, **roots, **ONE_THREAD_ENV}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("samed", "decoder"):
        rank0, rank1 = (load_file(str(tmp_path / f"{name}_rank{r}.safetensors")) for r in (0, 1))
        initial = load_file(str(tmp_path / f"{name}_initial_0.safetensors"))
        assert same_weights(initial, load_file(str(tmp_path / f"{name}_initial_1.safetensors")))
        assert same_weights(rank0, rank1), f"{name}: ranks diverged"
        assert not same_weights(rank0, initial), f"{name}: no training happened"
        # only rank 0 wrote, and what it wrote is what both ranks hold
        final = load_file(str(fold_folder(roots, name, "all") / "checkpoint_final.safetensors"))
        assert same_weights(final, rank0)


def test_num_gpus_relaunches_through_torchrun():
    argv = ["4", "ssam", "0", "--num-gpus", "2", "--epochs", "3", "--num-gpus=2"]
    command = torchrun_command(2, strip_option(argv, "--num-gpus"))
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in command
    assert command[-7:] == ["-m", "samunet.training.cli", "4", "ssam", "0", "--epochs", "3"]
