"""Time ``samunet_plan`` (verify + fingerprint + plan + preprocess) on all 260 Hippocampus cases.

The MSD task is first converted into a temporary raw folder (not timed). Prints wall time, peak resident
memory of the samunet_plan process tree (sampled every 50 ms with psutil, children included) and cases/s.

    python benchmarks/bench_plan.py [--np N] [--keep DIR] [--task MSD_TASK_DIR] [--backbone NAME]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS_TASK = (REPO / ".." / "shared" / "datasets" / "Task04_Hippocampus").resolve()


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_and_measure(command: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """(wall seconds, peak RSS bytes of the process tree, return code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, tree_rss(watched))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    stderr = proc.communicate()[1]
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(stderr[-3000:], file=sys.stderr)
    return wall, peak, proc.returncode


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--np", type=int, default=None, help="worker processes passed to samunet_plan -np")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    parser.add_argument("--task", type=Path, default=HIPPOCAMPUS_TASK, help="MSD task folder (default: Hippocampus)")
    parser.add_argument("--backbone", default=None, help="passed to samunet_plan (default: the planner's choice)")
    args = parser.parse_args(argv)
    if not args.task.is_dir():
        sys.exit(f"{args.task} is absent: this benchmark needs ../shared/datasets")
    from samunet.core.layout import plans_file
    from samunet.core.names import DEFAULT_PLANS_NAME
    from samunet.dataset.convert_msd import convert_msd_task
    from samunet.planning.hardware import describe_cpu

    with tempfile.TemporaryDirectory(prefix="bench_plan_") as tmp:
        work = args.keep or Path(tmp)
        raw, preprocessed = work / "raw", work / "preprocessed"
        raw.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        dataset = convert_msd_task(args.task, raw, num_processes=2)
        num_cases = len(list((dataset / "labelsTr").glob("*.nii.gz")))
        print(f"converted {num_cases} cases in {time.perf_counter() - t0:.1f} s (not timed below)")
        env = dict(os.environ, SAMUNET_RAW=str(raw), SAMUNET_PREPROCESSED=str(preprocessed),
                   SAMUNET_RESULTS=str(work / "results"))
        command = [sys.executable, "-m", "samunet.planning.cli", "-d", dataset.name, "--overwrite"]
        if args.np:
            command += ["-np", str(args.np)]
        if args.backbone:
            command += ["--backbone", args.backbone]
        wall, peak, code = run_and_measure(command, env)
        if code != 0:
            sys.exit(f"samunet_plan failed with exit code {code}")
        print(f"samunet_plan on {num_cases} cases of {args.task.name} ({describe_cpu()}; load shared with "
              f"other processes: {os.getloadavg()[0]:.1f} 1-min load average at the end)")
        print(f"  wall time {wall:.1f} s, peak RSS {peak / 1024**2:.0f} MiB (process tree), "
              f"{num_cases / wall:.1f} cases/s")
        plans_written = plans_file(preprocessed / dataset.name, DEFAULT_PLANS_NAME).is_file()
    return {"cases": num_cases, "wall_seconds": wall, "peak_rss_bytes": peak, "plans_written": plans_written}


if __name__ == "__main__":
    main()
