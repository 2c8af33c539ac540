"""How many worker processes this machine affords (used by planning and preprocessing alike)."""
from __future__ import annotations

import os

import psutil


def usable_cpu_count() -> int:
    """CPUs this process may use (respects affinity masks and containers), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_num_processes(bytes_per_process: float, reserve_fraction: float = 0.5) -> int:
    """Worker processes for CPU-bound dataset work: one per CPU, fewer when RAM would run out."""
    ram = psutil.virtual_memory().available * (1.0 - reserve_fraction)
    by_ram = int(ram // max(bytes_per_process, 1.0))
    return max(1, min(usable_cpu_count(), by_ram))


def run_in_fresh_process(function, *args):
    """``function(*args)`` in a newly spawned process, returning its result: what the call allocates (and the
    libraries it imports) go with that process. ``function`` must be importable at module level."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()
