"""The one entry point of every ``tools/*.py`` script: :func:`run_tool`.

A :class:`~mixedae.utils.errors.UserInputError` ends the tool with its message alone on stderr
(``error: ...``) and exit status 2; ``--debug`` (anywhere on the command line) prints the
traceback as well. The traceback also goes to the log file of an MMEngine runner when one was
opened. Other exceptions propagate with their traceback, as bugs should. A crash below Python
(an abort or a segfault in C++ code) prints the Python stack of every thread (``faulthandler``).
"""
from __future__ import annotations

import argparse
import faulthandler
import logging
import sys
import traceback
import warnings
from typing import Callable, List, NoReturn, Tuple

from .errors import InvalidInputError, UserInputError

#: (message regex, category) of third-party deprecation warnings that say nothing about the
#: run: mmengine's ``is_installed`` re-imports setuptools' ``pkg_resources`` on every call;
#: mmseg's own decode heads build their losses through its deprecated ``build_loss``.
THIRD_PARTY_WARNINGS = (
    (r'pkg_resources is deprecated as an API', UserWarning),
    (r'``build_loss`` would be deprecated soon', UserWarning),
)

#: exit status of a tool stopped by a UserInputError (argparse uses the same for bad usage).
USER_ERROR_STATUS = 2
#: the line every tool's --help ends with (run_tool takes --debug before argparse sees it)
DEBUG_HELP = ('\nany tool:\n  --debug               on an error, print the traceback as well '
              'as the one-line message')


def positive_int(text: str) -> int:
    """argparse type of a count that must be at least 1 (0 or a negative value is refused, not
    ignored or passed on)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {text!r}')
    return int(text)


def quiet_third_party_warnings() -> None:
    """Ignore :data:`THIRD_PARTY_WARNINGS` (matched by message; this process and its forks)."""
    for message, category in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings('ignore', message=message, category=category)


def pop_debug_flag(argv: List[str]) -> bool:
    """Remove every ``--debug`` before a ``--`` separator from ``argv``; whether there was one."""
    end = argv.index('--') if '--' in argv else len(argv)
    found = '--debug' in argv[:end]
    argv[:end] = [a for a in argv[:end] if a != '--debug']
    return found


def log_to_runner_files(text: str) -> None:
    """Append ``text`` to the log files of the current MMEngine logger (none: nothing)."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(logger.makeRecord(logger.name, logging.ERROR, '', 0, text,
                                             None, None))


def labelled(text: str, flag: str) -> Tuple[str, str]:
    """``LABEL=VALUE`` given to the tool flag ``flag`` -> (LABEL, VALUE), both non-empty (the
    value may hold further ``=``); an :class:`InvalidInputError` naming the flag otherwise."""
    label, sep, value = text.partition('=')
    if not sep or not label or not value:
        raise InvalidInputError(f'{flag} {text!r}: expected LABEL=VALUE, a label, "=" and the '
                                'value')
    return label, value


def run_tool(main: Callable[[], int]) -> NoReturn:
    """Run a tool's ``main`` (which reads ``sys.argv``) and exit with its status.

    A :class:`UserInputError` prints ``error: <message>`` alone on stderr and exits with
    :data:`USER_ERROR_STATUS`; with ``--debug`` the traceback is printed before it.
    """
    debug = pop_debug_flag(sys.argv)
    quiet_third_party_warnings()
    faulthandler.enable(file=sys.__stderr__)   # fd 2, even when sys.stderr is replaced
    try:
        status = main()
    except SystemExit as done:   # argparse's --help ends here: name the flag run_tool owns
        if done.code == 0 and {'-h', '--help'} & set(sys.argv[1:]):
            print(DEBUG_HELP)
        raise
    except UserInputError as err:
        trace = traceback.format_exc()
        log_to_runner_files(trace)
        if debug:
            print(trace, file=sys.stderr, end='')
        print(f'error: {err}', file=sys.stderr)
        sys.exit(USER_ERROR_STATUS)
    sys.exit(status)
