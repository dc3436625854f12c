"""The project's expected failures: input a user can fix, reported by the tools in one line.

Every error a tool raises for bad input (a missing config, data folder or checkpoint, a
checkpoint of the wrong kind, an unusable annotation, a bad argument value) is a
:class:`UserInputError`; :func:`mixedae.utils.cli.run_tool` prints its message alone on stderr
and exits with status 2 (the traceback only with ``--debug``). Any other exception is a bug or
an environment failure and keeps its traceback. The subclasses also derive from the built-in
error a caller would expect (``FileNotFoundError``, ``ValueError``, ...).
"""


class UserInputError(Exception):
    """Bad input the user can fix; the message says what is wrong and names the file or key."""


class MissingInputError(UserInputError, FileNotFoundError):
    """A file or folder named by the user (or by a config) does not exist."""


class InvalidInputError(UserInputError, ValueError):
    """A value given by the user (an argument, a config entry) cannot be used."""


class OutputExistsError(UserInputError, FileExistsError):
    """An output folder already holds files that writing would mix with or destroy."""


class DeviceUnavailableError(UserInputError, RuntimeError):
    """The tool needs a device this machine lacks (a CUDA GPU); the message says how to run
    what can run without it."""
