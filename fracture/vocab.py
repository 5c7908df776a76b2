"""Value sets that the command line shows in its help: no third-party imports, so `fracture --help` stays fast."""

from __future__ import annotations

# `fracture predict --part`: the body parts a wrist radiograph (or a hospital crop of one) may be recorded as.
BODY_PARTS = ("wrist", "radius", "scaphoid", "styloid", "ulna", "distal_forearm")
