"""``edgeserve convert``: parse the options, call :func:`convert_model`, print the report.

Errors are raised as :class:`~edgeserve.errors.EdgeServeError` subclasses; the root CLI turns
them into one line on stderr and the exit code (2 for bad input, 1 for a failed conversion).
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from edgeserve.converter.gate import DEFAULT_MIN_COSINE, DEFAULT_MIN_SNR_DB
from edgeserve.converter.options import ConvertOptions
from edgeserve.converter.pipeline import convert_model
from edgeserve.converter.report import (
    candidates_table,
    passes_table,
    report_table,
    sensitivity_table,
    targets_table,
)
from edgeserve.converter.tasks import TASKS
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

__all__ = ["convert"]

# TensorFlow's C++ logging writes to stderr, which must carry only our one-line errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@click.command(name="convert", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--target", "-t", help="Target preset (see --list-targets).")
@click.option("--device", "-d", help="Device profile (rpi4, rpi5, jetson-orin-nano, x86_64).")
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    help="Calibration rows: .npy (one input) or .npz keyed by input name.",
)
@click.option(
    "--validation",
    type=click.Path(path_type=Path),
    help="Validation rows (default: the calibration rows, else generated).",
)
@click.option("--labels", type=click.Path(path_type=Path), help=".npy class ids per row.")
@click.option(
    "--class-labels",
    type=click.Path(path_type=Path),
    help="Text file, one class name per line, for the first output (Triton classification).",
)
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Bundle directory.")
@click.option("--name", help="Model name (default: the file's stem).")
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Bundle version (monotonic per name).",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "fp16", "int8", "dynamic"]),
    help="Move within the target's family; auto keeps the fastest within the budget.",
)
@click.option(
    "--objective",
    type=click.Choice(["latency", "size"]),
    default="latency",
    show_default=True,
    help="What --precision auto keeps among the candidates within the budget.",
)
@click.option(
    "--task",
    type=click.Choice(list(TASKS)),
    help="Judge fidelity in the task's terms (--labels alone implies classify).",
)
@click.option("--metric", help="Your own metric instead: module:function (see the README).")
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(min=0),
    help="Refuse (exit 1, no bundle) past this many points of the task metric.  [default: 1]",
)
@click.option(
    "--min-cosine",
    type=click.FloatRange(min=-1, max=1),
    default=DEFAULT_MIN_COSINE,
    show_default=True,
    help="Without a task: refuse when any output's cosine vs the original is lower.",
)
@click.option(
    "--min-snr-db",
    type=float,
    default=DEFAULT_MIN_SNR_DB,
    show_default=True,
    help="Without a task: refuse when any output's SNR (dB) vs the original is lower.",
)
@click.option(
    "--exclude-nodes",
    multiple=True,
    help="Keep nodes whose name matches this glob in float (repeatable).",
)
@click.option(
    "--exclude-op-types",
    help="Keep these op types in float: Concat,Sigmoid.",
)
@click.option("--sensitivity", is_flag=True, help="List the nodes int8 hurts most (static int8).")
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Intra-op threads for validation and timing (0 = the runtime's default).",
)
@click.option("--verbose", "-v", is_flag=True, help="Show ONNX Runtime's own log and warnings.")
@click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    help="Pin a shape: name=1,28,28 (-1 keeps a dimension dynamic).",
)
@click.option("--io-type", type=click.Choice(["float", "int8"]), default="float", show_default=True)
@click.option(
    "--calibration-method",
    type=click.Choice(["minmax", "entropy", "percentile"]),
    default="minmax",
    show_default=True,
)
@click.option(
    "--torch",
    "torch_module",
    metavar="MODULE:FACTORY",
    help="A PyTorch module instead of MODEL: FACTORY() returns it (MODULE from the CWD).",
)
@click.option(
    "--example-input",
    type=click.Path(path_type=Path),
    help="With --torch: .npy (one input) or .npz keyed by forward()'s parameter names.",
)
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("--list-targets", is_flag=True, help="List the target presets and exit.")
def convert(
    model: Path | None,
    target: str | None,
    device: str | None,
    calibration: Path | None,
    validation: Path | None,
    labels: Path | None,
    class_labels: Path | None,
    output: Path | None,
    name: str | None,
    version: int,
    precision: str | None,
    objective: str,
    task: str | None,
    metric: str | None,
    max_accuracy_drop: float | None,
    min_cosine: float,
    min_snr_db: float,
    exclude_nodes: tuple[str, ...],
    exclude_op_types: str | None,
    sensitivity: bool,
    threads: int,
    verbose: bool,
    input_shapes: tuple[str, ...],
    io_type: str,
    calibration_method: str,
    torch_module: str | None,
    example_input: Path | None,
    force: bool,
    list_targets: bool,
) -> None:
    """Convert MODEL (.onnx, .keras, .h5, SavedModel dir, .pt2, .tflite) or a --torch module
    into an edge bundle."""
    console = Console()
    if list_targets:
        console.print(targets_table())
        return
    if model is None and torch_module is None:
        raise click.UsageError("missing MODEL (or --torch MODULE:FACTORY, or --list-targets)")
    options = ConvertOptions(
        model=model,
        target=target,
        device=device,
        calibration=calibration,
        validation=validation,
        labels=labels,
        class_labels=class_labels,
        output=output,
        name=name,
        version=version,
        precision=precision,
        objective=objective,
        max_accuracy_drop=max_accuracy_drop,
        input_shapes=input_shapes,
        io_type=io_type,
        calibration_method=calibration_method,
        force=force,
        task=task,
        metric=metric,
        min_cosine=min_cosine,
        min_snr_db=min_snr_db,
        exclude_nodes=exclude_nodes,
        exclude_op_types=tuple(t.strip() for t in (exclude_op_types or "").split(",") if t.strip()),
        sensitivity=sensitivity,
        threads=threads,
        verbose=verbose,
        torch_module=torch_module,
        example_input=example_input,
    )
    err_console = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,  # a pipe or a log gets the table, not frames
    )
    with progress:
        task = progress.add_task("starting", total=None)
        result = convert_model(
            options, lambda what: progress.update(task, description=what, advance=1)
        )
    manifest = result.bundle.manifest
    if len(result.candidates) > 1:
        console.print(
            candidates_table(result.candidates, result.validation.get("chosen", manifest.target))
        )
    passes = manifest.converter.get("passes") or []
    if passes:
        console.print(passes_table(passes))
    if result.validation.get("sensitivity"):
        console.print(sensitivity_table(result.validation["sensitivity"]))
    console.print(report_table(result.validation, result.target.name, str(result.bundle.path)))
    console.print(f"bundle written: {result.bundle.path}")
