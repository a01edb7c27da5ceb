"""The one exception type users see: a clear, one-line message about bad input."""


class InputError(ValueError):
    """Bad input (files, maps, units or sequence parameters), told in one line.

    The command line prints it without a traceback and exits with status 2.
    """
