#!/usr/bin/env python3
"""Regenerate the CLI reference in README.md from click's help (``--check``: exit 1 if stale).

.venv/bin/python scripts/gen_cli_reference.py          # rewrite the block
.venv/bin/python scripts/gen_cli_reference.py --check  # what tests/test_readme_cli.py does
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeserve.quickstart.cli_reference import update_readme

README = Path(__file__).resolve().parent.parent / "README.md"


def main() -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if stale")
    args = parser.parse_args()
    current = update_readme(README, check=args.check)
    if args.check and not current:
        print("README.md CLI reference is stale: run scripts/gen_cli_reference.py", file=sys.stderr)
        return 1
    print("README.md CLI reference is current" if current else "README.md CLI reference updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
