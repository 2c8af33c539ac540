"""Time ``samunet_plan`` (verify + fingerprint + plan + preprocess) and its peak memory per stage.

Default: all 260 Hippocampus cases (the MSD task is first converted into a temporary raw folder, not timed).
``--synthetic 50 100 200 400``: one plan per count on synthetic MR-like volumes of ``--shape`` (default
10 x 256 x 256, uncompressed NIfTI, written once and linked into one dataset per count; 40 distinct volumes
repeated, as content does not change memory), each with a fresh preprocessed root so the cost measurement runs
every time. Prints wall time and peak resident memory of the samunet_plan process tree (sampled every 50 ms with
psutil, children included) per stage, the stage being told by the command's own log lines: verify, fingerprint,
plan (the cost measurement), preprocess.

    python benchmarks/bench_plan.py [--np N] [--keep DIR] [--task MSD_TASK_DIR] [--backbone NAME]
                                    [--synthetic N [N ...]] [--shape Z Y X] [--no-measure]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS_TASK = (REPO / ".." / "shared" / "datasets" / "Task04_Hippocampus").resolve()
STAGES = ("verify", "fingerprint", "plan", "preprocess")
# the log line that ends each stage but the last (samunet/planning/cli.py)
STAGE_ENDS = {"verify": ("dataset verified",), "fingerprint": ("fingerprint of ",),
              "plan": ("plans written to", "keeping the existing plans")}
DISTINCT_SYNTHETIC_CASES = 40
SYNTHETIC_DATASET_ID = 950


PSS_EVERY = 10  # samples: reading PSS (/proc/PID/smaps) every 50 ms slowed the measured planning by a third


def tree_memory(process: psutil.Process, with_pss: bool) -> tuple[int, int]:
    """(RSS, PSS or 0) summed over the process tree. RSS counts the pages a parent and its children share (torch's
    libraries, mapped by each) once per process; PSS splits each shared page among its sharers, so the tree's PSS is
    the memory it takes from the machine."""
    rss = pss = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            info = p.memory_full_info() if with_pss else p.memory_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss if with_pss else 0)
    return rss, pss


def run_and_measure(command: list[str], env: dict[str, str]) -> tuple[float, int, int, dict[str, dict], int]:
    """(wall seconds, peak RSS bytes of the process tree, return code, per stage {"peak_rss_bytes",
    "peak_pss_bytes", "seconds"}, peak RSS bytes of its largest single process).

    The tree's figures are sampled and can miss a peak shorter than the interval; the largest process's is the
    kernel's own high-water mark (``wait4``: the command and every descendant it waited for)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(proc.pid)
    stage = {"name": STAGES[0], "since": start}
    stages = {name: {"peak_rss_bytes": 0, "peak_pss_bytes": 0, "seconds": 0.0} for name in STAGES}
    stderr_lines: list[str] = []

    samples = [0]

    def sample(with_pss: bool = False) -> int:
        samples[0] += 1
        current = stages[stage["name"]]
        first_of_stage = current["peak_pss_bytes"] == 0  # a stage shorter than PSS_EVERY samples gets one too
        rss, pss = tree_memory(watched, with_pss=with_pss or first_of_stage or samples[0] % PSS_EVERY == 1)
        current["peak_rss_bytes"] = max(current["peak_rss_bytes"], rss)
        current["peak_pss_bytes"] = max(current["peak_pss_bytes"], pss)
        return rss

    def follow_stdout() -> None:  # the stage changes when the command logs its end
        for line in proc.stdout:
            ends = STAGE_ENDS.get(stage["name"], ())
            if any(line.startswith(marker) for marker in ends):
                try:
                    sample(with_pss=True)  # a stage shorter than the sampling interval gets its figure
                except psutil.NoSuchProcess:
                    pass
                now = time.perf_counter()
                stages[stage["name"]]["seconds"] = now - stage["since"]
                stage["name"], stage["since"] = STAGES[STAGES.index(stage["name"]) + 1], now

    readers = [threading.Thread(target=follow_stdout, daemon=True),
               threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True)]
    for reader in readers:
        reader.start()
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        try:
            peak = max(peak, sample())
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.05)
    for reader in readers:
        reader.join()
    peak = max(peak, *(s["peak_rss_bytes"] for s in stages.values()))  # with the samples taken at stage ends
    wall = time.perf_counter() - start
    stages[stage["name"]]["seconds"] = wall - (stage["since"] - start)
    if proc.returncode != 0:
        print("".join(stderr_lines)[-3000:], file=sys.stderr)
    return wall, peak, proc.returncode, stages, usage.ru_maxrss * 1024  # Linux reports KiB


