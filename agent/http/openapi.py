"""The OpenAPI 3.1 document of the agent's HTTP API (served at ``GET /openapi.json``).

Schemas follow the OIP v2 REST spec's JSON objects
(https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md)
and TF Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest).
"""

from __future__ import annotations

from typing import Any

from edgeserve.agent.names import MAX_LABEL_CHARS, MODEL_NAME_PATTERN, VERSION_PATTERN

from edgeserve import __version__

__all__ = ["openapi_document"]

_ERR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def _resp(description: str, schema: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema:
        out["content"] = {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}
        }
    return out


_ERRORS = {
    "400": {"description": "Bad request: the message names the problem.", "content": _ERR},
    "401": {"description": "Missing or wrong bearer token.", "content": _ERR},
    "404": {"description": "Unknown model, version, label or route.", "content": _ERR},
    "413": {"description": "Request body over the size limit.", "content": _ERR},
    "503": {"description": "Not ready, queue full or timed out.", "content": _ERR},
}
# The agent's name rules (:mod:`edgeserve.agent.names`): anything else is a 400 before lookup.
_MODEL = {
    "name": "model_name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": MODEL_NAME_PATTERN, "maxLength": 128},
}
_VERSION = {
    "name": "model_version",
    "in": "path",
    "required": True,
    "description": "Version number or label.",
    "schema": {"type": "string", "pattern": VERSION_PATTERN, "maxLength": MAX_LABEL_CHARS},
}
_KEY = {
    "name": "x-request-key",
    "in": "header",
    "required": False,
    "description": "Sticky key for A/B aliases (configurable name).",
    "schema": {"type": "string"},
}


