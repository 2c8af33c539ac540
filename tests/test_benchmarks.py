"""The benchmarks call samunet's internals; a rename there must fail here, not silently in the next timing run."""
from __future__ import annotations

import importlib.util

from tests.conftest import REPO_ROOT


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_benchmark_times_the_real_step_at_the_batch_asked(hippocampus_preprocessed, monkeypatch):
    hippocampus_preprocessed.set_env(monkeypatch)
    bench = load_benchmark("bench_training")
    result = bench.measure("decoder", steps=1, warmup=1, threads=None, batch_size=2)
    assert result["batch_size"] == 2 != hippocampus_preprocessed.plans.training.batch_size
    assert result["slices_per_s"] > 0 and result["slices_per_s_cold"] > 0  # cached adapter: cold and warm timed
    assert result["trainable_params"] > 0
