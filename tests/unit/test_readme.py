"""The shell commands of the README and the docs pages work as typed in a fresh shell; their `fracture` flags exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fracture.cli import app

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
# The README and every docs page: the commands people copy.
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
ACTIVATE = "source .venv/bin/activate"
VENV_TOOLS = ("fracture", "dvc", "mlflow", "pytest", "pre-commit")


def bash_blocks(text: str) -> list[list[str]]:
    """The lines of every ```bash block, comments and continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    out = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        out.append([line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()])
    return out


def bare_tool(line: str) -> str | None:
    """The venv tool a command line runs by bare name (after any `VAR=value` prefixes), else None."""
    words = [w for w in line.split() if not re.match(r"^[A-Z_]+=", w)]
    return words[0] if words and words[0] in VENV_TOOLS else None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_bare_venv_tools_follow_an_activation_in_their_block(page: Path) -> None:
    problems = []
    for block in bash_blocks(page.read_text()):
        active = False
        for line in block:
            active = active or line.startswith(ACTIVATE)
            if bare_tool(line) and not active:
                problems.append(line)
    assert not problems, f"run by bare name without `{ACTIVATE}` earlier in the block: {problems}"


def test_the_check_catches_a_bare_command() -> None:
    assert bare_tool("KFP_TOKEN=x fracture pipeline submit") == "fracture"
    assert bare_tool(".venv/bin/fracture serve") is None
    block = bash_blocks("```bash\nfracture predict --img a.png\n```\n")[0]
    assert [line for line in block if bare_tool(line)] == ["fracture predict --img a.png"]


def fracture_commands(text: str) -> list[list[str]]:
    """Every `fracture ...` command of the README's bash blocks, as argument lists without the program."""
    commands = []
    for block in bash_blocks(text):
        for line in block:
            words = shlex.split(re.sub(r"^(?:[A-Z_]+=\S+\s+)+", "", line).replace(".venv/bin/fracture", "fracture"))
            if words and words[0] == "fracture":
                commands.append(words[1:])
    return commands


def _help_of(args: list[str]) -> tuple[list[str], str]:
    path = []
    for word in args:
        if word.startswith("-"):
            break
        path.append(word)
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
        if result.exit_code != 0:
            path.pop()
            break
    return path, CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"}).output


@pytest.mark.parametrize(
    "args", [a for page in PAGES for a in fracture_commands(page.read_text())], ids=lambda a: " ".join(a[:3])
)
def test_readme_fracture_flags_exist(args: list[str]) -> None:
    path, help_text = _help_of(args)
    assert path, f"`fracture {' '.join(args)}`: no such command"
    flags = [w.split("=")[0] for w in args if w.startswith("--")]
    missing = [f for f in flags if f not in help_text]
    assert not missing, f"`fracture {' '.join(args)}`: {missing} not in `fracture {' '.join(path)} --help`"
