"""Source models: recognise the input, read its tensors from the model, and run it.

Supported sources: ONNX (``.onnx``), Keras (``.keras``, ``.h5``), TensorFlow SavedModel
directories, PyTorch (a ``torch.export`` ``.pt2``, or a module from a factory:
:func:`load_torch`), and ready-made ``.tflite`` files. Input and output names, datatypes and shapes
are always read from the model itself.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from edgeserve.bundle import file_sha256
from edgeserve.bundle.manifest import TensorSpec
from edgeserve.datatypes import datatype_of, from_onnx_elem_type
from edgeserve.errors import ConfigError, ModelError, UnsupportedOpError

__all__ = [
    "SourceModel",
    "check_known_ops",
    "load_source",
    "load_torch",
    "onnx_io",
    "quiet_native_stderr",
    "tflite_io",
]

KINDS: Final = ("onnx", "keras", "savedmodel", "torch", "tflite")
# ONNX Runtime's own operator domains (contrib and NCHWc ops a pre-optimized model may carry)
_ORT_DOMAINS: Final = ("com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc")
_TFLITE_MAGIC: Final = b"TFL3"  # flatbuffer file identifier at bytes 4..8 (schema.fbs)


@dataclass
class SourceModel:
    """A model to convert.

    Attributes:
        path: the file or SavedModel directory.
        kind: ``onnx`` | ``keras`` | ``savedmodel`` | ``torch`` | ``tflite``.
        inputs: input tensors as read from the model.
        outputs: output tensors as read from the model.
        sha256: hash of the file (for a directory: of its sorted relative paths and hashes).
        size_bytes: file size (directory: total; ONNX: with its external data files).
        handle: the loaded model (``onnx.ModelProto``, a Keras model, a SavedModel signature
            function, a torch ``ExportedProgram`` or the ``.tflite`` bytes).
        external_data: an ONNX model whose tensors live in files beside it.
        onnx: the ONNX form of a Keras, SavedModel or PyTorch source, once exported for an
            ONNX target (:mod:`edgeserve.converter.to_onnx`).
        export_info: for such an ONNX form, which exporter made it (``converter.options``).
    """

    path: Path
    kind: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sha256: str
    size_bytes: int
    handle: Any = field(repr=False, default=None)
    external_data: bool = False
    onnx: SourceModel | None = field(repr=False, default=None)
    export_info: dict[str, Any] = field(default_factory=dict)

    def runner(self, threads: int = 0) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
        """A function running the original model: named inputs -> outputs in ``outputs`` order.

        ONNX runs in ONNX Runtime (CPU), Keras and SavedModel in TensorFlow, PyTorch in torch
        (eager, the ExportedProgram's module), TFLite in the TFLite interpreter.

        Args:
            threads: intra-op threads for ONNX Runtime and TFLite (0 = the runtime's default).

        Raises:
            UnsupportedOpError: ONNX Runtime has no kernel for an op (named).
            ModelError: ONNX Runtime refuses the model otherwise.
        """
        if self.kind == "onnx":
            from edgeserve.converter.onnx_passes import open_session

            session = open_session(self.path, threads)
            names = [o.name for o in self.outputs]
            return lambda feeds: session.run(names, dict(feeds))
        if self.kind == "keras":
            return _keras_runner(self.handle, self.inputs)
        if self.kind == "savedmodel":
            return _saved_model_runner(self.handle, self.outputs)
        if self.kind == "torch":
            from edgeserve.converter.torch_source import torch_runner

            return torch_runner(self.handle, self.inputs, threads)
        return _tflite_runner(self.handle, self.inputs, self.outputs, threads)


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence native (C++) writes to stderr: TensorFlow/absl log lines at import and convert.

    The CLI's stderr carries one-line errors only; TF's own logs ignore TF_CPP_MIN_LOG_LEVEL
    before absl is initialised. Python exceptions are unaffected (they propagate as objects).
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest capture or no real stderr
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _hash_dir(directory: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    total = 0
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        sha, size = file_sha256(file)
        digest.update(f"{file.relative_to(directory).as_posix()}\0{sha}\n".encode())
        total += size
    return digest.hexdigest(), total


def load_source(path: Path) -> SourceModel:
    """Recognise and load a source model.

    Raises:
        ConfigError: not a model, or not a format the converter reads (exit 2).
        ModelError: a model that its own framework refuses.
    """
    if not path.exists():
        raise ConfigError(f"{path}: no such file or directory")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ConfigError(f"{path}: a directory but not a SavedModel (no saved_model.pb)")
        sha, size = _hash_dir(path)
        return _load_saved_model(path, sha, size)
    sha, size = file_sha256(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _load_onnx(path, sha, size)
    if suffix in (".keras", ".h5", ".hdf5"):
        return _load_keras(path, sha, size)
    if suffix == ".tflite":
        return _load_tflite(path, sha, size)
    if suffix == ".pt2":
        from edgeserve.converter.torch_source import exported_io, load_pt2

        program, _ = load_pt2(path)
        inputs, outputs = exported_io(program)
        return SourceModel(path, "torch", inputs, outputs, sha, size, program)
    raise ConfigError(
        f"{path}: not a model the converter reads (expected .onnx, .keras, .h5, .hdf5, .pt2, "
        ".tflite or a SavedModel directory)"
    )


def load_torch(spec: str, example: Path | None) -> SourceModel:
    """A PyTorch module from ``module:factory``, exported with ``example`` as its input.

    Raises:
        ConfigError: see :func:`edgeserve.converter.torch_source.load_torch_module`.
        ModelError: ``torch.export`` cannot trace the module.
    """
    from edgeserve.converter.torch_source import exported_io, load_torch_module

    program, data = load_torch_module(spec, example)
    inputs, outputs = exported_io(program)
    sha = hashlib.sha256(data).hexdigest()
    return SourceModel(Path(spec), "torch", inputs, outputs, sha, len(data), program)


def _dim(d: Any) -> int:
    return int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else -1


def onnx_io(model: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs (initializers excluded) and outputs of an ``onnx.ModelProto``."""
    initializers = {i.name for i in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor = value.type.tensor_type
        shape = tuple(_dim(d) for d in tensor.shape.dim)
        return TensorSpec(value.name, from_onnx_elem_type(tensor.elem_type), shape)

    inputs = tuple(spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(spec(v) for v in model.graph.output)
    return inputs, outputs


def _load_onnx(path: Path, sha: str, size: int) -> SourceModel:
    import onnx
    from edgeserve.converter.onnx_files import external_files

    try:
        model = onnx.load(str(path), load_external_data=False)
        data_files = external_files(path)
        onnx.checker.check_model(str(path) if data_files else model)
        if data_files:
            onnx.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # DecodeError, ValidationError, ... - all "not a valid ONNX model"
        raise ConfigError(f"{path}: not a valid ONNX model ({_first(exc)})") from exc
    if not model.graph.node:
        raise ConfigError(f"{path}: not a valid ONNX model (empty graph)")
    check_known_ops(model)
    inputs, outputs = onnx_io(model)
    size += sum(f.stat().st_size for f in data_files)
    return SourceModel(path, "onnx", inputs, outputs, sha, size, model, bool(data_files))


def check_known_ops(model: Any) -> None:
    """Refuse an op that neither ONNX nor ONNX Runtime's contrib domain defines.

    Raises:
        UnsupportedOpError: names the first such op, its domain and node.
    """
    from onnx import defs

    local = {f.domain for f in getattr(model, "functions", [])}
    for node in model.graph.node:
        domain = node.domain or ""
        if domain in _ORT_DOMAINS or domain in local:
            continue
        if domain in ("", "ai.onnx", "ai.onnx.ml") and defs.has(node.op_type, domain):
            continue
        where = f"domain {domain!r}" if domain else "the default domain"
        raise UnsupportedOpError(
            f"op {node.op_type} ({where}, node {node.name!r}) is a custom or unknown op: "
            "no runtime the converter targets implements it"
        )


def _spec_from_tf(name: str, shape: Any, dtype: Any) -> TensorSpec:
    dims = tuple(-1 if d is None else int(d) for d in shape)
    return TensorSpec(name, datatype_of(np.dtype(getattr(dtype, "as_numpy_dtype", dtype))), dims)


def _load_keras(path: Path, sha: str, size: int) -> SourceModel:
    with quiet_native_stderr():
        import keras

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise ConfigError(f"{path}: not a loadable Keras model ({_first(exc)})") from exc
    inputs = tuple(_spec_from_tf(t.name, t.shape, t.dtype) for t in model.inputs)
    outputs = tuple(
        _spec_from_tf(f"output_{i}", t.shape, t.dtype) for i, t in enumerate(model.outputs)
    )
    return SourceModel(path, "keras", inputs, outputs, sha, size, model)


def _load_saved_model(path: Path, sha: str, size: int) -> SourceModel:
    with quiet_native_stderr():
        import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
        fn = loaded.signatures["serving_default"]
    except KeyError:
        raise ConfigError(f"{path}: SavedModel has no 'serving_default' signature") from None
    except Exception as exc:
        raise ConfigError(f"{path}: not a loadable SavedModel ({_first(exc)})") from exc
    _, kwargs = fn.structured_input_signature
    inputs = tuple(_spec_from_tf(n, s.shape, s.dtype) for n, s in sorted(kwargs.items()))
    outputs = tuple(
        _spec_from_tf(n, s.shape, s.dtype) for n, s in sorted(fn.structured_outputs.items())
    )
    # keep the loaded object alive: the signature function references its variables
    return SourceModel(path, "savedmodel", inputs, outputs, sha, size, (loaded, fn))


def _load_tflite(path: Path, sha: str, size: int) -> SourceModel:
    from edgeserve.runtimes.tflite import interpreter_class

    data = path.read_bytes()
    if data[4:8] != _TFLITE_MAGIC:
        raise ConfigError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        with quiet_native_stderr():
            interp = interpreter_class()(model_content=data)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: TFLite cannot load it ({_first(exc)})") from exc
    inputs, outputs = tflite_io(interp)
    return SourceModel(path, "tflite", inputs, outputs, sha, size, data)


def tflite_io(interp: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs of a TFLite interpreter, named by its signature when it has one
    (``pixels``, not ``serving_default_pixels:0``; :func:`edgeserve.runtimes.tflite.io_names`)."""
    from edgeserve.runtimes.tflite import io_names

    in_names, out_names = io_names(interp)

    def spec(d: dict[str, Any], names: dict[int, str]) -> TensorSpec:
        shape = d.get("shape_signature", d["shape"])
        return TensorSpec(names[d["index"]], datatype_of(d["dtype"]), tuple(int(x) for x in shape))

    return (
        tuple(spec(d, in_names) for d in interp.get_input_details()),
        tuple(spec(d, out_names) for d in interp.get_output_details()),
    )


def _keras_runner(
    model: Any, inputs: tuple[TensorSpec, ...]
) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        arg = feeds[inputs[0].name] if len(inputs) == 1 else [feeds[i.name] for i in inputs]
        out = fn(arg)
        outs = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o) for o in outs]

    return run


def _saved_model_runner(
    handle: Any, outputs: tuple[TensorSpec, ...]
) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
    import tensorflow as tf

    _, fn = handle

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        result = fn(**{k: tf.constant(v) for k, v in feeds.items()})
        return [np.asarray(result[o.name]) for o in outputs]

    return run


def _tflite_runner(
    data: bytes, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], threads: int
) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
    from edgeserve.runtimes.tflite import interpreter_class, io_names

    with quiet_native_stderr():
        interp = interpreter_class()(model_content=data, num_threads=threads or None)
    interp.allocate_tensors()
    in_names, out_names = io_names(interp)
    index = {name: i for i, name in in_names.items()}
    out_index = {name: i for i, name in out_names.items()}
    shapes: dict[str, tuple[int, ...]] = {}

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if any(shapes.get(n) != a.shape for n, a in feeds.items()):
            for name, array in feeds.items():
                interp.resize_tensor_input(index[name], list(array.shape))
                shapes[name] = array.shape
            interp.allocate_tensors()
        for name, array in feeds.items():
            interp.set_tensor(index[name], np.ascontiguousarray(array))
        interp.invoke()
        return [interp.get_tensor(out_index[o.name]).copy() for o in outputs]

    return run


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
