"""TFLite backend: ``tflite_runtime``, else ``ai_edge_litert``, else ``tensorflow.lite``.

tflite-runtime has no wheels past Python 3.11 and needs numpy<2 (and glibc 2.34 on arm64);
LiteRT (``ai-edge-litert``) is its successor. TensorFlow itself is the last resort, for a
laptop that has it anyway.

Tensor names: a model converted from a SavedModel or Keras keeps its signature
(``serving_default``), whose input and output names are the ones its users know (``pixels``),
while the converted graph's tensors are named ``serving_default_pixels:0`` or
``StatefulPartitionedCall:0``. :func:`io_names` gives the signature's names when the model has
exactly one signature and the tensor names otherwise; the converter writes those into the
manifest, and :class:`TfliteRuntime` finds a manifest name among both (bundles written before
keep their tensor names).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeserve.bundle.manifest import Manifest, TensorSpec
from edgeserve.errors import ConfigError, ModelError
from edgeserve.runtimes.base import RuntimeOptions

__all__ = ["TfliteRuntime", "interpreter_class", "io_names"]


def interpreter_class() -> Any:
    """Return the first available TFLite ``Interpreter`` class.

    Raises:
        ConfigError: no TFLite runtime is installed.
    """
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter
    except ImportError:
        pass
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter
    except ImportError:
        pass
    try:
        import tensorflow as tf  # type: ignore[import-not-found]

        return tf.lite.Interpreter
    except ImportError:
        pass
    raise ConfigError(
        "no TFLite runtime installed: pip install 'edgeserve-toolkit[tflite]' (ai-edge-litert) "
        "or tflite-runtime"
    )


def io_names(interp: Any) -> tuple[dict[int, str], dict[int, str]]:
    """(input, output) tensor index -> the name clients use, in the interpreter's order: the
    signature's names when the model has exactly one signature, else the tensor names."""
    inputs = {d["index"]: d["name"] for d in interp.get_input_details()}
    outputs = {d["index"]: d["name"] for d in interp.get_output_details()}
    try:
        signatures = interp.get_signature_list()
    except (AttributeError, ValueError, RuntimeError):  # a runtime without signature support
        return inputs, outputs
    if len(signatures) != 1:
        return inputs, outputs
    runner = interp.get_signature_runner(next(iter(signatures)))
    sig_in = {d["index"]: n for n, d in runner.get_input_details().items()}
    sig_out = {d["index"]: n for n, d in runner.get_output_details().items()}
    if set(sig_in) != set(inputs) or set(sig_out) != set(outputs):
        return inputs, outputs
    return {i: sig_in[i] for i in inputs}, {i: sig_out[i] for i in outputs}


class TfliteRuntime:
    """A ``.tflite`` model in a TFLite interpreter; resizes the batch dimension on demand."""

    def __init__(self, model_path: Path, manifest: Manifest, options: RuntimeOptions) -> None:
        interpreter = interpreter_class()
        try:
            self._interp = interpreter(
                model_path=str(model_path), num_threads=options.threads or None
            )
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"TFLite cannot load {model_path.name}: {exc}") from exc
        self.inputs: tuple[TensorSpec, ...] = manifest.inputs
        self.outputs: tuple[TensorSpec, ...] = manifest.outputs
        self.providers: tuple[str, ...] = ("tflite",)
        in_names, out_names = io_names(self._interp)
        details = _by_name(self._interp.get_input_details(), in_names)
        self._in_index = {spec.name: _find(details, spec.name)["index"] for spec in self.inputs}
        out_details = _by_name(self._interp.get_output_details(), out_names)
        self._out_index = {
            spec.name: _find(out_details, spec.name)["index"] for spec in self.outputs
        }
        self._shapes = {
            name: tuple(details_shape)
            for name, details_shape in ((n, _find(details, n)["shape"]) for n in self._in_index)
        }
        self._lock = threading.Lock()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Resize inputs whose shape changed, invoke, and copy the outputs out.

        Raises:
            ModelError: the interpreter failed.
        """
        with self._lock:
            try:
                resized = False
                for name, array in feeds.items():
                    if tuple(array.shape) != self._shapes[name]:
                        self._interp.resize_tensor_input(self._in_index[name], list(array.shape))
                        self._shapes[name] = tuple(array.shape)
                        resized = True
                if resized:
                    self._interp.allocate_tensors()
                for name, array in feeds.items():
                    self._interp.set_tensor(self._in_index[name], np.ascontiguousarray(array))
                self._interp.invoke()
                return {n: self._interp.get_tensor(i).copy() for n, i in self._out_index.items()}
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"TFLite failed: {exc}") from exc

    def close(self) -> None:
        """Drop the interpreter."""
        self._interp = None


def _by_name(details: list[dict[str, Any]], names: dict[int, str]) -> dict[str, dict[str, Any]]:
    """Details by signature name and by tensor name (a manifest may use either)."""
    found = {names[d["index"]]: d for d in details}
    for d in details:
        found.setdefault(d["name"], d)
    return found


def _find(details: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """Find a tensor's details by manifest name: a signature or tensor name, else one that
    only differs by TFLite's ``serving_default_`` prefix or ``:0`` suffix."""
    if name in details:
        return details[name]
    for key, value in details.items():
        if key.endswith(name) or name.endswith(key):
            return value
    if len(details) == 1:
        return next(iter(details.values()))
    raise ModelError(f"TFLite model has no tensor named {name!r} (has {sorted(details)})")
