"""The conversion pipeline: resolve the target, load the data, build, validate, choose, write.

Usable without the CLI::

    from edgeserve.converter import ConvertOptions, convert_model
    result = convert_model(ConvertOptions(model=Path("m.onnx"), target="onnx-cpu-int8",
                                          calibration=Path("calib.npy"), output=Path("out")))
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
from edgeserve.converter import calibration as cal
from edgeserve.converter.build import (
    BuildSettings,
    Built,
    build_candidate,
    sample_with_references,
)
from edgeserve.converter.loaders import SourceModel, load_source
from edgeserve.converter.targets import TARGETS, Target, family_members, get_target, sibling
from edgeserve.converter.validate import (
    compare,
    latency_ms,
    open_bundle_runner,
    run_batch_size,
    run_dataset,
)

from edgeserve import __version__
from edgeserve.bundle import Bundle, read_labels, write_bundle
from edgeserve.devices import DeviceProfile, load_device
from edgeserve.errors import (
    BundleError,
    ConfigError,
    ConversionError,
    EdgeServeError,
    StorageError,
)

__all__ = ["ConvertOptions", "ConvertResult", "convert_model", "resolve_targets"]

Progress = Callable[[str], None]
AUTO_DEFAULT_DROP_POINTS: Final = 1.0  # accuracy points --precision auto may lose by default
_VALIDATION_BATCH: Final = 64
# the bundle file of --class-labels (role "labels"): the first output's class names, one per line
CLASS_LABELS_FILE: Final = "labels.txt"


@dataclass(frozen=True)
class ConvertOptions:
    """Everything ``edgeserve convert`` takes (see the CLI help for each)."""

    model: Path
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
    max_accuracy_drop: float | None = None
    input_shapes: tuple[str, ...] = ()
    io_type: str = "float"
    calibration_method: str = "minmax"
    force: bool = False
    devices_dir: Path | None = None


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


def _reachable(source: SourceModel, target: Target) -> bool:
    if source.kind == "onnx":
        return (target.format in ("onnx", "ort") and target.precision != "as-is") or (
            target.name == "onnx-as-is"
        )
    if source.kind == "tflite":
        return target.name == "tflite-as-is"
    return target.is_tflite and target.precision != "as-is"


def _unreachable_error(source: SourceModel, target: Target) -> ConfigError:
    from edgeserve.converter.tflite_passes import ONNX_TO_TFLITE_HELP

    if source.kind == "onnx" and target.is_tflite:
        return ConfigError(ONNX_TO_TFLITE_HELP)
    if source.kind == "tflite":
        return ConfigError("a .tflite model is bundled as it is: use --target tflite-as-is")
    if target.precision == "as-is":
        return ConfigError(f"{target.name} takes a ready-made {target.format} file")
    return ConfigError(
        f"{source.kind} -> {target.format} is not built in (tf2onnx pins old TensorFlow/numpy): "
        "export ONNX yourself or pick a tflite-* target"
    )


def resolve_targets(
    source: SourceModel, opts: ConvertOptions, profile: DeviceProfile | None, has_calibration: bool
) -> list[Target]:
    """The candidate targets, best first (one unless ``--precision auto``).

    Raises:
        ConfigError: no target/device, an unknown or unreachable target, a bad precision.
    """
    if opts.target is not None:
        target = get_target(opts.target)
        if profile is not None:
            runtime = profile.tflite if target.is_tflite else profile.onnxruntime
            if runtime is None:
                raise ConfigError(f"device {profile.name} has no runtime for {target.name}")
    elif profile is not None:
        usable = [
            get_target(n)
            for n in profile.targets
            if _reachable(source, get_target(n))
            and (has_calibration or not get_target(n).needs_calibration)
        ]
        if source.kind in ("onnx", "tflite") and not usable:
            as_is = "tflite-as-is" if source.kind == "tflite" else "onnx-as-is"
            usable = [TARGETS[as_is]]
        if not usable:
            raise ConfigError(
                f"none of {profile.name}'s targets ({', '.join(profile.targets)}) fits a "
                f"{source.kind} model" + ("" if has_calibration else " without --calibration")
            )
        target = usable[0]
    else:
        raise ConfigError("say what to build for: --target T or --device D (see --list-targets)")
    if not _reachable(source, target):
        raise _unreachable_error(source, target)
    if opts.precision in (None, target.precision):
        return [target]
    if opts.precision != "auto":
        return [sibling(target, opts.precision)]
    candidates = [t for t in family_members(target) if has_calibration or not t.needs_calibration]
    return sorted(candidates, key=lambda t: t is not target)


def _default_name(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem if path.is_file() else path.name)
    return stem.lstrip("-._") or "model"


def _check_output(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise StorageError(f"{out}: already exists (use --force to replace it)")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise StorageError(f"{out}: cannot write under {parent} (not a directory)")
    if not os.access(parent, os.W_OK):
        raise StorageError(f"{out}: cannot write to {parent} (permission denied)")


def convert_model(opts: ConvertOptions, progress: Progress | None = None) -> ConvertResult:
    """Convert, validate and write a bundle.

    Args:
        opts: the options.
        progress: called with a short description at each step (the CLI's progress bar).

    Returns:
        The written bundle and its validation.

    Raises:
        ConfigError: bad arguments or data (exit 2).
        UnsupportedOpError, ModelError, ConversionError: the conversion failed (exit 1).
        StorageError: the output cannot be written (exit 1).
    """
    step = progress or (lambda _: None)
    if opts.io_type not in ("float", "int8"):
        raise ConfigError(f"--io-type must be float or int8, not {opts.io_type!r}")
    step("loading model")
    source = load_source(opts.model)
    name = opts.name or _default_name(opts.model)
    profile = load_device(opts.device, opts.devices_dir) if opts.device else None
    shapes = cal.parse_input_shapes(opts.input_shapes, source.inputs)
    step("loading data")
    calibration = (
        cal.load_dataset(opts.calibration, source.inputs, "calibration")
        if opts.calibration
        else None
    )
    class_labels = _class_labels(opts.class_labels, source) if opts.class_labels else None
    targets = resolve_targets(source, opts, profile, calibration is not None)
    out = opts.output or Path(f"{name}-{targets[0].name}")
    _check_output(out, opts.force)
    if opts.validation:
        validation, data_kind = (
            cal.load_dataset(opts.validation, source.inputs, "validation"),
            "validation",
        )
    elif calibration is not None:
        validation, data_kind = calibration, "calibration"
    else:
        validation, data_kind = cal.generate_inputs(source.inputs, shapes), "generated"
    labels = cal.load_labels(opts.labels, cal.rows(validation)) if opts.labels else None
    settings = BuildSettings(
        name=name,
        version=opts.version,
        shapes=shapes,
        io_type=opts.io_type,
        calibration_method=opts.calibration_method,
        device=profile,
        source_info={"sha256": source.sha256, "format": source.kind, "filename": opts.model.name},
        converter_version=__version__,
    )
    step("running the original")
    runner = source.runner()
    batch = run_batch_size(source.inputs, _VALIDATION_BATCH)
    original = run_dataset(runner, validation, batch)
    original_latency = latency_ms(runner, validation, run_batch_size(source.inputs, 1))
    with tempfile.TemporaryDirectory(prefix="edgeserve-convert-") as tmp:
        results: list[tuple[Built, dict[str, Any]]] = []
        errors: list[EdgeServeError] = []
        failed: list[dict[str, str]] = []
        for i, target in enumerate(targets):
            step(f"converting to {target.name}")
            try:
                built = build_candidate(
                    source, target, settings, calibration, Path(tmp) / f"c{i}", validation
                )
                step(f"validating {target.name}")
                results.append((built, _validate(built, validation, original, labels, batch)))
            except EdgeServeError as exc:
                # --precision auto: a candidate that cannot be built is reported, not fatal
                if len(targets) == 1:
                    raise
                errors.append(exc)
                failed.append({"target": target.name, "error": " ".join(str(exc).split())})
        if not results:
            raise errors[0]
        chosen, metrics, candidates = _choose(results, opts)
        metrics["data"] = data_kind
        metrics["original"] = {
            "size_bytes": source.size_bytes,
            "latency_ms": original_latency,
            **_accuracy(metrics, "accuracy_original"),
        }
        _check_budget(metrics, opts.max_accuracy_drop)
        if len(targets) > 1:
            metrics["candidates"] = candidates
        if failed:
            metrics["failed_candidates"] = failed
        step("writing bundle")
        manifest = chosen.bundle.manifest
        files: dict[str, tuple[Path | bytes, str]] = {
            f.path: (chosen.bundle.path / f.path, f.role) for f in manifest.files
        }
        # the device's post-activation health check compares its outputs with these
        references = sample_with_references(chosen.bundle)
        if references is not None:
            sample_file = next(f.path for f in manifest.files if f.role == "sample")
            files[sample_file] = (references[0], "sample")
            metrics["health_check"] = {"tolerance": references[1]}
        if class_labels is not None:
            files[CLASS_LABELS_FILE] = (class_labels, "labels")
        final_manifest = replace(manifest, validation=_json_safe(metrics), files=())
        bundle = write_bundle(out, final_manifest, files, overwrite=opts.force)
    return ConvertResult(bundle, chosen.target, metrics, candidates)


def _class_labels(path: Path, source: SourceModel) -> bytes:
    """The ``labels`` file to bundle: one label per line for the first output's classes.

    Raises:
        ConfigError: unreadable, empty, or a count that differs from the first output's
            (static) last dimension.
    """
    try:
        labels = read_labels(path)
    except BundleError as exc:
        raise ConfigError(f"--class-labels: {exc}") from exc
    first = source.outputs[0] if source.outputs else None
    classes = first.shape[-1] if first is not None and first.shape else -1
    if classes > 0 and len(labels) != classes:
        raise ConfigError(
            f"--class-labels: {path.name} has {len(labels)} labels but output "
            f"{first.name if first else '?'} has {classes} classes"
        )
    return ("\n".join(labels) + "\n").encode("utf-8")


def _json_safe(value: Any) -> Any:
    """Metrics as the manifest stores them: a NaN or infinite figure (e.g. the max abs error of
    a model whose outputs are NaN) becomes null, since JSON has neither."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _accuracy(metrics: dict[str, Any], key: str) -> dict[str, Any]:
    return {"accuracy": metrics[key]} if key in metrics else {}


def _validate(
    built: Built,
    data: cal.Dataset,
    original: list[np.ndarray],
    labels: np.ndarray | None,
    batch: int,
) -> dict[str, Any]:
    feeds = {built.name_map[k]: v for k, v in data.items()}
    runner = open_bundle_runner(built.bundle, built.quant)
    try:
        inputs = built.bundle.manifest.inputs
        converted = run_dataset(runner, feeds, run_batch_size(inputs, batch))
        metrics = compare(original, converted, labels)
        lat = latency_ms(runner, feeds, run_batch_size(inputs, 1))
    finally:
        runner.close()
    size = built.bundle.manifest.model_file.size
    metrics["converted"] = {
        "size_bytes": size,
        "latency_ms": lat,
        **_accuracy(metrics, "accuracy_converted"),
    }
    if "accuracy_original" in metrics:
        drop = (metrics["accuracy_original"] - metrics["accuracy_converted"]) * 100.0
        metrics["accuracy_drop_points"] = round(drop, 4)
    elif "top1_agreement" in metrics:
        metrics["disagreement_points"] = round((1.0 - metrics["top1_agreement"]) * 100.0, 4)
    return metrics


def _drop(metrics: dict[str, Any]) -> float | None:
    """Accuracy points lost: against labels if given, else top-1 disagreement with the original."""
    if "accuracy_drop_points" in metrics:
        return float(metrics["accuracy_drop_points"])
    if "disagreement_points" in metrics:
        return float(metrics["disagreement_points"])
    return None


def _choose(
    results: list[tuple[Built, dict[str, Any]]], opts: ConvertOptions
) -> tuple[Built, dict[str, Any], list[dict[str, Any]]]:
    """Keep the fastest candidate (p50, batch 1) within the accuracy budget (``auto``)."""
    budget = opts.max_accuracy_drop
    if budget is None:
        budget = AUTO_DEFAULT_DROP_POINTS
    summary = []
    for built, metrics in results:
        drop = _drop(metrics)
        summary.append(
            {
                "target": built.target.name,
                "p50_ms": round(metrics["converted"]["latency_ms"]["p50_ms"], 4),
                "size_bytes": metrics["converted"]["size_bytes"],
                "drop_points": drop,
                "within_budget": drop is None or drop <= budget,
            }
        )
    if len(results) == 1:
        return results[0][0], results[0][1], summary
    passing = [i for i, s in enumerate(summary) if s["within_budget"]]
    if not passing:
        raise ConversionError(
            f"no candidate precision stays within {budget} accuracy points: "
            + ", ".join(f"{s['target']} loses {s['drop_points']}" for s in summary)
        )
    best = min(passing, key=lambda i: summary[i]["p50_ms"])
    return results[best][0], results[best][1], summary


def _check_budget(metrics: dict[str, Any], max_drop: float | None) -> None:
    if max_drop is None:
        return
    drop = _drop(metrics)
    if drop is None:
        raise ConfigError(
            "--max-accuracy-drop needs --labels or a classifier output (top-1) to measure"
        )
    if drop > max_drop:
        what = "accuracy" if "accuracy_drop_points" in metrics else "top-1 agreement"
        raise ConversionError(
            f"{what} dropped {drop:.2f} points, over --max-accuracy-drop {max_drop}; "
            "no bundle written"
        )
