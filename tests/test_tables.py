"""edgeserve.tables: one set of rules for reading a TOML table into a frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeserve.errors import ConfigError
from edgeserve.tables import check_keys, load_table, read_toml, table_of, typed_value


@dataclass(frozen=True)
class _Table:
    name: str
    anchor: Path
    size_bytes: int = 10
    timeout_s: float = 1.5
    enabled: bool = True
    extra: Path | None = None
    providers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.size_bytes > 1000:
            raise ConfigError("[t] size_bytes: must be at most 1000")


_OK = {"name": "n", "anchor": "a.json"}


def test_load_table_types_defaults_and_paths(tmp_path: Path) -> None:
    got = load_table(
        _Table,
        {**_OK, "timeout_s": 2, "extra": "", "providers": ["CPU"]},
        "t",
        base_dir=tmp_path,
    )
    assert got == _Table("n", tmp_path / "a.json", 10, 2.0, True, None, ("CPU",))
    assert isinstance(got.timeout_s, float)
    absolute = load_table(_Table, {**_OK, "anchor": "/etc/a.json"}, "t", base_dir=tmp_path)
    assert absolute.anchor == Path("/etc/a.json")
    based = load_table(_Table, {"size_bytes": 5}, "t", base=got)
    assert based.size_bytes == 5 and based.name == "n"


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"size_bytes": -1}, r"\[t\] size_bytes: must be a non-negative integer"),
        ({"size_bytes": True}, r"\[t\] size_bytes: must be a non-negative integer"),
        ({"size_bytes": "10"}, r"\[t\] size_bytes: must be a non-negative integer"),
        ({"timeout_s": -0.5}, r"\[t\] timeout_s: must be a non-negative number"),
        ({"timeout_s": float("nan")}, r"\[t\] timeout_s: must be a non-negative number"),
        ({"enabled": 1}, r"\[t\] enabled: must be true or false"),
        ({"name": 3}, r"\[t\] name: must be a string"),
        ({"anchor": 3}, r"\[t\] anchor: must be a path string"),
        ({"providers": "CPU"}, r"\[t\] providers: must be a list of strings"),
        ({"nmae": "x"}, r"\[t\]: unknown key\(s\) nmae \(known: name, anchor,"),
        ({"name": ""}, r"\[t\]: 'name' is required"),
        ({"anchor": ""}, r"\[t\]: 'anchor' is required"),
        ({"size_bytes": 5000}, r"size_bytes: must be at most 1000"),
    ],
)
def test_load_table_refuses_naming_file_table_and_key(values: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as caught:
        load_table(_Table, {**_OK, **values}, "t", file=Path("conf.toml"))
    assert str(caught.value).startswith("conf.toml: ")


def test_load_table_missing_required_key_and_not_a_table() -> None:
    with pytest.raises(ConfigError, match=r"^\[t\]: 'anchor' is required"):
        load_table(_Table, {"name": "n"}, "t")
    with pytest.raises(ConfigError, match=r"\[t\]: must be a table"):
        load_table(_Table, ["x"], "t")


def test_read_toml_check_keys_table_of_and_typed_value(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("top = 1\n[a]\nx = 2\n")
    doc = read_toml(path)
    assert table_of(doc, "a") == {"x": 2} and table_of(doc, "missing") == {}
    with pytest.raises(ConfigError, match=r"c.toml: \[top\]: must be a table"):
        table_of(doc, "top", path)
    with pytest.raises(ConfigError, match=r"c.toml: top level: unknown key\(s\) top"):
        check_keys(doc, ["a"], "top level", path)
    with pytest.raises(ConfigError, match="no such config file"):
        read_toml(tmp_path / "missing.toml")
    path.write_text("not = = toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        read_toml(path)
    assert typed_value(3, float, "k") == 3.0
    with pytest.raises(ConfigError, match=r"^k: must be a non-negative integer"):
        typed_value(-3, int, "k")
