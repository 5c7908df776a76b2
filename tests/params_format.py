"""params.yaml in the form `dvc exp run -S` writes back, so an experiment's diff is just the values it changed.

DVC applies `-S key=value` by loading the file with ruamel.yaml (round-trip), merging the overridden values
back from plain Python objects and dumping it again: every flow list becomes a block list, `null` becomes an
empty value, quotes are dropped where not needed, a blank line after a section's last list goes. A file already
in that form comes back unchanged apart from the values set. `make params-format` rewrites the files into that
form; tests/unit/test_params_format.py fails when one is not.
"""

from __future__ import annotations

import difflib
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILES = ("params.yaml", "configs/production.yaml")


def dvc_rewrite(path: Path) -> None:
    """Load, merge and dump `path` in place exactly as `dvc exp run -S` does (DVC's own helper, no override)."""
    from dvc.utils.hydra import apply_overrides

    apply_overrides(str(path), [])


def format_diff(path: Path) -> str:
    """A unified diff from `path` to the form DVC writes back ("" when it is already in that form)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        dvc_rewrite(copy)
        before, after = path.read_text().splitlines(True), copy.read_text().splitlines(True)
    return "".join(difflib.unified_diff(before, after, str(path), f"{path} (as dvc writes it)"))


def main() -> int:
    """Rewrite every params file into DVC's form; print what changed."""
    for rel in PARAMS_FILES:
        path = REPO / rel
        for _ in range(5):  # ruamel may settle a blank line after a block list only on the second pass
            if not format_diff(path):
                break
            dvc_rewrite(path)
            print(f"reformatted {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
