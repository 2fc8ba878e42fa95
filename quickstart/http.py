"""The few HTTP calls the quickstart makes: the fleet server's operator API and the agents'
Open Inference Protocol API (OIP v2 REST, JSON tensors), with httpx errors mapped to ours."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from edgeserve.errors import EdgeServeError, UnavailableError

__all__ = ["answers", "get_text", "infer", "request_json"]

_TIMEOUT_S = 10.0


def _send(method: str, url: str, **kw: Any) -> httpx.Response:
    try:
        response = httpx.request(method, url, timeout=_TIMEOUT_S, **kw)
    except httpx.HTTPError as exc:
        raise UnavailableError(f"{method} {url}: {exc}") from exc
    if response.status_code >= 400:
        raise EdgeServeError(f"{method} {url}: {response.status_code} {response.text[:200]}")
    return response


def request_json(method: str, url: str, **kw: Any) -> Any:
    """``method url`` and its JSON body (None when empty).

    Raises:
        UnavailableError: nothing answered (connection refused, timeout).
        EdgeServeError: a 4xx/5xx answer (status and the start of the body in the message).
    """
    response = _send(method, url, **kw)
    return response.json() if response.content else None


def answers(url: str) -> bool:
    """True when ``GET url`` answers 2xx; errors propagate (for polling with a timeout)."""
    _send("GET", url)
    return True


def get_text(url: str) -> str:
    """``GET url`` as text (Prometheus metrics); errors as :func:`request_json`."""
    return _send("GET", url).text


def infer(
    base_url: str, model: str, input_name: str, x: np.ndarray, key: str | None = None
) -> dict[str, Any]:
    """One OIP v2 inference with a single FP32 input in JSON (``POST /v2/models/{m}/infer``).

    Args:
        base_url: the agent, ``http://127.0.0.1:PORT``.
        model: model name (or A/B alias).
        input_name: the model's input tensor name.
        x: the rows, float32.
        key: sticky A/B key, sent as ``x-request-key``.

    Returns:
        The response body: ``model_name``, ``model_version``, ``outputs``.
    """
    body = {
        "inputs": [
            {
                "name": input_name,
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": np.asarray(x, dtype=np.float32).reshape(-1).tolist(),
            }
        ]
    }
    headers = {"x-request-key": key} if key else {}
    result: dict[str, Any] = request_json(
        "POST", f"{base_url}/v2/models/{model}/infer", json=body, headers=headers
    )
    return result
