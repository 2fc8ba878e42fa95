"""Build one candidate: run a target's passes on a source model into a scratch directory.

The result is a complete, checked bundle in the scratch directory; the pipeline validates it
and copies the winner to the output with :func:`edgeserve.bundle.write_bundle` (atomic).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgeserve.converter import device_check, onnx_passes, quantize, tflite_passes
from edgeserve.converter.calibration import Dataset
from edgeserve.converter.loaders import SourceModel, onnx_io, quiet_native_stderr, tflite_io
from edgeserve.converter.onnx_files import external_files, save_model
from edgeserve.converter.quantize import Exclusions
from edgeserve.converter.targets import Target

from edgeserve.bundle import Bundle, write_bundle
from edgeserve.bundle.manifest import Manifest, TensorSpec
from edgeserve.bundle.sample import (
    SAMPLE_FILE,
    SAMPLE_ROLE,
    encode_sample,
    read_sample,
    tolerance_for,
)
from edgeserve.devices import DeviceProfile
from edgeserve.errors import ConfigError, ModelError

__all__ = ["BuildSettings", "Built", "build_candidate", "sample_npz", "sample_with_references"]

SAMPLE_ROWS = 4  # rows in sample.npz (the agent's warm-up and the fleet's health check)


@dataclass(frozen=True)
class BuildSettings:
    """What every candidate shares.

    Attributes:
        name: bundle name.
        version: bundle version.
        shapes: input name -> full shape for pinning dynamic dimensions.
        io_type: ``float`` | ``int8`` (tflite-int8 only).
        calibration_method: ``minmax`` | ``entropy`` | ``percentile``.
        device: device profile to check against, or None.
        source_info: the manifest ``source`` mapping.
        converter_version: edgeserve version.
        exclusions: nodes and op types kept in float by the quantizers.
    """

    name: str
    version: int
    shapes: dict[str, tuple[int, ...]]
    io_type: str
    calibration_method: str
    device: DeviceProfile | None
    source_info: dict[str, Any]
    converter_version: str
    exclusions: Exclusions = field(default_factory=Exclusions)


@dataclass
class Built:
    """A candidate built into a scratch bundle.

    Attributes:
        target: the target it was built for.
        bundle: the scratch bundle (model file and sample.npz).
        quant: int8 I/O quantization parameters by bundle tensor name.
        name_map: source input name -> bundle input name.
        options: recorded in the manifest's ``converter.options``.
        float_model: the float model an int8 candidate was quantized from (sensitivity).
        qdq_model: that candidate's QDQ model with the quantizer's tensor names (sensitivity;
            the bundle holds its compacted form).
    """

    target: Target
    bundle: Bundle
    quant: dict[str, dict[str, float]]
    name_map: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    float_model: Path | None = None
    qdq_model: Path | None = None


def _static_shapes(
    source: SourceModel, target: Target, settings: BuildSettings, data: Dataset | None
) -> dict[str, tuple[int, ...]]:
    """Shapes an NPU target pins: ``--input-shape`` first, else the data's per-row shape, and
    the batch to 1 unless ``--input-shape`` says otherwise (QNN compiles static graphs)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in source.inputs:
        dims = list(spec.shape)
        if data is not None and spec.name in data:
            dims[1:] = data[spec.name].shape[1:]
        for axis, size in enumerate(settings.shapes.get(spec.name, ())):
            if size != -1:
                dims[axis] = size
        if target.static_shapes and dims and dims[0] == -1:
            dims[0] = 1
        if target.static_shapes and any(d == -1 for d in dims):
            raise ConfigError(
                f"{target.name} needs static shapes: pass --input-shape {spec.name}=..."
            )
        shapes[spec.name] = tuple(dims)
    return shapes


