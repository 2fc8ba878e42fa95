"""The runtime interface and the loader that picks a backend by bundle format."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgeserve.bundle import Bundle
from edgeserve.bundle.manifest import TensorSpec
from edgeserve.errors import ConfigError, InferenceInputError

__all__ = ["Runtime", "RuntimeOptions", "check_feeds", "load_runtime"]


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run a model.

    Attributes:
        providers: ONNX Runtime execution providers to try in order; None = the bundle's order.
        threads: intra-op threads; 0 = the runtime's default.
        spin: let ONNX Runtime's intra-op threads busy-wait between runs (its default). A
            server turns it off so idle pool threads do not take CPU from the request loop
            (ORT docs, "Thread management": ``session.intra_op.allow_spinning``).
    """

    providers: tuple[str, ...] | None = None
    threads: int = 0
    spin: bool = True


class Runtime(Protocol):
    """A loaded model. ``run`` is blocking and thread-safe for one caller at a time."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    providers: tuple[str, ...]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on named input arrays and return named output arrays."""
        ...

    def close(self) -> None:
        """Release the model."""
        ...


def check_feeds(inputs: tuple[TensorSpec, ...], feeds: Mapping[str, np.ndarray]) -> None:
    """Check names, datatypes and shapes of ``feeds`` against the model's inputs.

    Raises:
        InferenceInputError: the message names the tensor and what does not fit.
    """
    from edgeserve.datatypes import datatype_of

    expected = {spec.name: spec for spec in inputs}
    missing = sorted(set(expected) - set(feeds))
    extra = sorted(set(feeds) - set(expected))
    if missing:
        raise InferenceInputError(f"missing input(s) {', '.join(missing)}")
    if extra:
        raise InferenceInputError(f"unknown input(s) {', '.join(extra)}")
    for name, array in feeds.items():
        spec = expected[name]
        got = datatype_of(array.dtype)
        if got != spec.datatype:
            raise InferenceInputError(
                f"input {name}: datatype {got}, model expects {spec.datatype}"
            )
        if len(array.shape) != len(spec.shape) or any(
            want not in (-1, have) for want, have in zip(spec.shape, array.shape, strict=False)
        ):
            raise InferenceInputError(
                f"input {name}: shape {list(array.shape)}, model expects {list(spec.shape)}"
            )


def load_runtime(bundle: Bundle, options: RuntimeOptions = RuntimeOptions()) -> Runtime:
    """Open the bundle's model in the backend for its format.

    Raises:
        ModelError: the model cannot be loaded.
        ConfigError: no runtime for the format is installed.
    """
    fmt = bundle.manifest.format
    if fmt in ("onnx", "ort"):
        from edgeserve.runtimes.onnx import OnnxRuntime

        return OnnxRuntime(bundle.model_path, bundle.manifest, options)
    if fmt == "tflite":
        from edgeserve.runtimes.tflite import TfliteRuntime

        return TfliteRuntime(bundle.model_path, bundle.manifest, options)
    raise ConfigError(f"no runtime for format {fmt!r}")
