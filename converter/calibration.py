"""Calibration, validation and label data: load ``.npy``/``.npz``, check it fits the model.

Layout: ``.npy`` holds one array for a single-input model; ``.npz`` holds one array per input,
keyed by input name. The first axis of every array is the example axis (N rows); the rest must
match the model's input shape where the model fixes a dimension. Labels are a ``.npy`` of N
integer class ids.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import numpy as np

from edgeserve.bundle.manifest import TensorSpec
from edgeserve.datatypes import to_numpy
from edgeserve.errors import ConfigError

__all__ = [
    "Dataset",
    "batches",
    "check_dataset",
    "generate_inputs",
    "load_dataset",
    "load_labels",
    "parse_input_shapes",
    "rows",
]

Dataset = dict[str, np.ndarray]
DATA_MAX_BYTES: Final = 2 * 1024**3  # bytes; a calibration set is a few MiB, this bounds it
GENERATED_ROWS: Final = 64


def _read(path: Path, what: str) -> np.ndarray | Mapping[str, np.ndarray]:
    if not path.is_file():
        raise ConfigError(f"--{what} {path}: no such file")
    if path.stat().st_size > DATA_MAX_BYTES:
        raise ConfigError(f"--{what} {path}: over {DATA_MAX_BYTES} bytes")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"--{what} {path}: not a .npy or .npz array file ({exc})") from exc
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    return loaded


def load_dataset(path: Path, inputs: tuple[TensorSpec, ...], what: str) -> Dataset:
    """Load a ``.npy`` (single input) or ``.npz`` (keyed by input name) and check it.

    Args:
        path: the file.
        inputs: the model's inputs.
        what: the option name for messages (``calibration`` or ``validation``).

    Returns:
        input name -> array of N rows, cast to the model's dtype.

    Raises:
        ConfigError: unreadable, names/dtype/shape do not fit (exit 2).
    """
    loaded = _read(path, what)
    if isinstance(loaded, np.ndarray):
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise ConfigError(
                f"--{what} {path}: the model has {len(inputs)} inputs ({names}); "
                "use an .npz keyed by input name"
            )
        data = {inputs[0].name: loaded}
    else:
        data = dict(loaded)
    return check_dataset(data, inputs, f"--{what} {path.name}")


def check_dataset(
    data: Mapping[str, np.ndarray], inputs: tuple[TensorSpec, ...], where: str
) -> Dataset:
    """Check names, dtype kind, rank, fixed dimensions and row counts; cast within a kind.

    A float64 array for an FP32 input is cast (``np.save`` of Python floats gives float64);
    an integer array for a float input, or the reverse, is refused.

    Raises:
        ConfigError: the message names the input and what does not fit.
    """
    expected = {i.name for i in inputs}
    missing = sorted(expected - set(data))
    extra = sorted(set(data) - expected)
    if missing or extra:
        raise ConfigError(
            f"{where}: keys {sorted(data)} do not match the model inputs {sorted(expected)}"
        )
    out: Dataset = {}
    counts = set()
    for spec in inputs:
        array = np.asarray(data[spec.name])
        want = to_numpy(spec.datatype)
        if array.dtype != want:
            if array.dtype.kind != want.kind or array.dtype.kind not in "fiu":
                raise ConfigError(
                    f"{where}: input {spec.name} has dtype {array.dtype}, model expects {want}"
                )
            array = array.astype(want)
        if array.ndim != len(spec.shape):
            raise ConfigError(
                f"{where}: input {spec.name} has shape {list(array.shape)}, model expects "
                f"rank {len(spec.shape)} {list(spec.shape)} (first axis = examples)"
            )
        # the first axis is the example axis; a model with a fixed batch of 1 is fed row by row
        for axis, (want_dim, have) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if axis > 0 and want_dim not in (-1, have):
                raise ConfigError(
                    f"{where}: input {spec.name} has shape {list(array.shape)}, model expects "
                    f"{list(spec.shape)}"
                )
        if array.shape[0] == 0:
            raise ConfigError(f"{where}: input {spec.name} has no rows")
        if array.dtype.kind == "f":
            bad = ~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ConfigError(
                    f"{where}: input {spec.name} row {row} has NaN or inf values "
                    f"({int(bad.sum())} such rows)"
                )
        counts.add(array.shape[0])
        out[spec.name] = np.ascontiguousarray(array)
    if len(counts) > 1:
        raise ConfigError(f"{where}: inputs have different row counts {sorted(counts)}")
    return out


def load_labels(path: Path, n_rows: int) -> np.ndarray:
    """Load integer class labels (``.npy``, one per validation row).

    Raises:
        ConfigError: not integers, not 1-D, or not one per row.
    """
    loaded = _read(path, "labels")
    if not isinstance(loaded, np.ndarray) or loaded.ndim != 1 or loaded.dtype.kind not in "iu":
        raise ConfigError(f"--labels {path}: must be a 1-D .npy of integer class ids")
    if loaded.shape[0] != n_rows:
        raise ConfigError(f"--labels {path}: {loaded.shape[0]} labels for {n_rows} validation rows")
    return loaded.astype(np.int64)


def parse_input_shapes(
    values: tuple[str, ...], inputs: tuple[TensorSpec, ...]
) -> dict[str, tuple[int, ...]]:
    """Parse ``--input-shape name=1,28,28`` options (name may be omitted for one input); -1
    keeps a dimension dynamic.

    Raises:
        ConfigError: bad syntax, unknown input or a rank that does not match.
    """
    known = {i.name: i for i in inputs}
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values:
        name, sep, dims = value.rpartition("=")
        if not sep:
            if len(inputs) != 1:
                raise ConfigError(f"--input-shape {value}: say which input (name=1,28,28)")
            name = inputs[0].name
        if name not in known:
            raise ConfigError(f"--input-shape {value}: no input named {name!r}")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise ConfigError(f"--input-shape {value}: dimensions must be integers") from None
        spec = known[name]
        if len(shape) != len(spec.shape) or any(d < 1 and d != -1 for d in shape):
            raise ConfigError(
                f"--input-shape {value}: {list(shape)} does not fit {list(spec.shape)}"
            )
        if any(h != -1 and w not in (-1, h) for w, h in zip(spec.shape, shape, strict=True)):
            raise ConfigError(f"--input-shape {value}: model fixes {list(spec.shape)}")
        shapes[name] = shape
    return shapes


def generate_inputs(
    inputs: tuple[TensorSpec, ...],
    shapes: Mapping[str, tuple[int, ...]],
    rows_n: int = GENERATED_ROWS,
    seed: int = 0,
) -> Dataset:
    """Random inputs when no data is given: standard normal floats, small non-negative ints.

    Raises:
        ConfigError: a non-batch dimension is dynamic and ``--input-shape`` does not fix it.
    """
    rng = np.random.default_rng(seed)
    out: Dataset = {}
    for spec in inputs:
        shape = list(shapes.get(spec.name, spec.shape))
        if any(d == -1 for d in shape[1:]):
            raise ConfigError(
                f"input {spec.name} has dynamic dimensions {list(spec.shape)}: pass "
                f"--validation data or --input-shape {spec.name}=..."
            )
        shape[0] = rows_n
        dtype = to_numpy(spec.datatype)
        if dtype.kind == "f":
            out[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            out[spec.name] = rng.integers(0, 10, size=shape).astype(dtype)
        else:
            raise ConfigError(f"input {spec.name}: cannot generate {spec.datatype} data")
    return out


def rows(data: Dataset) -> int:
    """Number of examples in a dataset."""
    return next(iter(data.values())).shape[0]


def batches(data: Dataset, size: int) -> list[Dataset]:
    """Split a dataset into consecutive batches of at most ``size`` rows."""
    n = rows(data)
    return [{k: v[i : i + size] for k, v in data.items()} for i in range(0, n, size)]