def _infer_op(versioned: bool) -> dict[str, Any]:
    return {
        "post": {
            "summary": "Run inference (OIP v2; JSON or binary tensor extension).",
            "parameters": [
                _MODEL,
                *([_VERSION] if versioned else []),
                _KEY,
                {
                    "name": "Inference-Header-Content-Length",
                    "in": "header",
                    "required": False,
                    "description": "Bytes of JSON before binary tensor data.",
                    "schema": {"type": "integer"},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/InferenceRequest"}
                    },
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "responses": {"200": _resp("Outputs.", "InferenceResponse"), **_ERRORS},
        }
    }


def _get(summary: str, params: list[dict[str, Any]], schema: str | None = None) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            "responses": {"200": _resp("OK", schema), **_ERRORS},
        }
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document as a JSON-ready dict."""
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {
                "type": "string",
                "enum": [
                    "BOOL",
                    "UINT8",
                    "UINT16",
                    "UINT32",
                    "UINT64",
                    "INT8",
                    "INT16",
                    "INT32",
                    "INT64",
                    "FP16",
                    "FP32",
                    "FP64",
                    "BYTES",
                ],
            },
            "parameters": {
                "type": "object",
                "properties": {
                    "binary_data_size": {"type": "integer"},
                    "binary_data": {"type": "boolean"},
                },
            },
            "data": {"type": "array", "description": "Row-major values, flat or nested."},
        },
    }
    spec_obj = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    }
    paths: dict[str, Any] = {
        "/v2/health/live": _get("Liveness (200 when the process serves).", []),
        "/v2/health/ready": _get("Readiness (200 once startup loading finished).", []),
        "/v2": _get("Server metadata.", [], "ServerMetadata"),
        "/v2/models/{model_name}": _get("Model metadata.", [_MODEL], "ModelMetadata"),
        "/v2/models/{model_name}/versions/{model_version}": _get(
            "Model version metadata.", [_MODEL, _VERSION], "ModelMetadata"
        ),
        "/v2/models/{model_name}/ready": _get("Model readiness.", [_MODEL]),
        "/v2/models/{model_name}/versions/{model_version}/ready": _get(
            "Model version readiness.", [_MODEL, _VERSION]
        ),
        "/v2/models/{model_name}/config": _get(
            "Triton's model configuration (max_batch_size, input/output dims, batching).",
            [_MODEL],
        ),
        "/v2/models/{model_name}/versions/{model_version}/config": _get(
            "Triton's model configuration of one version.", [_MODEL, _VERSION]
        ),
        "/v2/models/stats": _get("Statistics of every loaded version (Triton extension).", []),
        "/v2/models/{model_name}/stats": _get("Statistics of a model's loaded versions.", [_MODEL]),
        "/v2/models/{model_name}/versions/{model_version}/stats": _get(
            "Statistics of one version.", [_MODEL, _VERSION]
        ),
        "/v2/models/{model_name}/infer": _infer_op(False),
        "/v2/models/{model_name}/versions/{model_version}/infer": _infer_op(True),
        "/v2/repository/index": {
            "post": {
                "summary": "Every installed version and its state (Triton repository extension).",
                "responses": {"200": _resp("Index.", "RepositoryIndex"), **_ERRORS},
            }
        },
        "/v2/repository/models/{model_name}/load": {
            "post": {
                "summary": "Load a model per its version policy.",
                "parameters": [_MODEL],
                "responses": {"200": _resp("Loaded."), **_ERRORS},
            }
        },
        "/v2/repository/models/{model_name}/unload": {
            "post": {
                "summary": "Unload every version of a model.",
                "parameters": [_MODEL],
                "responses": {"200": _resp("Unloaded."), **_ERRORS},
            }
        },
        "/v1/models/{model_name}:predict": {
            "post": {
                "summary": "TF Serving predict: {'instances': [...]} or {'inputs': ...}.",
                "parameters": [_MODEL, _KEY],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/PredictRequest"}
                        }
                    },
                },
                "responses": {"200": _resp("{'predictions': ...} or {'outputs': ...}."), **_ERRORS},
            }
        },
        "/v1/models/{model_name}/versions/{model_version}:predict": {
            "post": {
                "summary": "TF Serving predict on a version.",
                "parameters": [_MODEL, _VERSION],
                "responses": {"200": _resp("Predictions."), **_ERRORS},
            }
        },
        "/v1/models/{model_name}/labels/{model_version}:predict": {
            "post": {
                "summary": "TF Serving predict on a labelled version.",
                "parameters": [_MODEL, _VERSION],
                "responses": {"200": _resp("Predictions."), **_ERRORS},
            }
        },
        "/v1/models/{model_name}/metadata": _get(
            "TF Serving model metadata (the serving_default signature_def).", [_MODEL]
        ),
        "/v1/models/{model_name}/versions/{model_version}/metadata": _get(
            "TF Serving metadata of a version.", [_MODEL, _VERSION]
        ),
        "/v1/models/{model_name}/labels/{model_version}/metadata": _get(
            "TF Serving metadata of a labelled version.", [_MODEL, _VERSION]
        ),
        "/metrics": _get("Prometheus text exposition.", []),
        "/openapi.json": _get("This document.", []),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgeserve agent", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "InferenceRequest": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": tensor, "minItems": 1},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {
                                        "type": "object",
                                        "properties": {
                                            "binary_data": {"type": "boolean"},
                                            "classification": {
                                                "type": "integer",
                                                "minimum": 1,
                                                "description": "Top-k as BYTES "
                                                "'score:index[:label]' (Triton's extension).",
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
                "InferenceResponse": {
                    "type": "object",
                    "properties": {
                        "model_name": {"type": "string"},
                        "model_version": {"type": "string"},
                        "id": {"type": "string"},
                        "outputs": {"type": "array", "items": tensor},
                    },
                },
                "ServerMetadata": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "string"},
                        "extensions": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "ModelMetadata": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "versions": {"type": "array", "items": {"type": "string"}},
                        "platform": {"type": "string"},
                        "inputs": {"type": "array", "items": spec_obj},
                        "outputs": {"type": "array", "items": spec_obj},
                    },
                },
                "RepositoryIndex": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "version": {"type": "string"},
                            "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]},
                            "reason": {"type": "string"},
                        },
                    },
                },
                "PredictRequest": {
                    "type": "object",
                    "properties": {
                        "signature_name": {"type": "string"},
                        "instances": {"type": "array"},
                        "inputs": {},
                    },
                },
            },
        },
    }
