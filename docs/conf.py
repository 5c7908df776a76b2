"""Sphinx configuration: Markdown pages (MyST), the API reference from the package's docstrings (autodoc)."""

import logging
from importlib.metadata import version as _version

# autodoc imports the steps; Great Expectations logs its decorator registry at INFO on import
logging.getLogger("great_expectations").setLevel(logging.WARNING)

project = "fracture-mlops"
author = "fracture-mlops contributors"
release = _version("fracture-mlops")
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
myst_heading_anchors = 3
html_theme = "furo"
html_title = "fracture-mlops"
exclude_patterns = ["_build", "README.md"]
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # signatures stay readable; the docstrings name the types that matter
napoleon_google_docstring = True
napoleon_numpy_docstring = False
suppress_warnings = ["myst.header"]
