"""Device checks: will the bundle load on the device's runtime?

ONNX: a runtime refuses a model whose IR version or default-domain opset is newer than it
implements (onnxruntime.ai/docs/reference/compatibility.html); an op must exist at the device's
opset. TFLite: device runtimes (tflite-runtime, LiteRT) carry builtin ops only, without the
Flex (TensorFlow) delegate or custom kernels.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from edgeserve.devices import DeviceProfile
from edgeserve.errors import ConfigError, ConversionError, UnsupportedOpError

__all__ = ["check_device_limits", "check_tflite_for_device"]


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def check_device_limits(path: Path, profile: DeviceProfile) -> dict[str, Any]:
    """Make an ONNX file loadable by the device's ONNX Runtime, or say why it cannot be.

    A runtime refuses a model whose IR version or default-domain opset is newer than it
    implements (onnxruntime.ai/docs/reference/compatibility.html). An opset that is too new is
    converted down with ``onnx.version_converter``; every op must exist at the device's opset.

    Returns:
        What was checked/changed, for the manifest.

    Raises:
        ConfigError: the device has no ONNX Runtime.
        UnsupportedOpError: an op newer than the device's opset (named).
        ConversionError: the model cannot be brought within the limits.
    """
    import onnx
    from onnx import defs, version_converter

    info = profile.onnxruntime
    if info is None:
        raise ConfigError(f"device {profile.name} has no ONNX Runtime; pick a tflite target")
    model = onnx.load(str(path))
    before = {"ir": int(model.ir_version), "opset": _opset(model)}
    changed = False
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            defs.get_schema(node.op_type, info.max_opset, "")
        except defs.SchemaError:
            raise UnsupportedOpError(
                f"op {node.op_type} (node {node.name!r}) does not exist at opset "
                f"{info.max_opset}, the newest {profile.name}'s onnxruntime {info.version} loads"
            ) from None
    if before["opset"] > info.max_opset:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                model = version_converter.convert_version(model, info.max_opset)
            except Exception as exc:
                raise ConversionError(
                    f"model opset {before['opset']} is newer than {profile.name}'s onnxruntime "
                    f"{info.version} (max {info.max_opset}) and cannot be converted down: "
                    f"{_first(exc)}"
                ) from exc
        changed = True
    if model.ir_version > info.max_ir:
        model.ir_version = info.max_ir
        changed = True
    if changed:
        try:
            onnx.checker.check_model(model)
        except Exception as exc:
            raise ConversionError(
                f"model cannot be stamped IR {info.max_ir}/opset {info.max_opset} for "
                f"{profile.name}: {_first(exc)}"
            ) from exc
        onnx.save(model, str(path))
    return {
        "device": profile.name,
        "onnxruntime": info.version,
        "model_ir": before["ir"],
        "model_opset": before["opset"],
        "bundle_ir": int(model.ir_version),
        "bundle_opset": _opset(model),
    }


def check_tflite_for_device(interp: Any, profile: DeviceProfile) -> dict[str, Any]:
    """Check a TFLite model's op set against what a device's TFLite runtime can run.

    Device runtimes (tflite-runtime, LiteRT) have the builtin ops only: no Flex (TensorFlow)
    delegate and no custom ops (LiteRT docs, "Select TensorFlow operators" needs the Flex
    delegate linked in).

    Returns:
        What was checked, for the manifest.

    Raises:
        ConfigError: the device has no TFLite runtime.
        UnsupportedOpError: Flex or custom ops, named.
    """
    if profile.tflite is None:
        raise ConfigError(f"device {profile.name} has no TFLite runtime; pick an onnx target")
    try:
        ops = sorted({d["op_name"] for d in interp._get_ops_details()})
    except AttributeError:  # pragma: no cover - every interpreter we support has it
        ops = []
    refused = [op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")]
    if refused:
        raise UnsupportedOpError(
            f"op(s) {', '.join(refused)} need the Flex delegate or custom kernels, which "
            f"{profile.name}'s {profile.tflite.package} {profile.tflite.version} does not have"
        )
    return {
        "device": profile.name,
        "tflite": f"{profile.tflite.package} {profile.tflite.version}",
        "ops": ops,
    }
