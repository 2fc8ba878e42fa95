"""Validation of operator API request bodies: plain functions from JSON to typed values.

Each raises :class:`~edgeserve.errors.ConfigError` naming the field, which the API answers
with ``400 {"error": ...}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from edgeserve.errors import ConfigError

from .rollout.controller import RolloutSpec
from .stats import MinEffect

__all__ = [
    "device_request",
    "experiment_request",
    "parse_duration",
    "rollout_request",
    "selector",
]

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, what: str) -> float:
    """``10m``, ``30s``, ``1h``, ``250ms`` or a number of seconds -> seconds.

    Raises:
        ConfigError: not a duration or negative.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", str(value))
        if not m:
            raise ConfigError(f"{what}: {value!r} is not a duration like 30s, 10m, 1h")
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds < 0:
        raise ConfigError(f"{what}: must not be negative")
    return seconds


def _get(
    body: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    default: Any = ...,
) -> Any:
    if key not in body or body[key] is None:
        if default is ...:
            raise ConfigError(f"{key}: required")
        return default
    value = body[key]
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{key}: wrong type")
    if not isinstance(value, kind):
        raise ConfigError(f"{key}: wrong type ({type(value).__name__})")
    return value


def _check_keys(body: Any, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise ConfigError("request body must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise ConfigError(f"unknown fields: {', '.join(sorted(unknown))}")
    return body


def selector(value: Any, what: str = "selector") -> dict[str, str]:
    """A ``{tag: value}`` mapping (or ``"k=v,k2=v2"``) checked for safe characters.

    Raises:
        ConfigError: malformed.
    """
    if isinstance(value, str):
        pairs = [p for p in value.split(",") if p.strip()]
        out = {}
        for p in pairs:
            if "=" not in p:
                raise ConfigError(f"{what}: {p!r} is not key=value")
            k, v = p.split("=", 1)
            out[k.strip()] = v.strip()
        value = out
    if not isinstance(value, Mapping) or len(value) > 32:
        raise ConfigError(f"{what}: must be key=value pairs")
    for k, v in value.items():
        if (
            not isinstance(k, str)
            or not isinstance(v, str)
            or not _TAG_RE.match(k)
            or not (_TAG_RE.match(v))
        ):
            raise ConfigError(f"{what}: {k}={v} - use letters, digits, '_', '-', '.'")
    return dict(value)


def device_request(body: Any) -> tuple[str, dict[str, str]]:
    """``{"id": "pi-1", "tags": {...}}`` -> ``(id, tags)``.

    Raises:
        ConfigError: bad id or tags.
    """
    body = _check_keys(body, {"id", "tags"})
    device = _get(body, "id", str)
    if not _ID_RE.match(device):
        raise ConfigError(f"id: {device!r} must be 1-64 of A-Z a-z 0-9 _ . - (starting alnum)")
    return device, selector(body.get("tags") or {}, "tags")


def rollout_request(body: Any, default_install_timeout_s: float) -> RolloutSpec:
    """The JSON of ``rollout start`` -> :class:`RolloutSpec`.

    Raises:
        ConfigError: a field is missing or out of range.
    """
    body = _check_keys(
        body,
        {
            "model",
            "version",
            "selector",
            "phases",
            "soak",
            "max_failure_pct",
            "min_devices",
            "max_latency_regression_pct",
            "install_timeout",
        },
    )
    phases = _get(body, "phases", list, [100])
    if not phases or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 < p <= 100 for p in phases
    ):
        raise ConfigError("phases: integers in (0, 100]")
    if phases != sorted(set(phases)) or phases[-1] != 100:
        raise ConfigError("phases: must increase strictly and end at 100, e.g. 5,25,100")
    failure = float(_get(body, "max_failure_pct", (int, float), 0))
    regression = _get(body, "max_latency_regression_pct", (int, float), None)
    min_devices = _get(body, "min_devices", int, 1)
    version = _get(body, "version", int)
    if not 0 <= failure <= 100 or min_devices < 1 or version < 1:
        raise ConfigError("max_failure_pct in [0, 100], min_devices >= 1, version >= 1")
    if regression is not None and regression < 0:
        raise ConfigError("max_latency_regression_pct: must not be negative")
    return RolloutSpec(
        model=_get(body, "model", str),
        version=version,
        selector=selector(body.get("selector") or {}),
        phases=tuple(phases),
        soak_s=parse_duration(body.get("soak", 0), "soak"),
        max_failure_pct=failure,
        min_devices=min_devices,
        max_latency_regression_pct=None if regression is None else float(regression),
        install_timeout_s=parse_duration(
            body.get("install_timeout", default_install_timeout_s), "install_timeout"
        ),
    )


def experiment_request(body: Any) -> dict[str, Any]:
    """The JSON of ``experiment start`` -> keyword arguments of ``start_experiment``.

    Raises:
        ConfigError: a field is missing or out of range.
    """
    body = _check_keys(body, {"model", "a", "b", "split", "on_device", "selector", "min_effect"})
    split = _get(body, "split", int, 50)
    effect = body.get("min_effect")
    if not 0 < split < 100:
        raise ConfigError("split: percent of devices (or requests) on B, in (0, 100)")
    return {
        "model": _get(body, "model", str),
        "a": _get(body, "a", int),
        "b": _get(body, "b", int),
        "split": split,
        "on_device": bool(_get(body, "on_device", bool, False)),
        "selector": selector(body.get("selector") or {}),
        "min_effect": None if effect in (None, "") else min_effect(str(effect)),
    }


def min_effect(text: str, what: str = "min_effect") -> MinEffect:
    """``0.5ms``, ``2 ms`` or ``5%`` -> :class:`~.stats.MinEffect`.

    Raises:
        ConfigError: another form, or a negative number.
    """
    value = text.strip().lower().replace(" ", "")
    unit = "pct" if value.endswith("%") else "ms" if value.endswith("ms") else None
    number = value.rstrip("%").removesuffix("ms")
    try:
        amount = float(number)
        if unit is None or not amount >= 0:
            raise ValueError(text)
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not a latency like 0.5ms or 5%") from None
    return MinEffect(**{unit: amount})
