"""Progress for long loops: a tqdm bar on a terminal, plain log lines when stderr is a file.

Under ``nohup`` or SLURM a bar's redraws become hundreds of lines per epoch in the log; there, a loop over
cases prints a line per case (nnU-Net's style) at most every ``LINE_INTERVAL_S`` seconds, and always its last,
and a loop over iterations prints nothing (the caller logs its own line per epoch).
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator

# a loop that finishes cases faster than this logs only some of them: samunet_find_best scores 52 saved
# validation cases per candidate in a second, which printed 52 lines each (300 lines of "0 s" per run)
LINE_INTERVAL_S = 10.0


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

        started = last_line = time.perf_counter()
        done = logged = 0
        of_total = f"/{self.total}" if self.total is not None else ""

        def line(seconds: float) -> None:
            get_logger().info("%s: %d%s %s(s) done (%.0f s)", self.desc, done, of_total, self.unit, seconds)

        for done, item in enumerate(self.iterable, start=1):
            yield item
            now = time.perf_counter()
            if self.lines and (now - last_line >= LINE_INTERVAL_S or done == self.total):
                line(now - started)
                last_line, logged = now, done
        if self.lines and done > logged:  # an iterable of unknown length: its last line once it ends
            line(time.perf_counter() - started)

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
