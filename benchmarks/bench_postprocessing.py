"""Seconds and memory of find_best's postprocessing at prediction time, on volumes up to large multi-class CT.

Times the two steps ``samunet_predict`` runs after the arg-max's inputs are ready: probability smoothing
(``smooth_probabilities``, in place as prediction does when no probabilities are saved, and into a copy as
validation does) and the largest-component step (``apply_step`` on all foreground). Inputs are synthetic: each
class two random ellipsoids, softmax-normalised noisy scores, so the filters see real-sized arrays (their cost
does not depend on the values). Peak memory is the traced numpy allocations above the input probabilities;
tracing does not change the seconds measurably (2.90-2.92 s traced or not for a 150x512x512 5-class volume).

    python benchmarks/bench_postprocessing.py [--shapes hippocampus leftatrium ct_abdomen ct_many_classes]
        [--sigma 0.75] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import time
import tracemalloc

import numpy as np

# name: (classes incl. background, (z, y, x), spacing (z, y, x) mm)
SHAPES = {
    "hippocampus": (3, (36, 50, 35), (1.0, 1.0, 1.0)),
    "leftatrium": (2, (88, 160, 232), (0.625, 0.625, 0.625)),
    "ct_abdomen": (5, (300, 512, 512), (1.5, 0.8, 0.8)),  # a few organs at full CT resolution
    "ct_many_classes": (42, (120, 256, 256), (3.0, 1.5, 1.5)),  # TotalSegmentator-like: 41 classes at 1.5-3 mm
}


def synthetic_probabilities(classes: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((classes, *shape), dtype=np.float32) * 0.5
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    for k in range(1, classes):
        for _ in range(2):  # two blobs per class: the component step has something to remove
            centre = [rng.uniform(0.2, 0.8) * n for n in shape]
            radius = [max(2.0, rng.uniform(0.03, 0.12) * n) for n in shape]
            inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius)) <= 1.0
            scores[k][inside] += 4.0
    scores -= scores.max(axis=0, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=0, keepdims=True)
    return scores


def timed(call, repeats: int) -> tuple[float, float]:
    """(median seconds, peak traced MiB above the start) over ``repeats`` calls."""
    seconds, peaks = [], []
    for _ in range(repeats):
        tracemalloc.start()
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2 ** 20)
        tracemalloc.stop()
    return float(np.median(seconds)), max(peaks)


def bench_shape(name: str, sigma: float, repeats: int) -> dict:
    from samunet.evaluation.postprocessing import apply_step
    from samunet.evaluation.smoothing import smooth_probabilities

    classes, shape, spacing = SHAPES[name]
    probabilities = synthetic_probabilities(classes, shape)
    copy_s, copy_mib = timed(lambda: smooth_probabilities(probabilities, spacing, sigma), repeats)
    work = probabilities.copy()  # the in-place run overwrites its input; each repeat filters the last result
    in_place_s, in_place_mib = timed(lambda: smooth_probabilities(work, spacing, sigma, in_place=True), repeats)
    segmentation = probabilities.argmax(axis=0).astype(np.uint8)
    component_s, component_mib = timed(lambda: apply_step(segmentation, list(range(1, classes))), repeats)
    return {"shape": name, "classes": classes, "voxels": int(np.prod(shape)),
            "probabilities_mib": round(probabilities.nbytes / 2 ** 20, 1), "sigma": sigma,
            "smoothing_copy_s": round(copy_s, 2), "smoothing_copy_extra_mib": round(copy_mib, 1),
            "smoothing_in_place_s": round(in_place_s, 2), "smoothing_in_place_extra_mib": round(in_place_mib, 1),
            "largest_component_s": round(component_s, 2), "largest_component_extra_mib": round(component_mib, 1)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--sigma", type=float, default=0.75, help="in finest-axis voxels (default 0.75)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    from samunet.planning.hardware import describe_cpu

    print(json.dumps({"cpu": describe_cpu(), "cpu_count": os.cpu_count(),
                      "load_average_1min_at_start": round(os.getloadavg()[0], 2)}), flush=True)
    results = []
    for name in args.shapes:
        results.append(bench_shape(name, args.sigma, args.repeats))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"load_average_1min_at_end": round(os.getloadavg()[0], 2)}))
    return results


if __name__ == "__main__":
    main()