def write_synthetic_pool(folder: Path, count: int, shape: tuple[int, int, int]) -> list[tuple[Path, Path]]:
    """``count`` distinct (image, label) files of ``shape`` (the demo's MR-like volumes)."""
    import numpy as np

    from samunet.dataset.image_io import write_image, write_segmentation
    from samunet.demo.synthetic import make_case

    rng = np.random.default_rng(0)
    pairs = []
    for i in range(count):
        case = make_case(rng, shape=shape, spacing=(6.0, 1.0, 1.0))
        pair = (folder / f"image_{i:03d}.nii", folder / f"label_{i:03d}.nii")
        write_image(case.image, case.geometry, pair[0])
        write_segmentation(case.label, case.geometry, pair[1])
        pairs.append(pair)
    return pairs


def link_synthetic_dataset(raw: Path, pool: list[tuple[Path, Path]], num_cases: int) -> Path:
    """A raw dataset of ``num_cases`` cases whose files are links into ``pool`` (cycled)."""
    from samunet.demo.synthetic import DEMO_LABELS

    dataset = raw / f"Dataset{SYNTHETIC_DATASET_ID:03d}_Synthetic{num_cases}"
    for sub in ("imagesTr", "labelsTr"):
        (dataset / sub).mkdir(parents=True, exist_ok=True)
    for i in range(num_cases):
        image, label = pool[i % len(pool)]
        os.symlink(image, dataset / "imagesTr" / f"case_{i:04d}_0000.nii")
        os.symlink(label, dataset / "labelsTr" / f"case_{i:04d}.nii")
    (dataset / "dataset.json").write_text(json.dumps({
        "name": f"Synthetic{num_cases}", "channel_names": {"0": "MRI"}, "labels": DEMO_LABELS,
        "numTraining": num_cases, "file_ending": ".nii"}))
    return dataset


def plan_and_measure(dataset: Path, work: Path, args) -> dict:
    """One samunet_plan run on ``dataset`` (under ``work/raw``) with a fresh preprocessed root."""
    preprocessed = work / f"preprocessed_{dataset.name}"
    env = dict(os.environ, SAMUNET_RAW=str(dataset.parent), SAMUNET_PREPROCESSED=str(preprocessed),
               SAMUNET_RESULTS=str(work / "results"))
    command = [sys.executable, "-m", "samunet.planning.cli", "-d", dataset.name, "--overwrite"]
    if args.np:
        command += ["-np", str(args.np)]
    if args.backbone:
        command += ["--backbone", args.backbone]
    if args.no_measure:
        command += ["--no-measure"]
    wall, peak, code, stages, largest = run_and_measure(command, env)
    if code != 0:
        sys.exit(f"samunet_plan failed with exit code {code}")
    from samunet.core.layout import plans_file
    from samunet.core.names import DEFAULT_PLANS_NAME

    plans_path = plans_file(preprocessed / dataset.name, DEFAULT_PLANS_NAME)
    plans = json.loads(plans_path.read_text()) if plans_path.is_file() else None
    num_cases = len(list((dataset / "labelsTr").iterdir()))
    if not args.keep:
        shutil.rmtree(preprocessed)  # the next count's cache would otherwise fill the disk
    return {"cases": num_cases, "wall_seconds": wall, "peak_rss_bytes": peak, "largest_process_bytes": largest,
            "stages": stages,
            "plans_written": plans is not None, "plans": plans}


