"""What a conversion takes (:class:`ConvertOptions`, one field per ``edgeserve convert`` flag)
and what it gives back (:class:`ConvertResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeserve.converter.gate import DEFAULT_MIN_COSINE, DEFAULT_MIN_SNR_DB
from edgeserve.converter.targets import Target

from edgeserve.bundle import Bundle

__all__ = ["ConvertOptions", "ConvertResult"]


@dataclass(frozen=True)
class ConvertOptions:
    """Everything ``edgeserve convert`` takes (see the CLI help for each)."""

    model: Path | None = None
    target: str | None = None
    device: str | None = None
    calibration: Path | None = None
    validation: Path | None = None
    labels: Path | None = None
    class_labels: Path | None = None
    output: Path | None = None
    name: str | None = None
    version: int = 1
    precision: str | None = None
    objective: str = "latency"
    max_accuracy_drop: float | None = None
    input_shapes: tuple[str, ...] = ()
    io_type: str = "float"
    calibration_method: str = "minmax"
    force: bool = False
    devices_dir: Path | None = None
    task: str | None = None
    metric: str | None = None
    min_cosine: float = DEFAULT_MIN_COSINE
    min_snr_db: float = DEFAULT_MIN_SNR_DB
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    sensitivity: bool = False
    threads: int = 1
    verbose: bool = False
    torch_module: str | None = None
    example_input: Path | None = None


@dataclass
class ConvertResult:
    """What a conversion produced.

    Attributes:
        bundle: the written bundle.
        target: the target chosen.
        validation: the metrics written to the manifest.
        candidates: per-candidate summaries (more than one with ``--precision auto``).
    """

    bundle: Bundle
    target: Target
    validation: dict[str, Any]
    candidates: list[dict[str, Any]] = field(default_factory=list)
