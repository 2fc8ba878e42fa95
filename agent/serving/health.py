"""The reference-output part of the health check fleet sync runs after activation.

The converter stores, beside the sample inputs in ``sample.npz`` (role ``sample``), the
converted model's own outputs on those inputs under ``expected:<output name>``, and the
tolerance for comparing them in the manifest's ``validation.health_check.tolerance``; that
format, and reading it, is :mod:`edgeserve.bundle.sample`. A version that loads and warms up
(it runs, outputs are finite) but computes something else on this device (a broken execution
provider or kernel, a model or sample from another build) is then caught by
:meth:`edgeserve.agent.serving.core.Agent.health_check` and rolled back by fleet sync.

The comparison is per output: ``max |output - expected| <= tolerance * max |expected|``
(``tolerance`` itself when every expected value is 0), so it scales with the output's
magnitude. Floating-point and quantized (8- and 16-bit integer) outputs are compared; wider
integers (class indices, counts), booleans and strings may flip on near-ties between kernels,
so only their shape is checked.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from edgeserve.agent.config import ModelConfig, RuntimeConfig
from edgeserve.agent.serving.loaded import check_outputs, open_runtime, sample_feeds

from edgeserve.bundle import Bundle
from edgeserve.bundle.sample import reference_outputs, reference_tolerance
from edgeserve.errors import ModelError
from edgeserve.runtimes import Runtime

__all__ = ["check_health", "check_references", "check_unloaded_health"]


def check_health(runtime: Runtime, bundle: Bundle) -> None:
    """Run ``bundle``'s sample inputs on ``runtime``: every output must be present and finite
    and, when the sample holds reference outputs, agree with them within the tolerance.

    Raises:
        ModelError: it fails to run, gives NaN/inf, or computes something else.
    """
    outputs = runtime.run(sample_feeds(bundle, runtime.inputs))
    check_outputs(outputs, runtime.outputs)
    expected = reference_outputs(bundle.file_path("sample"))
    if expected:
        check_references(outputs, expected, reference_tolerance(bundle.manifest))


def check_unloaded_health(
    bundle: Bundle, model_cfg: ModelConfig, runtime_cfg: RuntimeConfig
) -> None:
    """:func:`check_health` on a runtime opened for the check (the version is not loaded).

    Raises:
        ModelError: it cannot load, or fails the check.
    """
    runtime = open_runtime(bundle, model_cfg, runtime_cfg)
    try:
        check_health(runtime, bundle)
    finally:
        runtime.close()


def check_references(
    outputs: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], tolerance: float
) -> None:
    """Compare a run on the sample inputs with the outputs recorded at conversion.

    Args:
        outputs: what this device computed, by output name.
        expected: the recorded outputs, by output name (outputs without one are skipped).
        tolerance: the allowed largest difference as a fraction of the largest expected value.

    Raises:
        ModelError: an output is missing, has another shape, or differs beyond the tolerance
            (the message names the output, the difference and the bound).
    """
    for name, ref in expected.items():
        if name not in outputs:
            raise ModelError(f"output {name} missing (the sample has a reference for it)")
        out = np.asarray(outputs[name])
        if out.shape != ref.shape:
            raise ModelError(
                f"output {name} has shape {list(out.shape)}, the reference {list(ref.shape)}"
            )
        if not _compared(ref.dtype) or not _compared(out.dtype) or ref.size == 0:
            continue
        ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
        if not np.isfinite(out64).all():
            raise ModelError(f"output {name} has NaN or infinite values")
        scale = float(np.abs(ref64).max())
        bound = tolerance * scale if scale > 0 else tolerance
        diff = float(np.abs(out64 - ref64).max())
        if not diff <= bound:
            raise ModelError(
                f"output {name} differs from the reference recorded at conversion: max |diff| "
                f"{diff:.6g} > {bound:.6g} (tolerance {tolerance:g} x max |expected| {scale:.6g})"
            )


def _compared(dtype: np.dtype) -> bool:
    """Floats and quantized integers are compared by value; other kinds by shape only."""
    return dtype.kind == "f" or (dtype.kind in "iu" and dtype.itemsize <= 2)
