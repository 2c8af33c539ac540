"""One logging setup for every command: console plus a log file in the command's output folder.

On the console, information goes to stdout and warnings and errors to stderr (nnU-Net prints to stdout too), so
a failed command's stderr holds its one-line error and nothing else.
"""
from __future__ import annotations

import logging
import sys
from datetime import datetime
from pathlib import Path

LOGGER_NAME = "samunet"


class _StdoutHandler(logging.StreamHandler):
    """Below WARNING, to whatever ``sys.stdout`` is at the time of the record (pytest swaps it)."""

    def __init__(self):
        super().__init__(sys.stdout)
        self.addFilter(lambda record: record.levelno < logging.WARNING)

    def emit(self, record):
        self.stream = sys.stdout
        super().emit(record)


class _StderrHandler(logging.StreamHandler):
    """WARNING and above, to the current ``sys.stderr``."""

    def __init__(self):
        super().__init__(sys.stderr)
        self.setLevel(logging.WARNING)

    def emit(self, record):
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(log_folder: str | Path | None = None, prefix: str = "samunet", verbose: bool = False) -> Path | None:
    """Log to the console and, when ``log_folder`` is given, to ``<log_folder>/<prefix>_<timestamp>.txt``.

    Returns the log file path (or None)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for console in (_StdoutHandler(), _StderrHandler()):
        console.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(console)
    logger.propagate = False
    log_file = None
    if log_folder is not None:
        log_folder = Path(log_folder)
        log_folder.mkdir(parents=True, exist_ok=True)
        log_file = log_folder / f"{prefix}_{datetime.now():%Y_%m_%d_%H_%M_%S}.txt"
        fh = logging.FileHandler(log_file)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(fh)
    return log_file


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
