"""The conversion report: one table, original vs converted, and the targets listing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeserve.converter.targets import TARGETS
from rich.table import Table

from edgeserve.devices import list_devices, load_device

__all__ = ["report_table", "targets_table"]


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def _ratio(a: float, b: float) -> str:
    return f"{b / a:.2f}x" if a else "-"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def report_table(metrics: Mapping[str, Any], target: str, bundle_path: str) -> Table:
    """The result table: size, latency p50/p95 (batch 1), agreement and accuracy."""
    orig, conv = metrics["original"], metrics["converted"]
    table = Table(title=f"{target} -> {bundle_path}  ({metrics['rows']} {metrics['data']} rows)")
    table.add_column("metric")
    table.add_column("original", justify="right")
    table.add_column("converted", justify="right")
    table.add_column("change", justify="right")
    table.add_row(
        "size",
        _size(orig["size_bytes"]),
        _size(conv["size_bytes"]),
        _ratio(orig["size_bytes"], conv["size_bytes"]),
    )
    for key, label in (("p50_ms", "latency p50 (batch 1)"), ("p95_ms", "latency p95 (batch 1)")):
        a, b = orig["latency_ms"][key], conv["latency_ms"][key]
        table.add_row(label, f"{a:.3f} ms", f"{b:.3f} ms", _ratio(a, b))
    if "accuracy" in orig:
        drop = metrics.get("accuracy_drop_points", 0.0)
        table.add_row(
            "accuracy", _pct(orig["accuracy"]), _pct(conv["accuracy"]), f"{0.0 - drop:+.2f} pts"
        )
    if "top1_agreement" in metrics:
        table.add_row("top-1 agreement", "", _pct(metrics["top1_agreement"]), "")
    err = metrics.get("max_abs_err")
    table.add_row("max abs error", "", "-" if err is None else f"{err:.3g}", "")
    table.add_row("cosine similarity", "", f"{metrics['cosine']:.6f}", "")
    return table


def candidates_table(candidates: list[Mapping[str, Any]], chosen: str) -> Table:
    """What ``--precision auto`` measured, the chosen one marked."""
    table = Table(title="--precision auto: candidates")
    for col in ("target", "p50 ms", "size", "drop (pts)", "within budget"):
        table.add_column(col)
    for c in candidates:
        drop = c["drop_points"]
        table.add_row(
            ("* " if c["target"] == chosen else "  ") + c["target"],
            f"{c['p50_ms']:.3f}",
            _size(c["size_bytes"]),
            "-" if drop is None else f"{drop:.2f}",
            "yes" if c["within_budget"] else "no",
        )
    return table


def targets_table() -> Table:
    """Every target preset and the devices that prefer it."""
    devices = {}
    for name in list_devices():
        for target in load_device(name).targets:
            devices.setdefault(target, []).append(name)
    table = Table(title="conversion targets")
    table.add_column("target", no_wrap=True)
    for col in ("format", "precision", "providers", "devices", "description"):
        table.add_column(col)
    for t in TARGETS.values():
        table.add_row(
            t.name,
            t.format,
            t.precision,
            ", ".join(p.replace("ExecutionProvider", "") for p in t.providers),
            ", ".join(devices.get(t.name, [])),
            t.description + (" [needs --calibration]" if t.needs_calibration else ""),
        )
    return table
