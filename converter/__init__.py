"""The converter: quantize and compile a model into an edge bundle, validate and report.

Library use::

    from pathlib import Path
    from edgeserve.converter import ConvertOptions, convert_model

    result = convert_model(ConvertOptions(model=Path("model.onnx"), target="onnx-cpu-int8",
                                          calibration=Path("calib.npy"), output=Path("out")))
    print(result.validation["converted"]["latency_ms"])
"""

from __future__ import annotations

from edgeserve.converter.options import ConvertOptions, ConvertResult
from edgeserve.converter.pipeline import convert_model
from edgeserve.converter.targets import TARGETS, Target, get_target

__all__ = ["TARGETS", "ConvertOptions", "ConvertResult", "Target", "convert_model", "get_target"]
