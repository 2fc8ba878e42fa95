"""Runtime backends behind one small interface: ONNX Runtime and TFLite.

Use :func:`load_runtime` to open a bundle's model; every backend implements :class:`Runtime`.
"""

from __future__ import annotations

from edgeserve.runtimes.base import Runtime, RuntimeOptions, load_runtime

__all__ = ["Runtime", "RuntimeOptions", "load_runtime"]
