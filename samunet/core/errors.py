"""The user-error base class: an error a user can fix (bad input, missing file, wrong flag).

Every command catches ``SamunetUserError`` once and prints its message as one line, exit status 1;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class SamunetUserError(Exception):
    """Base of every error whose message tells the user what to fix; never a bug."""


def fail(message: str) -> None:
    """End a command on a user error: ``message`` on stderr (and in the command's log file when one is open),
    exit status 1."""
    import logging
    import sys

    from samunet.utils.logs import get_logger

    print(message, file=sys.stderr)
    log = get_logger()
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    sys.exit(1)
