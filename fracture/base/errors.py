"""Exceptions that the CLI maps to exit codes (0 ok, 1 gate failed, 2 bad usage or unusable input)."""

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def without_reprs(text: str) -> str:
    """`text` with object reprs (`<_io.BytesIO object at 0x7f...>`) replaced by `<data>`.

    A library's message may name an in-memory buffer by its address, which differs from run to run: a reason
    holding one makes quarantine.csv (a DVC output) differ between identical runs, and ingest's reason differ
    from predict's for the same file.
    """
    return _OBJECT_REPR.sub("<data>", text)


def first_line(err: BaseException, limit: int = 400) -> str:
    """The first non-empty line of an exception's message (its type name when empty), at most `limit` chars."""
    text = getattr(err, "message", None) or str(err)
    lines = [line.strip() for line in without_reprs(str(text)).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:limit]


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}
# Lone surrogates: bytes of a non-UTF-8 file name as Python holds them (0xDC80-0xDCFF <-> byte 0x80-0xFF).
_SURROGATES = {c: f"\\x{c - 0xDC00:02x}" if 0xDC80 <= c <= 0xDCFF else f"\\u{c:04x}" for c in range(0xD800, 0xE000)}


def printable(text: str, keep: str = "") -> str:
    """`text` with control characters (NUL, ESC, CR, ...) escaped as backslash-x-hex, except those in `keep`.

    Values from untrusted tables reach file names, quarantine.csv and log lines; a raw NUL or terminal escape
    there corrupts the CSV for other readers or the user's terminal. The bytes of a file name that is not UTF-8
    (lone surrogates in Python) are escaped the same way, byte 0xf6 as backslash-x-f6: UTF-8 cannot hold them.
    """
    return text.translate(_escape_table(keep))


@functools.lru_cache(maxsize=8)
def _escape_table(keep: str) -> dict[int, str]:
    return {c: v for c, v in _CONTROL.items() if chr(c) not in keep} | _SURROGATES


class MultiLine(str):
    """Text whose newlines are meant (a table or a list logged as one value): the log filter keeps them.

    Every other logged value is escaped entirely, newlines included, so a file name cannot forge a log line.
    """

    __slots__ = ()


@contextmanager
def decoder_failures(path: Path) -> Iterator[None]:
    """Turn a decoder's unexpected exception on one hostile file into that file's InputError (never a crash).

    preprocess and batch predict record it as that file's reason and go on; the server answers 400 with it.
    """
    try:
        yield
    except InputError:
        raise
    except Exception as err:  # OpenCV, Pillow, pydicom and numpy raise many types on malformed data
        raise InputError(f"{path}: cannot decode ({type(err).__name__}: {first_line(err, 200)})") from None
