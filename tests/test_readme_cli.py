"""The README's CLI reference is what click prints today (regenerate with
``scripts/gen_cli_reference.py``), and it covers every command the CLI has."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from edgeserve.quickstart.cli_reference import BEGIN, END, render_reference, replace_block

from edgeserve.cli import COMMANDS

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_cli_reference_is_current() -> None:
    text = README.read_text()
    expected = replace_block(text, render_reference())
    if expected != text:
        pytest.fail(
            "README.md's CLI reference differs from click's help: run "
            ".venv/bin/python scripts/gen_cli_reference.py and commit README.md",
            pytrace=False,
        )


def test_readme_cli_reference_covers_every_command() -> None:
    block = README.read_text().split(BEGIN, 1)[1].split(END, 1)[0]
    for name in COMMANDS:
        assert f"#### `edgeserve {name}`" in block, name


def test_readme_cli_reference_renders_nested_groups() -> None:
    @click.group()
    def top() -> None:
        """Top."""

    @top.group()
    def sub() -> None:
        """Sub group."""

    @sub.command()
    @click.option("--n", default=1, show_default=True, help="How many.")
    def leaf(n: int) -> None:
        """Leaf command."""

    text = render_reference(top)
    assert [line for line in text.splitlines() if line.startswith("####")] == [
        "#### `edgeserve`",
        "#### `edgeserve sub`",
        "#### `edgeserve sub leaf`",
    ]
    assert "--n INTEGER  How many.  [default: 1]" in text
    with pytest.raises(ValueError, match="no"):
        replace_block("no markers here", text)