def print_row(result: dict, label: str) -> None:
    mib = 1024 ** 2
    per_stage = ", ".join(f"{name} {s['peak_rss_bytes'] / mib:.0f} (PSS {s['peak_pss_bytes'] / mib:.0f}) MiB / "
                          f"{s['seconds']:.1f} s" for name, s in result["stages"].items())
    pss = max(s["peak_pss_bytes"] for s in result["stages"].values())
    print(f"  {label}: wall {result['wall_seconds']:.1f} s, peak RSS {result['peak_rss_bytes'] / mib:.0f} MiB "
          f"(process tree; PSS {pss / mib:.0f} MiB; largest process {result['largest_process_bytes'] / mib:.0f} "
          f"MiB), {result['cases'] / result['wall_seconds']:.1f} cases/s; "
          f"per stage: {per_stage}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--np", type=int, default=None, help="worker processes passed to samunet_plan -np")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    parser.add_argument("--task", type=Path, default=HIPPOCAMPUS_TASK, help="MSD task folder (default: Hippocampus)")
    parser.add_argument("--backbone", default=None, help="passed to samunet_plan (default: the planner's choice)")
    parser.add_argument("--synthetic", type=int, nargs="+", default=None, metavar="N",
                        help="plan synthetic datasets of these case counts instead of the task")
    parser.add_argument("--shape", type=int, nargs=3, default=(10, 256, 256), metavar=("Z", "Y", "X"),
                        help="synthetic volume shape (default 10 256 256)")
    parser.add_argument("--no-measure", action="store_true", help="passed to samunet_plan (fixed cost estimates)")
    args = parser.parse_args(argv)
    if args.synthetic is None and not args.task.is_dir():
        sys.exit(f"{args.task} is absent: this benchmark needs ../shared/datasets")
    from samunet.planning.hardware import describe_cpu

    with tempfile.TemporaryDirectory(prefix="bench_plan_") as tmp:
        work = args.keep or Path(tmp)
        raw = work / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if args.synthetic is None:
            from samunet.dataset.convert_msd import convert_msd_task

            datasets = [convert_msd_task(args.task, raw, num_processes=2)]
            what = args.task.name
        else:
            pool_folder = work / "synthetic_pool"
            pool_folder.mkdir(parents=True, exist_ok=True)
            pool = write_synthetic_pool(pool_folder, min(DISTINCT_SYNTHETIC_CASES, max(args.synthetic)),
                                        tuple(args.shape))
            datasets = [link_synthetic_dataset(raw / f"count_{n}", pool, n) for n in args.synthetic]
            what = "synthetic volumes of " + " x ".join(map(str, args.shape))
        print(f"wrote the raw data in {time.perf_counter() - t0:.1f} s (not timed below)", flush=True)
        print(f"samunet_plan on {what} ({describe_cpu()})", flush=True)
        results = []
        for dataset in datasets:
            result = plan_and_measure(dataset, work, args)
            print_row(result, f"{result['cases']} cases")
            results.append(result)
        print(f"  load shared with other processes: {os.getloadavg()[0]:.1f} 1-min load average at the end")
        if len(results) > 1:
            peaks = [r["peak_rss_bytes"] for r in results]
            print(f"  peak RSS from {results[0]['cases']} to {results[-1]['cases']} cases: "
                  f"{min(peaks) / 1024**2:.0f}-{max(peaks) / 1024**2:.0f} MiB "
                  f"(max/min {max(peaks) / min(peaks):.2f})")
    first = results[0]
    return {**first, "runs": results}


if __name__ == "__main__":
    main()
