"""PyTorch -> TFLite through litert-torch (Google's PyTorch -> LiteRT converter), quantized
with ai-edge-quantizer (its own dependency, the quantizer LiteRT documents for such models).

- fp32: ``litert_torch.convert(module, sample_kwargs=...)``; the inputs are passed by name so
  the signature keeps ``forward``'s parameter names. The batch is fixed at 1: litert-torch
  0.10 cannot lower a symbolic batch (its JAX bridge asserts on the unknown dimension).
- fp16 / dynamic / int8: ai-edge-quantizer recipes on the fp32 flatbuffer: float casting of
  the weights to fp16 (weight-only), ``dynamic_wi8_afp32`` and ``static_wi8_ai8``, the last
  calibrated on ``--calibration`` rows; that recipe quantizes the inputs and outputs too
  (int8 I/O whatever ``--io-type`` says; scale and zero point are in the manifest).

litert-torch is an extra of its own (``convert-torch-tflite``), not part of ``all``: it pins
``litert-converter==0.5.*`` whose ``xdsl==0.28.0`` needs ``typing-extensions<4.13``, so pip
can only add it by downgrading typing-extensions, pydantic and anyio in an environment that
has the other extras, and it brings JAX and transformers with it.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any, Final

from edgeserve.converter.calibration import Dataset
from edgeserve.converter.loaders import SourceModel, quiet_native_stderr
from edgeserve.converter.targets import Target
from edgeserve.converter.torch_source import named_module

from edgeserve.errors import ConfigError, ConversionError

__all__ = ["LITERT_TORCH_HELP", "torch_to_tflite"]

LITERT_TORCH_HELP: Final = (
    "PyTorch -> TFLite needs litert-torch, kept out of the main extras (it needs "
    "typing-extensions<4.13): install it in its own venv with torch's CPU wheel: "
    "pip install torch 'edgeserve-toolkit[convert-torch-tflite]'"
)
CALIBRATION_MAX_ROWS: Final = 256  # rows ai-edge-quantizer runs to collect activation ranges
_SIGNATURE: Final = "serving_default"


def torch_to_tflite(source: SourceModel, target: Target, calibration: Dataset | None) -> bytes:
    """Convert a PyTorch source to a TFLite flatbuffer for ``target``.

    Raises:
        ConfigError: litert-torch is not installed, or int8 without calibration.
        ConversionError: litert-torch or ai-edge-quantizer failed (their message).
    """
    try:
        with _quiet():  # torchao and TensorFlow log at import
            import litert_torch
            import torch
    except ImportError:
        raise ConfigError(LITERT_TORCH_HELP) from None
    if target.precision == "int8" and calibration is None:
        raise ConfigError(f"{target.name} needs --calibration data")
    sample = {
        spec.name: torch.zeros([1 if d == -1 else d for d in spec.shape]) for spec in source.inputs
    }
    try:
        with _quiet():
            module = named_module(source.handle, [s.name for s in source.inputs])
            edge = litert_torch.convert(module, (), sample_kwargs=sample)
            data = bytes(edge.model_content())
    except Exception as exc:
        raise ConversionError(f"litert-torch failed: {_first(exc)}") from exc
    if target.precision == "fp32":
        return data
    try:
        with _quiet():
            return _quantize(data, target.precision, source, calibration)
    except Exception as exc:
        what = f"ai-edge-quantizer ({target.precision})"
        raise ConversionError(f"{what} failed: {_first(exc)}") from exc


def _quantize(
    data: bytes, precision: str, source: SourceModel, calibration: Dataset | None
) -> bytes:
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe, recipe_manager

    if precision == "fp16":
        manager = recipe_manager.RecipeManager()
        manager.add_weight_only_config(
            regex=".*",
            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            num_bits=16,
            algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING,
        )
        chosen: Any = manager.get_quantization_recipe()
    elif precision == "dynamic":
        chosen = recipe.dynamic_wi8_afp32()
    else:
        chosen = recipe.static_wi8_ai8()
    q = quantizer.Quantizer(data)
    q.load_quantization_recipe(chosen)
    result = None
    if precision == "int8" and calibration is not None:
        n = min(CALIBRATION_MAX_ROWS, next(iter(calibration.values())).shape[0])
        rows = [{s.name: calibration[s.name][i : i + 1] for s in source.inputs} for i in range(n)]
        result = q.calibrate({_SIGNATURE: rows})
    return bytes(q.quantize(result, enable_progress_report=False).quantized_model)


@contextlib.contextmanager
def _quiet() -> Any:
    # litert-torch prints its progress on stdout, which carries only our report
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        quiet_native_stderr(),
    ):
        warnings.simplefilter("ignore")
        yield


def _first(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:300]
