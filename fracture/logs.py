"""Logging set-up, once per process, shared by every shell (the CLI, the Kubeflow steps)."""

from __future__ import annotations

import logging
import os
import sys

from fracture.errors import printable

# Libraries whose INFO lines drown the project's own.
NOISY_LOGGERS = ("urllib3", "botocore", "matplotlib", "PIL", "alembic", "great_expectations", "mlflow")


class EscapeControlFilter(logging.Filter):
    """Escape control characters (NUL, ESC, ...) in a record's message; newlines and tabs stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message once, escaped (the record then carries no args)."""
        message = record.getMessage()
        escaped = printable(message, keep="\n\t")
        if escaped != message or record.args:
            record.msg, record.args = escaped, None
        return True


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
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow's artifact upload/download progress bar writes to the terminal between the project's log lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # pydicom logs decoder failures with a traceback and quotes element values (PHI); the package reports
    # every DICOM problem itself in one line, so pydicom's records never reach the user's terminal.
    logging.getLogger("pydicom").propagate = False
