"""The one exception type for mistakes in user input.

The CLI turns a ``UserError`` into one line on stderr and exit status 2; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a missing file, a malformed line, a mask that does not fit."""
