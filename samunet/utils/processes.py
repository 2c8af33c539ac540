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
    allocates, and the libraries it imports, go with that process. ``function`` must be importable at module level;
    its arguments and result are plain JSON data.

    The child imports ``function``'s module alone: multiprocessing's spawn would import this program's main module
    again first (samunet_plan's brings SimpleITK, nibabel and scipy, 70-160 MiB of the measuring child's peak)."""
    import builtins
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="samunet_child_") as folder:
        request, result = Path(folder) / "request.json", Path(folder) / "result.json"
        request.write_text(json.dumps({"module": function.__module__, "function": function.__qualname__,
                                       "args": list(args)}))
        code = subprocess.run([sys.executable, "-m", "samunet.utils.processes", str(request), str(result)]).returncode
        if not result.is_file():
            raise RuntimeError(f"the process running {function.__module__}.{function.__qualname__} ended with exit "
                               f"code {code} and no result")
        outcome = json.loads(result.read_text())
    if "error" in outcome:
        failed = outcome["error"]
        kind = getattr(builtins, failed["type"], None)  # a built-in error keeps its type; others say their name
        if isinstance(kind, type) and issubclass(kind, Exception):
            error = kind(failed["message"])
        else:
            error = RuntimeError(f"{failed['type']}: {failed['message']}")
        error.add_note("in the child process:\n" + failed["traceback"])
        raise error
    return outcome["value"]


def _run_request(request: str, result: str) -> None:
    """The child's side of run_in_fresh_process: {"value"} or {"error"} as JSON in ``result``, renamed into place."""
    import importlib
    import json
    import traceback
    from pathlib import Path

    call = json.loads(Path(request).read_text())
    try:
        outcome = {"value": getattr(importlib.import_module(call["module"]), call["function"])(*call["args"])}
    except Exception as error:  # handed to the caller, with where it happened here
        outcome = {"error": {"type": type(error).__name__, "message": str(error),
                             "traceback": traceback.format_exc()}}
    partial = Path(result + ".partial")
    partial.write_text(json.dumps(outcome))
    partial.replace(result)


if __name__ == "__main__":
    import sys

    _run_request(sys.argv[1], sys.argv[2])
