"""Progress for long loops: a tqdm bar on a terminal, plain log lines when stderr is a file.

Under ``nohup`` or SLURM a bar's redraws become hundreds of lines per epoch in the log; there, a loop over
cases prints one line per case (nnU-Net's style) and a loop over iterations prints nothing (the caller logs
its own line per epoch).
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator


def interactive() -> bool:
    """True when progress bars can redraw in place (stderr is a terminal)."""
    return sys.stderr.isatty()


class _LineProgress:
    """The non-terminal stand-in for a tqdm bar: same iteration, ``set_postfix`` and ``close``."""

    def __init__(self, iterable: Iterable, desc: str, total: int | None, unit: str, lines: bool):
        self.iterable, self.desc, self.unit, self.lines = iterable, desc, unit, lines
        self.total = total if total is not None else _length(iterable)

    def __iter__(self) -> Iterator:
        from samunet.utils.logs import get_logger

        started = time.perf_counter()
        for done, item in enumerate(self.iterable, start=1):
            yield item
            if self.lines:
                of_total = f"/{self.total}" if self.total is not None else ""
                get_logger().info("%s: %d%s %s(s) done (%.0f s)", self.desc, done, of_total, self.unit,
                                  time.perf_counter() - started)

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _length(iterable: Iterable) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress(iterable: Iterable, desc: str, total: int | None = None, unit: str = "it", leave: bool = True,
             disable: bool = False, lines: bool = True, **tqdm_options):
    """Iterate ``iterable`` with progress: a tqdm bar on a terminal; otherwise one log line per item when
    ``lines`` (loops over cases), or nothing (loops over iterations or chunks). ``disable``: no progress at all."""
    if disable:
        return _LineProgress(iterable, desc, total, unit, lines=False)
    if not interactive():
        return _LineProgress(iterable, desc, total, unit, lines)
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, **tqdm_options)
