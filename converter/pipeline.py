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
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import numpy as np
from edgeserve.converter import calibration as cal
from edgeserve.converter.build import BuildSettings, build_candidate, sample_with_references
from edgeserve.converter.evaluate import Candidate, Fidelity, choose, evaluate, measure_latency
from edgeserve.converter.latency import first_batch
from edgeserve.converter.loaders import SourceModel, load_source, load_torch
from edgeserve.converter.mixed import TOP_SENSITIVE, search_mixed
from edgeserve.converter.onnx_files import load_model
from edgeserve.converter.options import ConvertOptions, ConvertResult
from edgeserve.converter.outcome import (
    budget_text,
    fidelity_from,
    json_safe,
    manifest_metrics,
    refusal_message,
)
from edgeserve.converter.quantize import Exclusions
from edgeserve.converter.quiet import set_verbose
from edgeserve.converter.sensitivity import node_sensitivity
from edgeserve.converter.targets import TARGETS, Target, family_members, get_target, sibling
from edgeserve.converter.to_onnx import export_onnx
from edgeserve.converter.validate import run_batch_size, run_dataset

from edgeserve import __version__
from edgeserve.bundle import read_labels, write_bundle
from edgeserve.bundle.sample import HEALTH_CHECK_KEY, SAMPLE_ROLE, health_check_record
from edgeserve.devices import DeviceProfile, load_device
from edgeserve.errors import (
    BundleError,
    ConfigError,
    ConversionError,
    EdgeServeError,
    StorageError,
)

__all__ = ["convert_model", "resolve_targets"]

Progress = Callable[[str], None]
_VALIDATION_BATCH: Final = 64
# the bundle file of --class-labels (role "labels"): the first output's class names, one per line
CLASS_LABELS_FILE: Final = "labels.txt"


def _reachable(source: SourceModel, target: Target) -> bool:
    if target.precision == "as-is":
        return target.format == source.kind
    if source.kind == "onnx":
        return target.format in ("onnx", "ort")
    # Keras / SavedModel / PyTorch reach every converting target (to_onnx, tflite_passes)
    return source.kind != "tflite"


def _unreachable_error(source: SourceModel, target: Target) -> ConfigError:
    from edgeserve.converter.tflite_passes import ONNX_TO_TFLITE_HELP

    if source.kind == "onnx" and target.is_tflite:
        return ConfigError(ONNX_TO_TFLITE_HELP)
    if source.kind == "tflite":
        return ConfigError("a .tflite model is bundled as it is: use --target tflite-as-is")
    return ConfigError(f"{target.name} takes a ready-made {target.format} file")


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
    """Convert, validate, gate and write a bundle.

    Args:
        opts: the options.
        progress: called with a short description at each step (the CLI's progress bar).

    Returns:
        The written bundle and its validation.

    Raises:
        ConfigError: bad arguments or data (exit 2).
        UnsupportedOpError, ModelError, ConversionError: the conversion failed or the gate
            refused every candidate (exit 1).
        StorageError: the output cannot be written (exit 1).
    """
    started = time.perf_counter()
    step = progress or (lambda _: None)
    set_verbose(opts.verbose)
    if opts.io_type not in ("float", "int8"):
        raise ConfigError(f"--io-type must be float or int8, not {opts.io_type!r}")
    if opts.threads < 0:
        raise ConfigError("--threads must be >= 0")
    step("loading model")
    source, filename = _load(opts)
    name = opts.name or _default_name(source.path)
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
    fidelity = fidelity_from(
        opts.task, opts.metric, labels, opts.max_accuracy_drop, opts.min_cosine, opts.min_snr_db
    )
    settings = BuildSettings(
        name=name,
        version=opts.version,
        shapes=shapes,
        io_type=opts.io_type,
        calibration_method=opts.calibration_method,
        device=profile,
        source_info={"sha256": source.sha256, "format": source.kind, "filename": filename},
        converter_version=__version__,
        exclusions=Exclusions(opts.exclude_nodes, opts.exclude_op_types),
    )
    step("running the original")
    runner = source.runner(opts.threads)
    batch = run_batch_size(source.inputs, _VALIDATION_BATCH)
    original = run_dataset(runner, validation, batch)
    with tempfile.TemporaryDirectory(prefix="edgeserve-convert-") as tmp:
        work = Path(tmp)
        if source.kind != "onnx" and any(t.format in ("onnx", "ort") for t in targets):
            step("exporting to ONNX")
            source.onnx = export_onnx(source, work / "export")
        candidates, failed = _build_all(
            source, targets, settings, calibration, validation, original, fidelity, opts, work,
            step,
        )  # fmt: skip
        step("timing (alternated rounds)")
        original_latency = measure_latency(
            runner,
            first_batch(validation, run_batch_size(source.inputs, 1)),
            candidates,
            validation,
            opts.threads,
        )
        if len(targets) == 1 and len(candidates) == 1:
            chosen = candidates[0]
            if chosen.failure is not None:
                raise ConversionError(refusal_message(chosen, fidelity))
        else:
            chosen = choose(candidates, lambda: budget_text(fidelity), opts.objective)
        metrics = manifest_metrics(
            chosen, candidates, failed, fidelity, source, original_latency, opts.threads
        )
        metrics["data"] = data_kind
        metrics["rows"] = cal.rows(validation)
        step("writing bundle")
        built = chosen.built
        manifest = built.bundle.manifest
        files: dict[str, tuple[Path | bytes, str]] = {
            f.path: (built.bundle.path / f.path, f.role) for f in manifest.files
        }
        # the device's post-activation health check compares its outputs with these
        references = sample_with_references(built.bundle)
        if references is not None:
            sample_file = next(f.path for f in manifest.files if f.role == SAMPLE_ROLE)
            files[sample_file] = (references[0], SAMPLE_ROLE)
            metrics[HEALTH_CHECK_KEY] = health_check_record(references[1])
        if class_labels is not None:
            files[CLASS_LABELS_FILE] = (class_labels, "labels")
        metrics["wall_time_s"] = round(time.perf_counter() - started, 2)
        final_manifest = replace(manifest, validation=json_safe(metrics), files=())
        bundle = write_bundle(out, final_manifest, files, overwrite=opts.force)
    summaries = [c.summary() for c in candidates] + failed
    return ConvertResult(bundle, built.target, metrics, summaries)


