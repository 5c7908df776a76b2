"""Exceptions that the CLI maps to exit codes (0 ok, 1 gate failed, 2 bad usage or unusable input)."""


class FractureError(Exception):
    """Base class: a user-facing problem with a message that names the file and the reason."""

    exit_code = 2


class InputError(FractureError):
    """Unusable input (missing file, bad table, unreadable image); exit 2."""


class ConfigError(InputError):
    """params.yaml has an unknown key or a bad value; the message names the key path."""


class GateError(FractureError):
    """A validation, evaluation or promotion gate failed; exit 1."""

    exit_code = 1
