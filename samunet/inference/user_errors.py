"""How samunet's prediction and evaluation commands end on a user error: one line, exit status 1."""
from __future__ import annotations

import logging
import sys

from samunet.utils.logs import get_logger


def fail(message: str) -> None:
    """Print ``message`` on stderr, record it in the command's log file when one is open, exit 1."""
    print(message, file=sys.stderr)
    log = get_logger()
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    sys.exit(1)
