"""Quantization pre-processing that survives real exports, and the record of what ran.

ORT's ``quant_pre_process`` (symbolic shape inference, then a basic-level ORT optimization,
then ONNX shape inference) is what its quantization guide recommends
(onnxruntime.ai/docs/performance/model-optimizations/quantization.html, "Pre-processing").
Symbolic shape inference fails on many PaddlePaddle and dynamo exports ("Incomplete symbolic
shape inference", an ``AssertionError`` in ``_infer_Concat``); quantizing the raw graph then
leaves weights as ``Constant`` nodes the quantizer does not see and BatchNormalization unfused,
which makes an int8 model *larger* and slower than fp32. So on that failure the chain falls back
to what the quantizer needs most: ORT's basic graph optimization (constant folding turns
``Constant`` weights into initializers, Conv+BatchNormalization are fused), then ONNX shape
inference, i.e. ``quant_pre_process(skip_symbolic_shape=True)``.

Every step is recorded as a :class:`PassRecord`; the manifest keeps them in
``converter.passes`` and the report prints them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from edgeserve.converter.onnx_files import load_model, opset_of, save_model
from edgeserve.converter.quiet import quiet_third_party

from edgeserve.errors import ConfigError, ConversionError

__all__ = [
    "MIN_QDQ_OPSET",
    "PassRecord",
    "name_nodes",
    "prepare_for_quantization",
    "raise_opset",
    "scratch_cwd",
]

# QuantizeLinear/DequantizeLinear with an ``axis`` (per-channel) need opset 13; ORT's quantizer
# itself moves any model below 11 up, but per-channel QDQ at 11/12 is invalid.
MIN_QDQ_OPSET: Final = 13


@dataclass(frozen=True)
class PassRecord:
    """One pre-processing step.

    Attributes:
        name: the pass (``opset``, ``symbolic-shape-inference``, ``ort-basic-optimization``,
            ``onnx-shape-inference``, ``node-names``, ...).
        status: ``ran`` | ``failed`` | ``skipped``.
        detail: what it did or why it failed, one line.
    """

    name: str
    status: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        """The manifest form."""
        return {"pass": self.name, "status": self.status, "detail": self.detail}


@contextlib.contextmanager
def scratch_cwd(path: Path) -> Iterator[None]:
    """Run with ``path`` as the working directory: ORT's symbolic shape inference writes
    ``sym_shape_infer_temp.onnx`` into the CWD when it fails, which must not be the user's."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def raise_opset(model: Any, minimum: int) -> tuple[Any, PassRecord | None]:
    """Convert ``model`` up to ``minimum`` opset with ``onnx.version_converter`` if below it.

    Raises:
        ConversionError: the converter cannot move this model.
    """
    from onnx import version_converter

    before = opset_of(model)
    if before >= minimum:
        return model, None
    with quiet_third_party():
        try:
            model = version_converter.convert_version(model, minimum)
        except Exception as exc:
            raise ConversionError(
                f"cannot raise opset {before} to {minimum} for quantization: {_first(exc)}"
            ) from exc
    return model, PassRecord("opset", "ran", f"{before} -> {minimum}")


def name_nodes(model: Any) -> PassRecord | None:
    """Give every unnamed node a unique name (``<op>_<index>``) so that sensitivity can report
    it and ``--exclude-nodes`` can match it."""
    taken = {n.name for n in model.graph.node if n.name}
    count = 0
    for i, node in enumerate(model.graph.node):
        if node.name:
            continue
        name = f"{node.op_type}_{i}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)
        count += 1
    return PassRecord("node-names", "ran", f"named {count} unnamed nodes") if count else None


def prepare_for_quantization(
    src: Path, work: Path, min_opset: int
) -> tuple[Path, list[PassRecord]]:
    """Pre-process ``src`` for ORT's quantizer, falling back when symbolic inference fails.

    Args:
        src: the fp32 model.
        work: scratch directory (also the CWD while ORT runs, so nothing lands in the user's).
        min_opset: raise the opset to at least this (13 for per-channel QDQ).

    Returns:
        The pre-processed model file and the passes that ran, failed or were skipped.

    Raises:
        ConfigError: sympy is missing (symbolic shape inference imports it).
        ConversionError: every pre-processing route failed.
    """
    from onnxruntime.quantization import quant_pre_process

    _require_sympy()
    src, work = src.resolve(), work.resolve()  # the CWD changes while ORT runs
    passes: list[PassRecord] = []
    model = load_model(src)
    model, record = raise_opset(model, min_opset)
    if record is not None:
        passes.append(record)
    record = name_nodes(model)
    if record is not None:
        passes.append(record)
    raised = work / "pre-input.onnx"
    save_model(model, raised)
    pre = work / "pre.onnx"
    with quiet_third_party(), scratch_cwd(work):
        try:
            quant_pre_process(str(raised), str(pre), skip_symbolic_shape=False)
            passes += [
                PassRecord("symbolic-shape-inference", "ran"),
                PassRecord("ort-basic-optimization", "ran", "via quant_pre_process"),
                PassRecord("onnx-shape-inference", "ran"),
            ]
            return pre, passes
        except Exception as exc:  # ORT raises bare Exception/AssertionError here
            passes.append(PassRecord("symbolic-shape-inference", "failed", _first(exc)))
        finally:
            (work / "sym_shape_infer_temp.onnx").unlink(missing_ok=True)
            (work / "sym_shape_infer_temp.onnx.data").unlink(missing_ok=True)
        try:
            quant_pre_process(str(raised), str(pre), skip_symbolic_shape=True)
        except Exception as exc:
            raise ConversionError(
                f"quantization pre-processing failed even without symbolic shape inference: "
                f"{_first(exc)}"
            ) from exc
    passes += [
        PassRecord(
            "ort-basic-optimization",
            "ran",
            "fallback: Constant weights folded into initializers, BatchNormalization fused",
        ),
        PassRecord("onnx-shape-inference", "ran", "fallback (skip_symbolic_shape)"),
    ]
    return pre, passes


def _require_sympy() -> None:
    try:
        import sympy  # noqa: F401 - onnxruntime's symbolic shape inference imports it lazily
    except ImportError as exc:
        raise ConfigError(
            "quantization pre-processing needs sympy (onnxruntime >= 1.31 no longer pulls it): "
            "pip install 'edgeserve-toolkit[convert]'"
        ) from exc


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
