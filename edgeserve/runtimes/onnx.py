"""ONNX Runtime backend, honouring the bundle's provider order with a logged fallback.

Provider selection follows ONNX Runtime's documented behaviour: a session takes an ordered
list and assigns each node to the first provider that supports it. Providers that this build
does not have are dropped with a warning, and CPU is always last.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgeserve.bundle.manifest import Manifest, TensorSpec
from edgeserve.errors import ConfigError, InferenceInputError, ModelError
from edgeserve.runtimes.base import RuntimeOptions

log = logging.getLogger(__name__)

__all__ = ["OnnxRuntime", "choose_providers"]


def choose_providers(wanted: tuple[str, ...], available: list[str]) -> tuple[str, ...]:
    """Keep the wanted providers this build has, in order, and end with the CPU provider."""
    chosen = [p for p in wanted if p in available]
    dropped = [p for p in wanted if p not in available]
    if dropped:
        log.warning(
            "execution provider(s) %s not available in this onnxruntime build; using %s",
            ", ".join(dropped),
            ", ".join(
                [*chosen, "CPUExecutionProvider"]
                if "CPUExecutionProvider" not in chosen
                else chosen
            ),
        )
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return tuple(chosen)


class OnnxRuntime:
    """A model loaded in an ``onnxruntime.InferenceSession`` (ONNX or ORT format)."""

    def __init__(self, model_path: Path, manifest: Manifest, options: RuntimeOptions) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - agent extra always has it
            raise ConfigError(
                "onnxruntime is not installed (pip install 'edgeserve-toolkit[agent]')"
            ) from exc
        sess_options = ort.SessionOptions()
        if options.threads:
            sess_options.intra_op_num_threads = options.threads
        sess_options.inter_op_num_threads = 1
        if not options.spin:
            sess_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        wanted = options.providers if options.providers is not None else manifest.providers
        self.providers = choose_providers(tuple(wanted), ort.get_available_providers())
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options, providers=list(self.providers)
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/RuntimeException types
            raise ModelError(
                f"onnxruntime cannot load {model_path.name}: {_first_line(exc)}"
            ) from exc
        self.inputs: tuple[TensorSpec, ...] = manifest.inputs
        self.outputs: tuple[TensorSpec, ...] = manifest.outputs
        self._output_names = [o.name for o in manifest.outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the session; outputs come back in manifest order.

        Raises:
            InferenceInputError: a string (BYTES) input is not UTF-8.
            ModelError: ONNX Runtime failed on these inputs.
        """
        feeds = {n: _strings(n, a) if a.dtype == object else a for n, a in feeds.items()}
        try:
            results = self._session.run(self._output_names, feeds)
        except Exception as exc:
            raise ModelError(f"onnxruntime failed: {_first_line(exc)}") from exc
        return dict(zip(self._output_names, results, strict=False))

    def close(self) -> None:
        """Drop the session (ONNX Runtime frees it when unreferenced)."""
        self._session = None  # type: ignore[assignment]


def _strings(name: str, array: np.ndarray) -> np.ndarray:
    """BYTES elements as ``str``: ONNX Runtime takes UTF-8 strings and would turn a ``bytes``
    object into its repr (``"b'...'"``)."""
    if not any(isinstance(v, bytes) for v in array.flat):
        return array
    try:
        flat = [v.decode("utf-8") if isinstance(v, bytes) else v for v in array.flat]
    except UnicodeDecodeError:
        raise InferenceInputError(
            f"input {name}: BYTES elements must be UTF-8 for an ONNX string tensor"
        ) from None
    out = np.empty(array.shape, dtype=object)
    out.flat[:] = flat
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
