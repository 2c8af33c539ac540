"""How many worker processes this machine affords (used by planning and preprocessing alike), and one call run in
a fresh interpreter (the planner's device probe and cost measurements)."""
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
    """``function(*args)`` in a new interpreter, returning its result (or raising its error): what the call
    allocates, and the libraries it imports, go with that process. ``function`` must be importable at module level.

    The child imports ``function``'s module alone: multiprocessing's spawn would import this program's main module
    again first (samunet_plan's brings SimpleITK, nibabel and scipy, 107 MiB of the measuring child's peak)."""
    import pickle
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="samunet_child_") as folder:
        request, result = Path(folder) / "request.pickle", Path(folder) / "result.pickle"
        request.write_bytes(pickle.dumps((function.__module__, function.__qualname__, args)))
        code = subprocess.run([sys.executable, "-m", "samunet.utils.processes", str(request), str(result)]).returncode
        if not result.is_file():
            raise RuntimeError(f"the process running {function.__module__}.{function.__qualname__} ended with exit "
                               f"code {code} and no result")
        failed, value = pickle.loads(result.read_bytes())  # written by our own child, never read from a dataset
    if failed:
        raise value
    return value


def _run_request(request: str, result: str) -> None:
    """The child's side of run_in_fresh_process: (failed, value) pickled to ``result``, renamed into place."""
    import importlib
    import pickle
    import traceback
    from pathlib import Path

    module, name, args = pickle.loads(Path(request).read_bytes())
    try:
        outcome = (False, getattr(importlib.import_module(module), name)(*args))
    except Exception as error:  # handed to the caller, with where it happened here
        error.add_note("in the child process:\n" + traceback.format_exc())
        try:
            pickle.dumps(error)
        except Exception:
            error = RuntimeError(f"{type(error).__name__}: {error}\n{traceback.format_exc()}")
        outcome = (True, error)
    partial = Path(result + ".partial")
    partial.write_bytes(pickle.dumps(outcome))
    partial.replace(result)


if __name__ == "__main__":
    import sys

    _run_request(sys.argv[1], sys.argv[2])
