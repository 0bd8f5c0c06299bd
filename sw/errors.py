"""User-facing errors: one line on stderr and a non-zero exit, never a traceback."""

import functools
import sys

__all__ = ["UserError", "cli_main"]


class UserError(Exception):
    """An error caused by the user's input (arguments, files, models), reported in one line."""


def cli_main(main):
    """Wrap a command's ``main(argv)`` so that a :class:`UserError` exits with status 2.

    Parameters
    ----------
    main : callable
        The command's entry point, taking ``argv`` (a list of strings or ``None``).
    """
    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)
    return wrapper
