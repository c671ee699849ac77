"""User-facing errors: one actionable line, no traceback from deep inside a library."""


class UserError(Exception):
    """Bad input from the user (file, argument, limit). CLIs print it on one line and exit 2."""
