"""The Jinja environment of the project's HTML pages (report.html, validation.html): their one owner.

Templates live in `fracture/templates` (package data). Autoescaped, strict about undefined names, blocks trimmed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TEMPLATE_DIR = Path(__file__).resolve().parent


def environment(keep_trailing_newline: bool = False) -> Any:
    """A jinja2 Environment over `fracture/templates` (jinja2 imported lazily: steps without pages skip it)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=keep_trailing_newline,
    )