def build_candidate(
    source: SourceModel,
    target: Target,
    settings: BuildSettings,
    calibration: Dataset | None,
    work: Path,
    sample: Dataset,
) -> Built:
    """Convert ``source`` for ``target`` into ``work`` and wrap it as a scratch bundle.

    Raises:
        ConfigError: missing calibration, unreachable format.
        UnsupportedOpError: an op the target cannot take.
        ConversionError: a pass failed.
    """
    work.mkdir(parents=True, exist_ok=True)
    if target.needs_calibration and calibration is None:
        raise ConfigError(f"{target.name} needs --calibration data (.npy or .npz)")
    options: dict[str, Any] = {"target": target.name}
    quant: dict[str, dict[str, float]] = {}
    float_model: Path | None = None
    qdq_model: Path | None = None
    if target.precision == "as-is":
        model_file, inputs, outputs = _as_is(source, work)
        if settings.device is not None and target.is_tflite:
            _tflite_specs(model_file.read_bytes(), settings.device, options)
        elif settings.device is not None:
            options["device_check"] = device_check.check_device_limits(model_file, settings.device)
    elif target.is_tflite:
        data = tflite_passes.convert_tflite(source, target, calibration, settings.io_type)
        model_file = work / "model.tflite"
        model_file.write_bytes(data)
        inputs, outputs, quant = _tflite_specs(data, settings.device, options)
        if target.precision == "int8":
            # what the model takes, not what was asked: ai-edge-quantizer's static int8
            # (PyTorch sources) always quantizes the inputs and outputs
            int8_io = any(s.name in quant for s in inputs)
            options["io_type"] = "int8" if int8_io else "float"
            options["calibration_method"] = (
                "minmax (ai-edge-quantizer)"
                if source.kind == "torch"
                else "minmax (TFLite converter)"
            )
    else:
        model_file, inputs, outputs, extra = _build_onnx(
            source, target, settings, calibration, work
        )
        float_model = extra.pop("float_model", None)
        qdq_model = extra.pop("qdq_model", None)
        options.update(extra)
    passes = options.pop("passes", [])
    if quant:
        options["io_quantization"] = quant
    name_map = _match_names(source.inputs, inputs)
    rows = {name_map[k]: v[:SAMPLE_ROWS] for k, v in sample.items()}
    manifest = Manifest(
        name=settings.name,
        version=settings.version,
        format="tflite" if model_file.suffix == ".tflite" else target.format,
        precision=_precision(source, target, model_file),
        target=target.name,
        providers=target.providers if target.format != "tflite" else ("tflite",),
        inputs=inputs,
        outputs=outputs,
        source=settings.source_info,
        converter={"version": settings.converter_version, "options": options, "passes": passes},
    )
    files: dict[str, tuple[Path | bytes, str]] = {
        f"model{model_file.suffix}": (model_file, "model"),
        SAMPLE_FILE: (sample_npz(rows, inputs, quant), SAMPLE_ROLE),
    }
    if model_file.suffix == ".onnx":
        # external data keeps the name the .onnx references, beside it in the bundle
        for data in external_files(model_file):
            files[data.name] = (data, "other")
    bundle = write_bundle(work / "bundle", manifest, files)
    return Built(target, bundle, quant, name_map, options, float_model, qdq_model)


def _build_onnx(
    source: SourceModel,
    target: Target,
    settings: BuildSettings,
    calibration: Dataset | None,
    work: Path,
) -> tuple[Path, tuple[TensorSpec, ...], tuple[TensorSpec, ...], dict[str, Any]]:
    import onnx

    onnx_source = source if source.kind == "onnx" else source.onnx
    if onnx_source is None:  # the pipeline exports a non-ONNX source before building
        raise ConfigError(f"{source.kind} -> ONNX: the model was not exported to ONNX")
    extra: dict[str, Any] = {}
    if onnx_source.export_info:
        extra["onnx_export"] = dict(onnx_source.export_info)
    source = onnx_source
    model = onnx.ModelProto()
    model.CopyFrom(source.handle)
    if target.static_shapes:
        # NPU compilers (QNN) need every dimension fixed; the other targets keep the graph's
        # dynamic dimensions and calibrate at the data's size
        shapes = _static_shapes(source, target, settings, calibration)
        model = onnx_passes.fix_input_shapes(model, shapes)
        extra["input_shapes"] = {k: list(v) for k, v in shapes.items()}
    elif settings.shapes:
        model = onnx_passes.fix_input_shapes(model, settings.shapes)
        extra["input_shapes"] = {k: list(v) for k, v in settings.shapes.items()}
    src = work / "source.onnx"
    save_model(model, src, external=source.external_data or None)
    out = work / "model.onnx"
    passes: list[dict[str, str]] = []
    if target.precision == "fp32":
        onnx_passes.optimize_fp32(src, out)
        extra["graph_optimization"] = "basic"
        passes.append({"pass": "ort-basic-optimization", "status": "ran", "detail": ""})
    elif target.precision == "int8":
        fixed = source.inputs[0].shape[0] if source.inputs and source.inputs[0].shape else -1
        batch = 1 if target.static_shapes else (fixed if fixed > 0 else 16)
        result = quantize.quantize_static_int8(
            src, out, work, target, calibration or {}, settings.calibration_method, batch,
            settings.exclusions,
        )  # fmt: skip
        passes += [p.to_dict() for p in result.passes]
        extra.update(
            quant_format="QDQ",
            calibration_method=settings.calibration_method,
            activation_type=target.activation_type,
            weight_type=target.weight_type,
            per_channel=target.per_channel,
            quantized_nodes=result.quantized,
            excluded_nodes=list(result.excluded),
            excluded_op_types=list(settings.exclusions.op_types),
            float_model=result.float_model,
            qdq_model=result.qdq_model,
        )
    elif target.precision == "dynamic":
        result = quantize.quantize_dynamic_int8(src, out, work, settings.exclusions)
        passes += [p.to_dict() for p in result.passes]
        extra.update(
            weight_type="QInt8",
            quantized_nodes=result.quantized,
            excluded_nodes=list(result.excluded),
            excluded_op_types=list(settings.exclusions.op_types),
        )
    elif target.precision == "fp16":
        extra["fp16_converter"] = onnx_passes.to_fp16(src, out)
        extra["keep_io_types"] = True
    else:  # pragma: no cover - the table has no other precision
        raise ConfigError(f"no ONNX pass for precision {target.precision!r}")
    extra["passes"] = passes
    if settings.device is not None:
        extra["device_check"] = device_check.check_device_limits(out, settings.device)
    onnx_passes.check_loads(out)
    inputs, outputs = _read_onnx_io(out)
    if target.format == "ort":
        ort_file = work / "model.ort"
        onnx_passes.to_ort_format(out, ort_file)
        return ort_file, inputs, outputs, extra
    return out, inputs, outputs, extra


