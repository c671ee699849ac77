"""User-facing errors: one actionable line, no traceback from deep inside a library."""


class UserError(Exception):
    """Bad input from the user (file, argument, limit). CLIs print it on one line and exit 2."""


def one_line(text: str) -> str:
    """`text` with every character that would start a new line (as str.splitlines sees it: control characters,
    U+0085, U+2028, U+2029) escaped: error messages quote file contents, and each must stay one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] if ord(c) < 0x100 else f"\\u{ord(c):04x}"
                   for c in text)
