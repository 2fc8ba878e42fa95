"""Validation: run the original and the converted bundle on the same rows.

The converted model runs through :func:`edgeserve.runtimes.load_runtime`, the runtime the agent
uses, so what is measured here is what the device will run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from edgeserve.converter.calibration import Dataset, batches

from edgeserve.bundle import Bundle
from edgeserve.bundle.manifest import TensorSpec
from edgeserve.runtimes import RuntimeOptions, load_runtime

__all__ = ["BundleRunner", "Runner", "open_bundle_runner", "run_batch_size", "run_dataset"]

Runner = Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]


@dataclass
class BundleRunner:
    """A bundle loaded in the agent's runtime, with int8 I/O (de)quantized around it."""

    runtime: Any
    quant: Mapping[str, Mapping[str, float]]

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        prepared = {}
        for spec in self.runtime.inputs:
            array = feeds[spec.name]
            q = self.quant.get(spec.name)
            if q is not None:
                info = np.iinfo(np.int8 if spec.datatype == "INT8" else np.uint8)
                scaled = np.round(array / q["scale"] + q["zero_point"])
                array = np.clip(scaled, info.min, info.max).astype(info.dtype)
            prepared[spec.name] = array
        out = self.runtime.run(prepared)
        results = []
        for spec in self.runtime.outputs:
            array = out[spec.name]
            q = self.quant.get(spec.name)
            if q is not None:
                array = (array.astype(np.float32) - q["zero_point"]) * np.float32(q["scale"])
            results.append(array)
        return results

    def close(self) -> None:
        """Release the runtime."""
        self.runtime.close()


def open_bundle_runner(
    bundle: Bundle, quant: Mapping[str, Mapping[str, float]], threads: int = 0
) -> BundleRunner:
    """Load ``bundle`` as the agent would (CPU fallback for GPU/NPU providers).

    Args:
        bundle: the bundle.
        quant: int8 I/O quantization parameters by tensor name.
        threads: intra-op threads; 0 = the runtime's default (what the agent uses).

    Raises:
        ModelError: the runtime refuses the model.
    """
    from edgeserve.converter.loaders import quiet_native_stderr

    with quiet_native_stderr():  # TFLite announces its XNNPACK delegate on stderr
        runtime = load_runtime(bundle, RuntimeOptions(threads=threads))
    return BundleRunner(runtime, quant)


def run_batch_size(inputs: tuple[TensorSpec, ...], wanted: int) -> int:
    """Rows per call: the model's fixed first dimension if it has one, else ``wanted``."""
    first = inputs[0].shape[0] if inputs and inputs[0].shape else -1
    return first if first > 0 else wanted


def run_dataset(runner: Runner, data: Dataset, batch: int) -> list[np.ndarray]:
    """Run every row, ``batch`` rows per call; outputs concatenated along the first axis."""
    parts: list[list[np.ndarray]] = []
    for chunk in batches(data, batch):
        parts.append([np.asarray(o) for o in runner(chunk)])
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
