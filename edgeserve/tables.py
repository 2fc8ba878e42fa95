"""TOML tables into frozen dataclasses, with one set of rules for every config file.

Each configuration (the agent's ``agent.toml`` and its ``[fleet]`` table, the fleet server's
``fleet.toml``) declares its tables as frozen dataclasses and reads them with
:func:`load_table`. The rules, from the field's type hint:

- ``bool``: ``true`` or ``false`` only;
- ``int``: an integer (not a boolean), never negative: every number in these files is a size,
  a count, a port or a duration;
- ``float``: an integer or a float, finite and never negative;
- ``str``: a string; ``Path``: a path string, relative ones resolved against ``base_dir``
  when given; ``Path | None``: the same, ``""`` meaning None;
- ``tuple[str, ...]``: a list of strings;
- a field without a default is required; an absent key or ``""`` is missing;
- an unknown key is refused, naming it and the known ones.

Every failure is a :class:`~edgeserve.errors.ConfigError` whose message starts with the file
(when there is one), the table and the key, e.g. ``agent.toml: [server] port: must be a
non-negative integer``. Range checks beyond these (a port's upper bound, "at least 1") stay
in the dataclass's ``__post_init__`` or with the caller; their errors get the file prefixed.
"""

from __future__ import annotations

import math
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, Union

from edgeserve.errors import ConfigError

__all__ = ["check_keys", "load_table", "read_toml", "table_of", "typed_value"]

T = TypeVar("T")


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML document at ``path``.

    Raises:
        ConfigError: the file is missing, unreadable or not valid TOML (the message names it).
    """
    # imported here: a command given no file (``agent run --state``) never parses TOML
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from exc


def _prefix(file: Path | str | None) -> str:
    return f"{file}: " if file else ""


def check_keys(
    table: Mapping[str, Any], known: typing.Iterable[str], where: str, file: Path | None = None
) -> None:
    """Refuse keys of ``table`` outside ``known``.

    Raises:
        ConfigError: naming the unknown keys and the known ones.
    """
    names = list(known)
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise ConfigError(
            f"{_prefix(file)}{where}: unknown key(s) {', '.join(unknown)} "
            f"(known: {', '.join(names)})"
        )


def table_of(doc: Mapping[str, Any], name: str, file: Path | None = None) -> dict[str, Any]:
    """A copy of the sub-table ``name`` of ``doc`` ({} when absent).

    Raises:
        ConfigError: ``doc[name]`` is not a table.
    """
    value = doc.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{_prefix(file)}[{name}]: must be a table")
    return dict(value)


def load_table(
    cls: type[T],
    table: Any,
    name: str,
    *,
    file: Path | None = None,
    base: T | None = None,
    base_dir: Path | None = None,
) -> T:
    """Build the frozen dataclass ``cls`` from one TOML table under the module's rules.

    Args:
        cls: the dataclass; its type hints decide each key's rule.
        table: the parsed table.
        name: the table's name as written in the file (``server``, ``models.digits``).
        file: the file it came from, for messages; None for defaults and flags.
        base: defaults to start from instead of the dataclass's own.
        base_dir: what relative ``Path`` values are resolved against.

    Raises:
        ConfigError: not a table, unknown or missing key, wrong type, a negative number, or
            any ConfigError of the dataclass's own checks (with the file prefixed).
    """
    where = f"{_prefix(file)}[{name}]"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table")
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    known = {f.name: f for f in fields(cls)}
    check_keys(table, known, f"[{name}]", file)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in table.items():
        values[key] = typed_value(value, hints[key], f"{where} {key}", base_dir)
    if base is None:
        for key, spec in known.items():
            if _required(spec) and values.get(key) in (None, ""):
                raise ConfigError(f"{where}: {key!r} is required")
    try:
        return replace(base, **values) if base is not None else cls(**values)  # type: ignore[type-var]
    except ConfigError as exc:
        if file and not str(exc).startswith(str(file)):
            raise ConfigError(f"{file}: {exc}") from exc
        raise


def _required(spec: Field[Any]) -> bool:
    return spec.default is MISSING and spec.default_factory is MISSING


def typed_value(value: Any, hint: Any, where: str, base_dir: Path | None = None) -> Any:
    """One value under the module's rules for the type ``hint`` (for keys outside a table).

    Raises:
        ConfigError: ``where`` (file, table and key), then what the value must be.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        if value == "" and inner is Path:
            return None
        return typed_value(value, inner, where, base_dir)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where}: must be a non-negative integer")
        return value
    if hint is float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ConfigError(f"{where}: must be a non-negative number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string")
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: must be a path string")
        if value == "":
            return ""  # a required path left empty: reported as missing
        path = Path(value)
        return base_dir / path if base_dir is not None else path
    if origin is tuple and args in ((str, ...),):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: must be a list of strings")
        return tuple(value)
    raise ConfigError(f"{where}: cannot be set in this table")
