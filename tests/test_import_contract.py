"""The tree's contract, read from the source with ``ast``: who may import whom, where SQL lives,
how long a module may be.

- core (``edgeserve/``) imports no component; a component (``agent/``, ``converter/``,
  ``fleet_server/``, ``quickstart/``) imports core and itself, never another component (the
  quickstart's lazy start of the embedded broker, inside functions, is the one exception);
- SQL text (``SELECT``, ``INSERT INTO``, ``CREATE TABLE``, …) appears only in
  ``fleet_server/store/`` (the agent has no database);
- no module is longer than :data:`MAX_LINES` (generated protobuf stubs excepted).

Each rule is also run against a small synthetic source, so that a rule that stopped seeing
anything would fail here rather than pass silently.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = "edgeserve"
COMPONENTS = ("agent", "converter", "fleet_server", "quickstart")
MAX_LINES = 400

#: (importing component, imported component): allowed only inside a function body
LAZY_ALLOWED = {("quickstart", "fleet_server")}

#: folders / files (relative to the repository root) where SQL text may live
SQL_OWNERS = ("fleet_server/store/",)

SQL = re.compile(
    r"\b(SELECT\s+[\w*(]|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(UNIQUE\s+)?"
    r"(TABLE|INDEX)|ALTER\s+TABLE|DROP\s+(TABLE|INDEX)|PRAGMA\s+\w+)"
)


def _sources() -> Iterator[Path]:
    for folder in (CORE, *COMPONENTS):
        yield from sorted((ROOT / folder).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _owner(module: str) -> str | None:
    """``edgeserve.agent.x`` -> ``agent``; ``edgeserve.errors`` -> ``edgeserve``; else None."""
    parts = module.split(".")
    if parts[0] != CORE:
        return None
    if len(parts) > 1 and parts[1] in COMPONENTS:
        return parts[1]
    return CORE


def _imports(tree: ast.AST) -> Iterator[tuple[str, bool]]:
    """Every absolute import as (module, inside a function)."""

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, in_function
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                yield child.module, in_function
            yield from walk(child, nested)

    yield from walk(tree, False)


def import_violations(source: str, where: str) -> list[str]:
    """Imports in ``source`` (a file of component or core ``where``) that break the rules."""
    found = []
    for module, lazy in _imports(ast.parse(source)):
        target = _owner(module)
        if target is None or target in (where, CORE):
            continue
        if where == CORE:
            found.append(f"core imports component {module}")
        elif not (lazy and (where, target) in LAZY_ALLOWED):
            found.append(f"{where} imports {module}")
    return found


def sql_strings(source: str) -> list[str]:
    """String constants in ``source`` (docstrings aside) that read as SQL statements."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        text = node.value if isinstance(node, ast.Constant) else None
        if id(node) not in docstrings and isinstance(text, str) and SQL.search(text):
            found.append(text.strip().splitlines()[0][:60])
    return found


def _component_of(path: Path) -> str:
    return _rel(path).split("/")[0]


def test_rules_see_what_they_forbid() -> None:
    assert import_violations("from edgeserve.agent.store import ModelStore\n", CORE)
    assert import_violations("import edgeserve.fleet_server.web.app\n", "agent")
    assert import_violations("def f():\n    from edgeserve.agent import core\n", "fleet_server")
    assert not import_violations(
        "def f():\n    from edgeserve.fleet_server.broker.embedded import x\n", "quickstart"
    )
    assert import_violations("from edgeserve.fleet_server.broker.embedded import x\n", "quickstart")
    assert not import_violations("from edgeserve.errors import ConfigError\n", "agent")
    assert sql_strings('q = "SELECT name FROM devices WHERE id = ?"\n')
    assert sql_strings('q = """\n  INSERT INTO reports (a) VALUES (?)"""\n')
    assert sql_strings("q = f'UPDATE devices SET seen = {x}'\n")
    assert not sql_strings('doc = "Select the fastest candidate; insert into the table below."\n')
    assert not sql_strings('def run():\n    """Run a SELECT and return every row."""\n')


@pytest.mark.parametrize("path", list(_sources()), ids=_rel)
def test_imports_follow_the_dependency_rules(path: Path) -> None:
    assert import_violations(path.read_text(), _component_of(path)) == []


def test_sql_lives_in_the_store() -> None:
    outside = {
        _rel(path): strings
        for path in _sources()
        if not _rel(path).startswith(SQL_OWNERS) and (strings := sql_strings(path.read_text()))
    }
    assert outside == {}


def test_sql_owners_exist() -> None:
    for owner in SQL_OWNERS:
        assert (ROOT / owner).exists(), owner


def test_no_module_is_too_long() -> None:
    long = {
        _rel(path): lines
        for path in _sources()
        if "_pb2" not in path.name and (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_readme_layout_names_every_package() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"^\s*([\w]+)/", layout, re.M))
    packages = {
        init.parent.name
        for folder in (CORE, *COMPONENTS)
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert packages - named == set()
