"""The bundle's sample file: a few input rows and the outputs recorded for them at conversion.

The file has role ``sample`` (:data:`SAMPLE_ROLE`) and is an ``.npz`` (:data:`SAMPLE_FILE`):

- input arrays keyed by input name, a few rows in the bundle's dtype; the agent's warm-up and
  its health check run them;
- when the converter wrote it, the converted model's own outputs on those inputs, keyed
  ``expected:<output name>`` (:data:`REFERENCE_PREFIX`), which the device's post-activation
  health check compares with what it computes.

The tolerance of that comparison is recorded in the manifest as
``validation.health_check.tolerance`` (:data:`HEALTH_CHECK_KEY`): the largest
``|output - expected|`` a device may show, as a fraction of the output's largest
``|expected|``, chosen by precision (:func:`tolerance_for`).

The converter writes this file with :func:`encode_sample`; the agent reads it with
:func:`read_sample` and :func:`reference_tolerance`. No other module knows the layout.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from edgeserve.bundle.manifest import SAMPLE_ROLE, Manifest
from edgeserve.errors import BundleError, ModelError

__all__ = [
    "DEFAULT_TOLERANCE",
    "HEALTH_CHECK_KEY",
    "REFERENCE_PREFIX",
    "REFERENCE_TOLERANCE",
    "SAMPLE_FILE",
    "SAMPLE_ROLE",
    "Sample",
    "encode_sample",
    "health_check_record",
    "read_sample",
    "reference_outputs",
    "reference_tolerance",
    "tolerance_for",
]

SAMPLE_FILE: Final = "sample.npz"
REFERENCE_PREFIX: Final = "expected:"
HEALTH_CHECK_KEY: Final = "health_check"
# validation.health_check.tolerance by precision. Another CPU, thread count or execution
# provider changes float summation order (fp32: ~1e-6 relative) and int8 rounding (an LSB or
# a few, ~1-4 % of the range); a wrong model or a broken kernel is off by the order of the
# range itself. Measuring accuracy is the converter's job, not the device's.
REFERENCE_TOLERANCE: Final = {"fp32": 0.01, "fp16": 0.05, "int8": 0.1, "dynamic": 0.1}
# Used when a bundle has references but its manifest records no tolerance: the most lenient
# (int8) value, so a hand-made bundle is not rolled back for numerical noise.
DEFAULT_TOLERANCE: Final = 0.1


@dataclass(frozen=True)
class Sample:
    """A parsed sample file.

    Attributes:
        inputs: input arrays by input name.
        references: recorded outputs by output name (empty when none were recorded).
    """

    inputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    references: Mapping[str, np.ndarray] = field(default_factory=dict)


def encode_sample(
    inputs: Mapping[str, np.ndarray], references: Mapping[str, np.ndarray] | None = None
) -> bytes:
    """The ``.npz`` bytes of a sample file.

    Raises:
        BundleError: an input name starts with :data:`REFERENCE_PREFIX` (it would read back
            as a reference).
    """
    clash = sorted(name for name in inputs if name.startswith(REFERENCE_PREFIX))
    if clash:
        raise BundleError(f"sample input names {clash} start with {REFERENCE_PREFIX!r}")
    arrays = {name: np.ascontiguousarray(a) for name, a in inputs.items()}
    for name, array in (references or {}).items():
        arrays[f"{REFERENCE_PREFIX}{name}"] = np.ascontiguousarray(array)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_sample(path: Path) -> Sample:
    """Parse a sample file (no pickled objects: string inputs do not load).

    Raises:
        ModelError: the file cannot be read or is not a plain ``.npz``.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError) as exc:
        raise ModelError(f"sample file {path.name} is unreadable: {exc}") from exc
    n = len(REFERENCE_PREFIX)
    return Sample(
        inputs={k: v for k, v in arrays.items() if not k.startswith(REFERENCE_PREFIX)},
        references={k[n:]: v for k, v in arrays.items() if k.startswith(REFERENCE_PREFIX)},
    )


def reference_outputs(sample_path: Path | None) -> dict[str, np.ndarray]:
    """The recorded outputs in a bundle's sample file (empty when there is no file).

    Raises:
        ModelError: the file cannot be read.
    """
    return {} if sample_path is None else dict(read_sample(sample_path).references)


def tolerance_for(precision: str) -> float:
    """The tolerance the converter records for a bundle of ``precision``."""
    return REFERENCE_TOLERANCE.get(precision, max(REFERENCE_TOLERANCE.values()))


def health_check_record(tolerance: float) -> dict[str, float]:
    """The ``validation.health_check`` entry the converter writes beside reference outputs."""
    return {"tolerance": tolerance}


def reference_tolerance(manifest: Manifest) -> float:
    """``validation.health_check.tolerance`` of the manifest, else :data:`DEFAULT_TOLERANCE`.

    Raises:
        ModelError: the recorded value is not a number in (0, 1].
    """
    section: Any = manifest.validation.get(HEALTH_CHECK_KEY)
    if not isinstance(section, Mapping) or "tolerance" not in section:
        return DEFAULT_TOLERANCE
    value = section["tolerance"]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value <= 1
    ):
        raise ModelError(f"manifest validation.health_check.tolerance {value!r} is not in (0, 1]")
    return float(value)
