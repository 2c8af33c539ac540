"""The user-error base class: an error a user can fix (bad input, missing file, wrong flag).

Every command catches ``SamunetUserError`` once (``samunet.core.command.user_command``) and prints its message
as one line, exit status 1; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class SamunetUserError(Exception):
    """Base of every error whose message tells the user what to fix; never a bug."""


class MissingFileError(SamunetUserError, FileNotFoundError):
    """A file the command needs does not exist (the message names it and the command that writes it)."""


class InvalidValueError(SamunetUserError, ValueError):
    """A value given on the command line or in a hand-edited file is not one the command accepts."""


def user_message(error: BaseException) -> str:
    """The error's message (a KeyError's str() would add quotes)."""
    return str(error.args[0]) if len(error.args) == 1 else str(error)


def fail(message: str) -> None:
    """End a command on a user error: ``message`` on stderr (and in the command's log file when one is open),
    exit status 1."""
    import logging
    import sys

    from samunet.utils.logs import get_logger

    print(message, file=sys.stderr, flush=True)
    log = get_logger()
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    sys.exit(1)
