"""Logging set-up, once per process, shared by every shell (the CLI, the Kubeflow steps)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import PurePath

from fracture.base.errors import MultiLine, printable

# Libraries whose INFO lines drown the project's own.
NOISY_LOGGERS = ("urllib3", "botocore", "matplotlib", "PIL", "alembic", "great_expectations", "mlflow")
# On import, mlflow gives the loggers it owns their own stderr handler and format (`2026/12/02 03:12:45 INFO
# mlflow...`), at INFO, not propagating; these variables stop that (read at mlflow's import), and `_adopt`
# undoes it when mlflow was imported first. The progress bar of artifact uploads and downloads goes too.
MLFLOW_ENV = {
    "MLFLOW_CONFIGURE_LOGGING": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
MLFLOW_OWNED_LOGGERS = ("mlflow", "sqlalchemy.engine", "alembic", "huey")


class EscapeControlFilter(logging.Filter):
    """Escape control characters (NUL, ESC, newline, ...) and non-UTF-8 bytes in a record's values.

    Values (a file name with a newline, a table cell) are escaped entirely, so a value cannot forge a log line;
    the message template keeps its own newlines and tabs, and so does a value wrapped in `errors.MultiLine`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message once, escaped (the record then carries no args)."""
        args = record.args
        if isinstance(args, dict):
            args = {k: _escaped_value(v) for k, v in args.items()}
        elif args:
            args = tuple(_escaped_value(a) for a in args)
        try:
            message = str(record.msg) % args if args else str(record.msg)
        except (TypeError, ValueError, KeyError):  # a malformed call: left to logging's own error report
            return True
        record.msg, record.args = printable(message, keep="\n\t"), None
        return True


def _escaped_value(value: object) -> object:
    """A str or path argument escaped entirely (newlines too, except in a `MultiLine`); other values unchanged."""
    if isinstance(value, MultiLine):
        return printable(value, keep="\n\t")
    return printable(str(value)) if isinstance(value, str | PurePath) else value


def _adopt(logger: logging.Logger) -> None:
    """Route a library logger through the root handler (one format): drop its own handlers, let it propagate."""
    logger.handlers = []
    logger.propagate = True


def setup_logging(verbose: bool) -> None:
    """Configure logging: timestamped lines on stderr, noisy libraries at WARNING."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(EscapeControlFilter())
    for key, value in MLFLOW_ENV.items():
        os.environ.setdefault(key, value)
    for name in MLFLOW_OWNED_LOGGERS:
        _adopt(logging.getLogger(name))
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if verbose:  # -v: MLflow's INFO lines too, in the project's format
        logging.getLogger("mlflow").setLevel(logging.INFO)
    # pydicom logs decoder failures with a traceback and quotes element values (PHI); the package reports
    # every DICOM problem itself in one line, so pydicom's records never reach the user's terminal.
    logging.getLogger("pydicom").propagate = False