def _load(opts: ConvertOptions) -> tuple[SourceModel, str]:
    """The source model and the filename the manifest records for it."""
    if opts.torch_module is not None:
        if opts.model is not None:
            raise ConfigError("give either MODEL or --torch module:factory, not both")
        source = load_torch(opts.torch_module, opts.example_input)
        source.path = Path(opts.torch_module.rpartition(":")[2])
        return source, opts.torch_module
    if opts.example_input is not None:
        raise ConfigError("--example-input goes with --torch module:factory")
    if opts.model is None:
        raise ConfigError("missing MODEL (or --torch module:factory)")
    return load_source(opts.model), opts.model.name


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


def _build_all(
    source: SourceModel,
    targets: list[Target],
    settings: BuildSettings,
    calibration: cal.Dataset | None,
    validation: cal.Dataset,
    original: list[np.ndarray],
    fidelity: Fidelity,
    opts: ConvertOptions,
    work: Path,
    step: Progress,
) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """Build and judge every target; with ``--precision auto`` also the mixed-precision trials."""
    candidates: list[Candidate] = []
    failed: list[dict[str, Any]] = []
    errors: list[EdgeServeError] = []
    auto = opts.precision == "auto"

    def build(target: Target, where: Path, s: BuildSettings = settings) -> Candidate:
        step(f"converting to {target.name}")
        built = build_candidate(source, target, s, calibration, where, validation)
        step(f"validating {target.name}")
        return evaluate(built, validation, original, fidelity, _VALIDATION_BATCH, opts.threads)

    for i, target in enumerate(targets):
        try:
            candidate = build(target, work / f"c{i}")
        except EdgeServeError as exc:
            # --precision auto: a candidate that cannot be built is reported, not fatal
            if len(targets) == 1:
                raise
            errors.append(exc)
            failed.append({"target": target.name, "error": " ".join(str(exc).split())})
            continue
        candidates.append(candidate)
        qdq = candidate.built.float_model is not None and target.precision == "int8"
        if qdq and (opts.sensitivity or candidate.failure is not None):
            step(f"sensitivity of {target.name}")
            ranking = node_sensitivity(
                candidate.built.float_model,  # type: ignore[arg-type]
                candidate.built.qdq_model or candidate.built.bundle.path / "model.onnx",
                {candidate.built.name_map[k]: v for k, v in validation.items()},
                work / f"sens{i}",
            )
            candidate.sensitivity = [e.to_dict() for e in ranking[:TOP_SENSITIVE]]
            if auto and candidate.failure is not None and ranking:

                def trial(exclusions: Exclusions, where: Path, t: Target = target) -> Candidate:
                    return build(t, where, replace(settings, exclusions=exclusions))

                float_model = load_model(candidate.built.float_model)  # type: ignore[arg-type]
                candidates += search_mixed(
                    ranking, float_model, settings.exclusions, trial, work / f"m{i}"
                )
    if not candidates:
        raise errors[0]
    return candidates, failed