def _read_onnx_io(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    import onnx

    return onnx_io(onnx.load(str(path)))


def _tflite_specs(
    data: bytes, device: DeviceProfile | None, options: dict[str, Any]
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], dict[str, dict[str, float]]]:
    from edgeserve.runtimes.tflite import interpreter_class

    with quiet_native_stderr():  # the interpreter announces its XNNPACK delegate on stderr
        interp = interpreter_class()(model_content=data)
    if device is not None:
        options["device_check"] = device_check.check_tflite_for_device(interp, device)
    inputs, outputs = tflite_io(interp)
    return inputs, outputs, tflite_passes.io_quantization(interp)


def _as_is(
    source: SourceModel, work: Path
) -> tuple[Path, tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    suffix = ".tflite" if source.kind == "tflite" else ".onnx"
    if source.kind not in ("onnx", "tflite"):
        raise ConfigError(
            f"only .onnx and .tflite files can be bundled as they are, not {source.kind}"
        )
    out = work / f"model{suffix}"
    out.write_bytes(source.path.read_bytes())
    if source.kind == "onnx":
        for data in external_files(source.path):
            (work / data.name).write_bytes(data.read_bytes())
    return out, source.inputs, source.outputs


def _precision(source: SourceModel, target: Target, model_file: Path) -> str:
    if target.precision != "as-is":
        return target.precision
    if source.kind == "tflite":
        return "int8" if any(i.datatype in ("INT8", "UINT8") for i in source.inputs) else "fp32"
    ops = {n.op_type for n in source.handle.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"}:
        return "int8"
    if ops & {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}:
        return "dynamic"
    return "fp16" if any(t.data_type == 10 for t in source.handle.graph.initializer) else "fp32"


def _match_names(source: tuple[TensorSpec, ...], bundle: tuple[TensorSpec, ...]) -> dict[str, str]:
    """Source input name -> bundle input name (TFLite adds ``serving_default_`` and ``:0``)."""
    if len(source) != len(bundle):
        raise ConfigError(f"converted model has {len(bundle)} inputs, source has {len(source)}")
    mapping: dict[str, str] = {}
    remaining = [b.name for b in bundle]
    for spec in source:
        exact = [b for b in remaining if b == spec.name]
        fuzzy = [b for b in remaining if b.startswith(f"serving_default_{spec.name}:")]
        pick = (exact or fuzzy or remaining)[0]
        mapping[spec.name] = pick
        remaining.remove(pick)
    return mapping


def sample_npz(
    rows: Dataset, inputs: tuple[TensorSpec, ...], quant: dict[str, dict[str, float]]
) -> bytes:
    """``sample.npz`` bytes: a few input rows keyed by bundle input name, in the bundle's dtype.

    A model with a fixed batch dimension gets exactly that many rows; int8 inputs are quantized
    with the model's own scale and zero point.
    """
    out: dict[str, np.ndarray] = {}
    for spec in inputs:
        array = rows[spec.name]
        fixed = spec.shape[0] if spec.shape else -1
        if fixed > 0:
            array = (
                np.concatenate([array] * fixed)[:fixed] if array.shape[0] < fixed else array[:fixed]
            )
        q = quant.get(spec.name)
        if q is not None:
            info = np.iinfo(np.int8 if spec.datatype == "INT8" else np.uint8)
            array = np.clip(np.round(array / q["scale"] + q["zero_point"]), info.min, info.max)
            array = array.astype(info.dtype)
        out[spec.name] = array
    return encode_sample(out)


def sample_with_references(bundle: Bundle) -> tuple[bytes, float] | None:
    """``sample.npz`` bytes with the bundle's own outputs on its sample inputs added under
    ``expected:<output name>``, and the tolerance to record; None when the bundle has no
    sample file or an input name already starts with the prefix.

    The outputs come from :func:`edgeserve.runtimes.load_runtime` with default options, the
    runtime the agent serves with, so the device's post-activation health check compares like
    with like. Outputs the agent would not compare by value (strings) are left out.

    Raises:
        ModelError: the converted model fails on its sample inputs.
    """
    from edgeserve.runtimes import RuntimeOptions, load_runtime

    path = bundle.file_path(SAMPLE_ROLE)
    if path is None:
        return None
    try:
        sample = read_sample(path)
    except ModelError:  # string (object) inputs: the agent cannot load them either
        return None
    if sample.references:
        return None
    runtime = load_runtime(bundle, RuntimeOptions())
    try:
        outputs = runtime.run({spec.name: sample.inputs[spec.name] for spec in runtime.inputs})
    finally:
        runtime.close()
    references = {name: a for name, a in outputs.items() if a.dtype.kind in "fiub"}
    return encode_sample(sample.inputs, references), tolerance_for(bundle.manifest.precision)
