"""ONNX files on disk: load and save with external data, and count what a model occupies.

A protobuf cannot exceed 2 GiB, so large models keep their tensors in external data files
beside the ``.onnx`` (onnx.ai/onnx/repo-docs/ExternalData.html). Loading reads them from the
model's directory; saving writes them again (one ``<file>.data``) when the model is large or
the source had them; a model's size is the ``.onnx`` plus every external file it references.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

__all__ = [
    "EXTERNAL_DATA_THRESHOLD_BYTES",
    "external_files",
    "has_external_data",
    "load_model",
    "model_bytes",
    "opset_of",
    "save_model",
]

# bytes; protobuf's hard limit is 2 GiB, keep a margin for the graph itself
EXTERNAL_DATA_THRESHOLD_BYTES: Final = 1_800_000_000


def opset_of(model: Any) -> int:
    """The default-domain opset of an ``onnx.ModelProto`` (0 when it declares none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def load_model(path: Path) -> Any:
    """Load an ONNX file with its external data (read from the file's directory)."""
    import onnx

    return onnx.load(str(path), load_external_data=True)


def has_external_data(model: Any) -> bool:
    """True when any initializer of the (unloaded) model points to an external file."""
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in model.graph.initializer)


def save_model(model: Any, path: Path, external: bool | None = None) -> list[Path]:
    """Save ``model`` to ``path``, with its tensors in ``<name>.data`` when it is large.

    Args:
        model: an ``onnx.ModelProto`` with all tensors loaded.
        path: the ``.onnx`` to write.
        external: force external data on/off; None = only past
            :data:`EXTERNAL_DATA_THRESHOLD_BYTES`.

    Returns:
        Every file written (the ``.onnx`` first).
    """
    import onnx

    if external is None:
        external = model.ByteSize() > EXTERNAL_DATA_THRESHOLD_BYTES
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    if not external:
        onnx.save(model, str(path))
        return [path]
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=1024,
    )
    return [path, data] if data.exists() else [path]


def external_files(path: Path) -> list[Path]:
    """The external data files an ONNX file references (existing ones, no duplicates)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    seen: list[Path] = []
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            file = path.parent / ExternalDataInfo(tensor).location
            if file.is_file() and file not in seen:
                seen.append(file)
    return seen


def model_bytes(path: Path) -> int:
    """Bytes on disk of an ONNX file and its external data."""
    return path.stat().st_size + sum(f.stat().st_size for f in external_files(path))
