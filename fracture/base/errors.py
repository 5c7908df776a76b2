"""Exceptions that the CLI maps to exit codes (0 ok, 1 gate failed, 2 bad usage or unusable input)."""


class FractureError(Exception):
    """Base class: a user-facing problem with a message that names the file and the reason."""

    exit_code = 2


class InputError(FractureError):
    """Unusable input (missing file, bad table, unreadable image); exit 2."""


class ConfigError(InputError):
    """params.yaml has an unknown key or a bad value; the message names the key path."""


class AccessError(InputError):
    """The tracking server refused who we are (401) or what we asked (403); exit 2, nothing was changed."""


class GateError(FractureError):
    """A validation, evaluation or promotion gate failed; exit 1."""

    exit_code = 1


def first_line(err: BaseException, limit: int = 400) -> str:
    """The first non-empty line of an exception's message (its type name when empty), at most `limit` chars."""
    text = getattr(err, "message", None) or str(err)
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:limit]


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}


def printable(text: str, keep: str = "") -> str:
    """`text` with control characters (NUL, ESC, CR, ...) escaped as backslash-x-hex, except those in `keep`.

    Values from untrusted tables reach file names, quarantine.csv and log lines; a raw NUL or terminal escape
    there corrupts the CSV for other readers or the user's terminal.
    """
    table = {c: v for c, v in _CONTROL.items() if chr(c) not in keep}
    return text.translate(table)
