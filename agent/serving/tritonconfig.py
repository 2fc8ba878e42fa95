"""Triton's model configuration for a loaded model version, true to its bundle and settings.

The shape is Triton's ``ModelConfig`` (``model_config.proto``) as its REST API prints it at
``GET /v2/models/{m}/config`` (https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_model_configuration.md):
``max_batch_size`` > 0 means the model takes a batch dimension, and then ``dims`` leave it out
(https://github.com/triton-inference-server/server/blob/main/docs/user_guide/model_configuration.md,
"Maximum Batch Size"); datatypes are ``TYPE_*`` names (BYTES is ``TYPE_STRING``); 64-bit integers
are JSON numbers, as Triton prints them. The gRPC ``ModelConfig`` method parses the same dict
into the protobuf message, so both APIs say the same thing.
"""

from __future__ import annotations

from typing import Any

from edgeserve.agent.config import ModelConfig
from edgeserve.agent.serving.loaded import LoadedModel

from edgeserve.bundle.manifest import TensorSpec

__all__ = ["PLATFORMS", "model_config"]

# manifest format -> (Triton platform, Triton backend)
PLATFORMS = {
    "onnx": ("onnxruntime_onnx", "onnxruntime"),
    "ort": ("onnxruntime_onnx", "onnxruntime"),
    "tflite": ("tensorflow_lite", "tflite"),
}
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider")


def model_config(model: LoadedModel, name: str, settings: ModelConfig) -> dict[str, Any]:
    """Triton's model configuration of ``model`` as served under ``name``.

    Args:
        model: the loaded version.
        name: the model name the client asked for.
        settings: the model's agent settings (version policy, batching).
    """
    manifest = model.bundle.manifest
    platform, backend = PLATFORMS.get(manifest.format, ("unknown", "unknown"))
    batcher = model.batcher
    batched = model.has_batch_dim
    labels_file = model.bundle.manifest.file("labels")
    outputs = []
    for index, spec in enumerate(model.outputs):
        out = {
            "name": spec.name,
            "data_type": _type(spec.datatype),
            "dims": _dims(spec, batched),
            "label_filename": labels_file.path if labels_file is not None and index == 0 else "",
            "is_shape_tensor": False,
        }
        outputs.append(out)
    config: dict[str, Any] = {
        "name": name,
        "platform": platform,
        "backend": backend,
        "version_policy": _version_policy(settings),
        # a model with a batch dimension takes up to max_batch_size rows per request while
        # batching; without batching it takes any number, and the setting is still the size
        # the batcher would use
        "max_batch_size": batcher.max_batch_size if batched else 0,
        "input": [
            {
                "name": spec.name,
                "data_type": _type(spec.datatype),
                "format": "FORMAT_NONE",
                "dims": _dims(spec, batched),
                "is_shape_tensor": False,
                "allow_ragged_batch": False,
                "optional": False,
            }
            for spec in model.inputs
        ],
        "output": outputs,
        "instance_group": [
            {
                "name": f"{name}_0",
                "kind": _kind(model.runtime.providers),
                "count": settings.batching.instances,
                "gpus": [],
            }
        ],
        "default_model_filename": manifest.model_file.path,
        "parameters": {
            "version": {"string_value": str(manifest.version)},
            "precision": {"string_value": manifest.precision},
            "target": {"string_value": manifest.target},
            "providers": {"string_value": ",".join(model.runtime.providers)},
        },
    }
    if batcher.batching:
        config["dynamic_batching"] = {
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": settings.batching.max_queue_delay_us,
            "preserve_ordering": False,
            "priority_levels": 0,
            "default_priority_level": 0,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": settings.batching.timeout_ms * 1000,
                "allow_timeout_override": True,
                "max_queue_size": batcher.max_queue_size,
            },
        }
    return config


def _type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    return list(spec.shape[1:] if batched else spec.shape)


def _version_policy(settings: ModelConfig) -> dict[str, Any]:
    if settings.policy == "all":
        return {"all": {}}
    if settings.policy == "pinned" and settings.version is not None:
        return {"specific": {"versions": [settings.version]}}
    return {"latest": {"num_versions": 1}}


def _kind(providers: tuple[str, ...]) -> str:
    first = providers[0] if providers else "tflite"
    if first in ("CPUExecutionProvider", "tflite"):
        return "KIND_CPU"
    return "KIND_GPU" if first in _GPU_PROVIDERS else "KIND_MODEL"
