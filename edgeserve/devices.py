"""Device profiles: what a target device runs, loaded from ``devices/<name>.toml``.

A profile says which architecture, Python and runtimes a device has, which ONNX IR and opset
its ONNX Runtime loads, which execution providers to try, which converter targets suit it
(best first) and how much memory it has. The converter uses it for ``--device``; an installer
can read the package names from it. Core module: no component imports.

ONNX Runtime's IR/opset limits per release come from its published compatibility table: a
runtime rejects a model stamped with a newer IR version or a newer opset than it implements.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from edgeserve.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "DEFAULT_DEVICES_DIR",
    "DeviceProfile",
    "OnnxRuntimeInfo",
    "TfliteInfo",
    "list_devices",
    "load_device",
]


def _default_devices_dir() -> Path:
    """The repository's devices/ folder in a checkout; else the installed package data
    (pyproject maps devices/ to ``edgeserve.device_profiles``, ``*.toml`` only)."""
    checkout = Path(__file__).resolve().parents[1] / "devices"
    if checkout.is_dir():
        return checkout
    from importlib.util import find_spec

    # a namespace package (no __init__.py): take its one search location
    spec = find_spec("edgeserve.device_profiles")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else checkout


DEFAULT_DEVICES_DIR: Final = _default_devices_dir()
_PROFILE_MAX_BYTES: Final = 65_536  # bytes; a profile is a few hundred bytes
_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class OnnxRuntimeInfo:
    """The device's ONNX Runtime.

    Attributes:
        package: pip package (``onnxruntime`` or ``onnxruntime-gpu``).
        version: release installed on the device.
        max_ir: newest ONNX IR version it loads.
        max_opset: newest default-domain opset it implements.
        providers: execution providers to try, in order.
    """

    package: str
    version: str
    max_ir: int
    max_opset: int
    providers: tuple[str, ...]


@dataclass(frozen=True)
class TfliteInfo:
    """The device's TFLite runtime (``tflite-runtime`` or ``ai-edge-litert``)."""

    package: str
    version: str


@dataclass(frozen=True)
class DeviceProfile:
    """One device profile.

    Attributes:
        name: profile name (the file's stem), used with ``--device``.
        description: one human line.
        arch: ``aarch64`` or ``x86_64``.
        python: Python version on the device.
        memory_mb: RAM in MiB.
        targets: converter target names, best first.
        onnxruntime: ONNX Runtime details, or None when the device has none.
        tflite: TFLite runtime details, or None.
    """

    name: str
    description: str
    arch: str
    python: str
    memory_mb: int
    targets: tuple[str, ...]
    onnxruntime: OnnxRuntimeInfo | None
    tflite: TfliteInfo | None

    @property
    def default_target(self) -> str:
        """The device's preferred target."""
        return self.targets[0]


def _get(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing {key!r}")
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}: {key!r} must be a {kind.__name__}")
    return value


def _str_list(table: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    values = _get(table, key, list, where)
    if not values or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{where}: {key!r} must be a non-empty list of strings")
    return tuple(values)


def parse_profile(data: dict[str, Any], where: str) -> DeviceProfile:
    """Validate a parsed TOML table as a profile.

    Raises:
        ConfigError: a key is missing or has the wrong type.
    """
    ort = data.get("onnxruntime")
    tfl = data.get("tflite")
    ort_info = None
    if ort is not None:
        w = f"{where} [onnxruntime]"
        ort_info = OnnxRuntimeInfo(
            package=_get(ort, "package", str, w),
            version=_get(ort, "version", str, w),
            max_ir=_get(ort, "max_ir", int, w),
            max_opset=_get(ort, "max_opset", int, w),
            providers=_str_list(ort, "providers", w),
        )
    tfl_info = None
    if tfl is not None:
        w = f"{where} [tflite]"
        tfl_info = TfliteInfo(
            package=_get(tfl, "package", str, w), version=_get(tfl, "version", str, w)
        )
    profile = DeviceProfile(
        name=_get(data, "name", str, where),
        description=_get(data, "description", str, where),
        arch=_get(data, "arch", str, where),
        python=_get(data, "python", str, where),
        memory_mb=_get(data, "memory_mb", int, where),
        targets=_str_list(data, "targets", where),
        onnxruntime=ort_info,
        tflite=tfl_info,
    )
    if profile.arch not in ("aarch64", "x86_64", "armv7l"):
        raise ConfigError(f"{where}: unknown arch {profile.arch!r}")
    return profile


def load_device(name: str, directory: Path | None = None) -> DeviceProfile:
    """Load the profile ``<directory>/<name>.toml``.

    Args:
        name: profile name, e.g. ``rpi5``.
        directory: where profiles live; default :data:`DEFAULT_DEVICES_DIR`.

    Returns:
        The validated profile.

    Raises:
        ConfigError: unknown device (the message lists the known ones) or a malformed profile.
    """
    folder = directory or DEFAULT_DEVICES_DIR
    if not _NAME_RE.match(name):
        raise ConfigError(f"bad device name {name!r}")
    path = folder / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(list_devices(folder)) or "none"
        raise ConfigError(f"unknown device {name!r} (known: {known})")
    raw = path.read_bytes()
    if len(raw) > _PROFILE_MAX_BYTES:
        raise ConfigError(f"{path}: over {_PROFILE_MAX_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    profile = parse_profile(data, str(path.name))
    if profile.name != name:
        raise ConfigError(f"{path}: name {profile.name!r} does not match the file name")
    return profile


def list_devices(directory: Path | None = None) -> list[str]:
    """Names of the profiles in ``directory`` (default :data:`DEFAULT_DEVICES_DIR`), sorted."""
    folder = directory or DEFAULT_DEVICES_DIR
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.toml"))
