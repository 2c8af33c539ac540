"""Progress for long loops: a tqdm bar on a terminal, plain log lines when stderr is a file.

Under ``nohup`` or SLURM a bar's redraws become hundreds of lines per epoch in the log; there, a loop over
cases prints a line per case (nnU-Net's style) at most every ``LINE_INTERVAL_S`` seconds, and always its last,
and a loop over iterations or chunks (``lines=False``: the caller logs its own line per epoch) prints a line
once ``QUIET_LOOP_INTERVAL_S`` seconds pass without one. Each line says done/total, the rate and the time left,
and goes through the samunet logger, so to the command's log file too.
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator

# a loop that finishes cases faster than this logs only some of them: samunet_find_best scores 52 saved
# validation cases per candidate in a second, which printed 52 lines each (300 lines of "0 s" per run)
LINE_INTERVAL_S = 10.0
# a loop over iterations says it moves at least this often: a cold first epoch (every embedding encoded) ran
# about 6 minutes without a line under nohup, which reads as a hung run
QUIET_LOOP_INTERVAL_S = 30.0


def interactive() -> bool:
    """True when progress bars can redraw in place (stderr is a terminal)."""
    return sys.stderr.isatty()


def duration_text(seconds: float) -> str:
    """"40 s", "2.5 min", "1.6 h": never "0 min" for a short wait."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _rate(done: int, seconds: float, unit: str) -> str:
    if done == 0 or seconds <= 0:
        return f"- {unit}/s"
    per_second = done / seconds
    return f"{per_second:.2f} {unit}/s" if per_second >= 1 else f"{seconds / done:.1f} s/{unit}"


class _LineProgress:
    """The non-terminal stand-in for a tqdm bar: same iteration, ``set_postfix`` and ``close``.

    ``interval``: seconds between lines (None: no lines at all); ``last``: also a line for the last item."""

    def __init__(self, iterable: Iterable, desc: str, total: int | None, unit: str, interval: float | None,
                 last: bool):
        self.iterable, self.desc, self.unit, self.interval, self.last = iterable, desc, unit, interval, last
        self.total = total if total is not None else _length(iterable)

    def __iter__(self) -> Iterator:
        if self.interval is None:
            yield from self.iterable
            return
        from samunet.utils.logs import get_logger

        started = last_line = time.perf_counter()
        done = logged = 0

        def line(seconds: float) -> None:
            of_total = f"/{self.total}" if self.total is not None else ""
            details = [duration_text(seconds), _rate(done, seconds, self.unit)]
            if self.total is not None and done and done < self.total:
                details.append(f"{duration_text((self.total - done) * seconds / done)} left")
            get_logger().info("%s: %d%s %s(s) done (%s)", self.desc, done, of_total, self.unit, ", ".join(details))

        for done, item in enumerate(self.iterable, start=1):
            yield item
            now = time.perf_counter()
            if now - last_line >= self.interval or (self.last and done == self.total):
                line(now - started)
                last_line, logged = now, done
        if self.last and done > logged:  # an iterable of unknown length: its last line once it ends
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
    """Iterate ``iterable`` with progress: a tqdm bar on a terminal; otherwise log lines with done/total, rate and
    time left: per item at most every ``LINE_INTERVAL_S`` and the last when ``lines`` (loops over cases), or one
    every ``QUIET_LOOP_INTERVAL_S`` (loops over iterations or chunks). ``disable``: no progress at all."""
    if disable:
        return _LineProgress(iterable, desc, total, unit, interval=None, last=False)
    if not interactive():
        if lines:
            return _LineProgress(iterable, desc, total, unit, interval=LINE_INTERVAL_S, last=True)
        return _LineProgress(iterable, desc, total, unit, interval=QUIET_LOOP_INTERVAL_S, last=False)
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, **tqdm_options)
