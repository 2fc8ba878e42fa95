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


def _ms(latency: Mapping[str, float]) -> str:
    if "p50_ms" not in latency:
        return "-"
    return f"{latency['p50_ms']:.3f} ± {latency.get('spread_ms', 0.0):.3f} ms"


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def report_table(metrics: Mapping[str, Any], target: str, bundle_path: str) -> Table:
    """The result table: size, latency (median ± spread, batch 1, alternated rounds), the task
    score, per-output cosine and SNR, nodes quantized, wall time."""
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
    a, b = orig["latency_ms"], conv["latency_ms"]
    table.add_row(
        f"latency p50 (batch 1, {metrics.get('threads', 1)} thread(s), alternated)",
        _ms(a),
        _ms(b),
        _ratio(a.get("p50_ms", 0.0), b.get("p50_ms", 0.0)),
    )
    task = metrics.get("task")
    if task is not None:
        table.add_row(
            f"{task['task']}: {task['metric']}",
            f"{task['reference']:.4f}",
            f"{task['score']:.4f}",
            f"{-task['drop_points']:+.2f} pts" if task["drop_points"] is not None else "-",
        )
        if "top5_agreement" in task:
            table.add_row("top-1 / top-5 agreement", "", f"{_pct(task['top1_agreement'])} / "
                          f"{_pct(task['top5_agreement'])}", "")  # fmt: skip
    for name, figures in metrics.get("outputs", {}).items():
        table.add_row(
            f"output {name}: cosine / SNR",
            "",
            f"{_num(figures['cosine'], '.5f')} / {_num(figures['snr_db'], '.1f')} dB",
            "",
        )
    err = metrics.get("max_abs_err")
    table.add_row("max abs error", "", "-" if err is None else f"{err:.3g}", "")
    quantized = metrics.get("quantized_nodes")
    if quantized is not None:
        text = ", ".join(f"{op} {n}" for op, n in quantized.items()) or "none"
        table.add_row("nodes quantized", "", text, "")
    if "wall_time_s" in metrics:
        table.add_row("conversion wall time", "", f"{metrics['wall_time_s']:.1f} s", "")
    return table


def passes_table(passes: list[Mapping[str, str]]) -> Table:
    """The pre-processing passes that ran, failed or fell back (``converter.passes``)."""
    table = Table(title="passes")
    for col in ("pass", "status", "detail"):
        table.add_column(col)
    for p in passes:
        table.add_row(p["pass"], p["status"], p.get("detail", ""))
    return table


def sensitivity_table(nodes: list[Mapping[str, Any]]) -> Table:
    """The nodes int8 hurts most (SQNR float vs int8 at their output, and what each adds)."""
    table = Table(title="most sensitive nodes (int8 vs float)")
    for col in ("node", "op", "SQNR dB", "lost dB"):
        table.add_column(col)
    for n in nodes:
        table.add_row(
            n["node"], n["op_type"], _num(n["sqnr_db"], ".1f"), _num(n["added_db"], ".1f")
        )
    return table


def candidates_table(candidates: list[Mapping[str, Any]], chosen: str) -> Table:
    """What ``--precision auto`` measured, the chosen one marked, refusals with their reason."""
    table = Table(title="--precision auto: candidates")
    for col in ("target", "p50 ms", "size", "drop (pts)", "verdict"):
        table.add_column(col)
    for c in candidates:
        if "error" in c:
            table.add_row("  " + c["target"], "-", "-", "-", f"not built: {c['error']}")
            continue
        drop = c["drop_points"]
        table.add_row(
            ("* " if c["target"] == chosen else "  ")
            + c["target"]
            + (f" [{c['float_set']}]" if c.get("float_set") else ""),
            f"{c['p50_ms']:.3f} ± {c['spread_ms']:.3f}",
            _size(c["size_bytes"]),
            "-" if drop is None else f"{drop:.2f}",
            "ok" if c["within_budget"] else f"refused: {c['refused']}",
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
