"""Keras, SavedModel and PyTorch sources into ONNX, once per conversion, for the ONNX targets.

- Keras / SavedModel: through tf2onnx's SavedModel path (``python -m tf2onnx.convert
  --saved-model``, the route tf2onnx documents; ``tf2onnx.convert.from_keras`` does not take
  Keras 3 models). A Keras model is first written as a SavedModel with ``model.export()``,
  whose ``serving_default`` signature carries the Keras input names and ``output_0``, ...
  tf2onnx keeps those names and an unknown batch dimension as a symbolic one. It runs in a
  child process so that its TensorFlow graph rewriting and logging stay out of ours.
- PyTorch (an ExportedProgram): ``torch.onnx.export(..., dynamo=True)`` (needs
  ``onnxscript``), else the TorchScript-based exporter (``dynamo=False``) with the batch axis
  declared dynamic. Weights are kept inside the ``.onnx`` (``external_data=False``) unless the
  model passes protobuf's 2 GB limit; then they go to ``model.onnx.data`` beside it, which the
  ONNX loader reads and counts.

The result is loaded as an ONNX :class:`~edgeserve.converter.loaders.SourceModel`; the passes
build every ONNX target from it, and the gate compares each against the original framework.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Final

from edgeserve.converter.loaders import SourceModel, load_source, quiet_native_stderr
from edgeserve.converter.torch_source import named_module

from edgeserve.errors import ConfigError, ConversionError

__all__ = ["TF2ONNX_OPSET", "TORCH_OPSET", "export_onnx"]

TF2ONNX_OPSET: Final = 17
TORCH_OPSET: Final = 18
_TF2ONNX_TIMEOUT_S: Final = 1800
_PROTOBUF_LIMIT_BYTES: Final = 2**31 - 1


def export_onnx(source: SourceModel, work: Path) -> SourceModel:
    """The ONNX form of a Keras, SavedModel or PyTorch source.

    Args:
        source: a ``keras``, ``savedmodel`` or ``torch`` source.
        work: a scratch directory (created).

    Returns:
        The exported model as an ONNX source, with what made it in ``export_info``.

    Raises:
        ConfigError: the exporter is not installed (says which extra to install).
        ConversionError: the exporter failed (its last message).
    """
    work.mkdir(parents=True, exist_ok=True)
    out = work / "exported.onnx"
    if source.kind in ("keras", "savedmodel"):
        info = _tf_to_onnx(source, work, out)
    elif source.kind == "torch":
        info = _torch_to_onnx(source, out)
    else:
        raise ConfigError(f"no ONNX exporter for a {source.kind} model")
    exported = load_source(out)
    exported.export_info = info
    if [i.name for i in exported.inputs] != [i.name for i in source.inputs]:
        raise ConversionError(
            f"{info['exporter']} renamed the inputs: {[i.name for i in source.inputs]} -> "
            f"{[i.name for i in exported.inputs]}"
        )
    return exported


def _tf_to_onnx(source: SourceModel, work: Path, out: Path) -> dict[str, Any]:
    try:
        import tf2onnx
    except ImportError:
        raise ConfigError(
            f"{source.kind} -> ONNX needs tf2onnx: pip install 'edgeserve-toolkit[convert-tf]'"
        ) from None
    saved = source.path
    if source.kind == "keras":
        saved = work / "saved_model"
        try:
            # Keras' export prints its endpoints on stdout, which carries only our report
            with quiet_native_stderr(), contextlib.redirect_stdout(io.StringIO()):
                source.handle.export(str(saved), format="tf_saved_model", verbose=False)
        except Exception as exc:
            raise ConversionError(f"Keras model.export() failed: {_first(exc)}") from exc
    cmd = [
        sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved),
        "--signature_def", "serving_default", "--opset", str(TF2ONNX_OPSET),
        "--output", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=_TF2ONNX_TIMEOUT_S, check=False
    )
    if done.returncode != 0 or not out.is_file():
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "Error" in ln or "error" in ln]
        raise ConversionError(
            f"tf2onnx failed: {(errors or lines or ['no output'])[-1].strip()[:300]}"
        )
    return {"exporter": "tf2onnx", "tf2onnx": tf2onnx.__version__, "opset": TF2ONNX_OPSET}


def _torch_to_onnx(source: SourceModel, out: Path) -> dict[str, Any]:
    import torch

    program = source.handle
    in_names = [i.name for i in source.inputs]
    out_names = [o.name for o in source.outputs]
    info: dict[str, Any] = {"torch": torch.__version__, "opset": TORCH_OPSET}
    large = sum(p.numel() * p.element_size() for p in program.state_dict.values()) > (
        _PROTOBUF_LIMIT_BYTES // 2
    )
    dynamo_error = ""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's dependency)

        with _quiet():
            torch.onnx.export(
                program, (), str(out), dynamo=True, opset_version=TORCH_OPSET,
                input_names=in_names, output_names=out_names, external_data=large,
                verbose=False,
            )  # fmt: skip
        info["exporter"] = "torch.onnx (dynamo)"
        return info
    except ImportError:
        dynamo_error = "onnxscript is not installed"
    except Exception as exc:
        dynamo_error = _first(exc)
    args = tuple(
        torch.zeros([2 if d == -1 else d for d in spec.shape], dtype=_torch_dtype(spec.datatype))
        for spec in source.inputs
    )
    dynamic = {s.name: {0: "batch"} for s in source.inputs if s.shape and s.shape[0] == -1}
    try:
        with _quiet():
            torch.onnx.export(
                named_module(program, in_names), args, str(out), dynamo=False,
                opset_version=TORCH_OPSET,
                input_names=in_names, output_names=out_names, dynamic_axes=dynamic,
            )  # fmt: skip
    except Exception as exc:
        raise ConversionError(
            f"torch.onnx.export failed: dynamo: {dynamo_error}; legacy: {_first(exc)}"
        ) from exc
    info.update(exporter="torch.onnx (legacy TorchScript)", dynamo_error=dynamo_error)
    return info


def _torch_dtype(datatype: str) -> Any:
    import numpy as np
    import torch

    from edgeserve.datatypes import to_numpy

    return torch.from_numpy(np.zeros(1, dtype=to_numpy(datatype))).dtype


@contextlib.contextmanager
def _quiet() -> Any:
    # the exporters print progress on stdout and warn about their own internals
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        quiet_native_stderr(),
    ):
        warnings.simplefilter("ignore")
        yield


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
