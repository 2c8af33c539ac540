"""What every command line shares.

- ``CommandParser``: argparse without prefix matching (``-pl X`` must not be read as ``-p l``) that reports a
  usage error in one line;
- ``user_command``: the one place a command catches ``SamunetUserError`` and prints it as one line, exit 1;
- ``add_nnunet_spellings``: nnU-Net's flag spellings from the tables in ``samunet.core.nnunet_flags``.

Only the standard library and ``samunet.core.errors`` are imported here, so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import errno
import functools
import sys
import textwrap
from typing import Callable

from samunet.core.errors import InvalidValueError, SamunetUserError, fail, user_message

NNUNET_PAGE = "documentation/for_nnunet_users.md"
# operating-system errors a user fixes (permissions, a full or read-only disk): one line, not a traceback
_ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT}


class CommandParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with ``allow_abbrev=False`` and one-line usage errors (exit status 2)."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def _get_option_tuples(self, option_string: str) -> list:
        """No partial matches at all: allow_abbrev=False still reads ``-pl`` as ``-p l`` and ``-dev`` as ``-device``
        (single-dash prefixes, Python 3.11); a flag is taken only when spelled in full (or ``--flag=value``)."""
        return []

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr, flush=True)
        sys.exit(2)


def user_command(prog: str, interrupted_hint: str = "") -> Callable:
    """Decorate a command's ``main(argv)``: a ``SamunetUserError`` becomes one line on stderr (and in the
    command's log file when one is open), exit status 1; Ctrl-C exits with 130 and a short note."""

    def decorate(main: Callable) -> Callable:
        @functools.wraps(main)
        def run(argv: list[str] | None = None):
            try:
                return main(argv)
            except SamunetUserError as e:
                fail(f"{prog}: error: {user_message(e)}")
            except OSError as e:
                if e.errno not in _ENVIRONMENT_ERRNOS:
                    raise
                fail(f"{prog}: error: {e.filename or ''}{': ' if e.filename else ''}{e.strerror}")
            except KeyboardInterrupt:
                print(f"{prog}: interrupted{'; ' + interrupted_hint if interrupted_hint else ''}", file=sys.stderr)
                sys.exit(130)

        return run

    return decorate


class _RefuseDifferentFlag(argparse.Action):
    """An nnU-Net flag whose meaning differs in samunet: stop with one line naming the samunet equivalent."""

    def __init__(self, option_strings, dest, equivalent: str = "", **kwargs):
        self.equivalent = equivalent
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        raise InvalidValueError(f"{option_string} is nnU-Net's flag and means something else here; "
                                f"samunet equivalent: {self.equivalent} (see {NNUNET_PAGE})")


def _mapped_type(action: argparse.Action, values: dict[str, str]) -> Callable[[str], object]:
    """Translate nnU-Net's value spellings (``checkpoint_final.pth`` -> ``final``) before the action's own type."""
    original = action.type

    def convert(text: str):
        text = values.get(text, text)
        return original(text) if original is not None else text

    return convert


def add_nnunet_spellings(parser: argparse.ArgumentParser, table) -> None:
    """Let ``parser`` accept the nnU-Net spellings of ``table`` (a ``samunet.core.nnunet_flags.FlagTable``):
    same-meaning flags become aliases of the samunet option, flags samunet needs not are accepted and ignored,
    and flags whose meaning differs stop the command with their samunet equivalent."""
    actions = parser._option_string_actions  # argparse has no public way to add a spelling to an action
    for nnunet_flag, samunet_flag in table.same.items():
        action = actions[samunet_flag]
        action.option_strings.append(nnunet_flag)
        actions[nnunet_flag] = action
    for samunet_flag, values in table.values.items():
        actions[samunet_flag].type = _mapped_type(actions[samunet_flag], values)
    for nnunet_flag, why in table.ignored.items():
        parser.add_argument(nnunet_flag, action="store_true", dest=f"ignored_{nnunet_flag.strip('-')}",
                            help=argparse.SUPPRESS)
    for nnunet_flag, equivalent in table.different.items():
        parser.add_argument(nnunet_flag, action=_RefuseDifferentFlag, dest=f"refused_{nnunet_flag.strip('-')}",
                            equivalent=equivalent)
    accepted = sorted(set(table.same) | set(table.ignored))
    note = (f"nnU-Net spellings accepted: {', '.join(accepted)}. " if accepted else "") + \
        f"nnU-Net flags that mean something else here stop with their samunet equivalent; see {NNUNET_PAGE}."
    note = textwrap.fill(note, width=100)
    parser.epilog = f"{parser.epilog}\n\n{note}" if parser.epilog else note
