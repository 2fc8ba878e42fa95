"""The OIP v2 REST API, TF Serving predict and the repository API over real HTTP."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
from edgeserve.agent.store import ModelStore
from support.agent import AgentProcess, linear_reference, start_agent
from support.models import make_linear_bundle

X = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]]


def _infer_body(data: list, shape: list[int] | None = None) -> dict:
    flat = np.asarray(data, dtype=np.float32)
    return {
        "id": "r1",
        "inputs": [
            {"name": "x", "shape": shape or list(flat.shape), "datatype": "FP32", "data": data}
        ],
    }


def test_agent_http_health_metadata_and_infer(running_agent: AgentProcess) -> None:
    url = running_agent.url
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    server = httpx.get(f"{url}/v2").json()
    assert server["name"] == "edgeserve" and "binary_tensor_data" in server["extensions"]
    meta = httpx.get(f"{url}/v2/models/linear").json()
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert httpx.get(f"{url}/v2/models/linear/versions/1").json()["name"] == "linear"
    assert httpx.get(f"{url}/v2/models/linear/ready").status_code == 200
    assert httpx.get(f"{url}/v2/models/linear/versions/1/ready").status_code == 200

    resp = httpx.post(f"{url}/v2/models/linear/infer", json=_infer_body(X))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["id"] == "r1" and body["model_version"] == "1"
    out = body["outputs"][0]
    assert out["name"] == "y" and out["datatype"] == "FP32" and out["shape"] == [2, 3]
    np.testing.assert_allclose(
        np.reshape(out["data"], (2, 3)), linear_reference(np.array(X)), rtol=1e-5
    )
    # nested and flat data are both accepted (OIP: row-major)
    flat = _infer_body([v for row in X for v in row], shape=[2, 4])
    resp = httpx.post(f"{url}/v2/models/linear/versions/1/infer", json=flat)
    assert resp.json()["outputs"][0]["data"] == out["data"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[]", 400, "JSON object"),
        (json.dumps({"inputs": []}).encode(), 400, "non-empty list"),
        (json.dumps(_infer_body(X, [2, 3])).encode(), 400, "needs 6"),
        (json.dumps(_infer_body([[1.0, 2.0, 3.0]])).encode(), 400, "shape [1, 3]"),
        (
            json.dumps(
                {
                    "inputs": [
                        {"name": "z", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
                    ]
                }
            ).encode(),
            400,
            "missing input(s) x",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4]}
                    ]
                }
            ).encode(),
            400,
            "datatype INT64, model expects FP32",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "x",
                            "shape": [1, 4],
                            "datatype": "FP32",
                            "data": ["a", "b", "c", "d"],
                        }
                    ]
                }
            ).encode(),
            400,
            "needs numbers",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {"name": "x", "shape": [1, 4], "datatype": "FP17", "data": [1, 2, 3, 4]}
                    ]
                }
            ).encode(),
            400,
            "unknown datatype",
        ),
    ],
    ids=[
        "malformed",
        "not-object",
        "no-inputs",
        "count",
        "shape",
        "name",
        "dtype",
        "strings",
        "bad-dtype",
    ],
)
def test_agent_http_bad_input_is_a_4xx_naming_the_problem(
    running_agent: AgentProcess, body: bytes, status: int, fragment: str
) -> None:
    resp = httpx.post(f"{running_agent.url}/v2/models/linear/infer", content=body)
    assert resp.status_code == status
    assert fragment in resp.json()["error"]


def test_agent_http_unknown_things_are_404_and_methods_405(running_agent: AgentProcess) -> None:
    url = running_agent.url
    resp = httpx.post(f"{url}/v2/models/nope/infer", json=_infer_body(X))
    assert resp.status_code == 404 and "nope" in resp.json()["error"]
    resp = httpx.post(f"{url}/v2/models/linear/versions/7/infer", json=_infer_body(X))
    assert resp.status_code == 404 and "version 7" in resp.json()["error"]
    assert httpx.get(f"{url}/v2/models/nope/ready").status_code == 404
    assert httpx.get(f"{url}/nowhere").status_code == 404
    assert httpx.get(f"{url}/v2/models/linear/infer").status_code == 405


def test_agent_http_body_cap_and_malformed_http(state_dir: Path) -> None:
    agent = start_agent(state_dir, config={"server": {"max_body_bytes": 1000}})
    try:
        big = _infer_body([[1.0, 2.0, 3.0, 4.0]] * 200)
        resp = httpx.post(f"{agent.url}/v2/models/linear/infer", json=big)
        assert resp.status_code == 413 and "1000 byte limit" in resp.json()["error"]
        with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as sock:
            sock.sendall(b"GARBAGE / HTTP/9.9\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 400")
        # still serving
        assert httpx.post(f"{agent.url}/v2/models/linear/infer", json=_infer_body(X)).is_success
    finally:
        agent.stop()


def test_agent_http_tf_serving_predict_rows_columns_and_labels(
    tmp_path: Path, state_dir: Path
) -> None:
    store = ModelStore(state_dir)
    store.install(make_linear_bundle(tmp_path / "b2", version=2, seed=1).path, activate=False)
    store.set_label("linear", "canary", 2)
    with start_agent(state_dir, config={"models": {"linear": {"labels": {"stable": 1}}}}) as agent:
        url = agent.url
        rows = httpx.post(f"{url}/v1/models/linear:predict", json={"instances": X}).json()
        np.testing.assert_allclose(rows["predictions"], linear_reference(np.array(X)), rtol=1e-5)
        cols = httpx.post(f"{url}/v1/models/linear/versions/1:predict", json={"inputs": X})
        assert cols.json()["outputs"] == rows["predictions"]
        canary = httpx.post(f"{url}/v1/models/linear/labels/canary:predict", json={"instances": X})
        np.testing.assert_allclose(
            canary.json()["predictions"], linear_reference(np.array(X), seed=1), rtol=1e-5
        )
        stable = httpx.post(f"{url}/v1/models/linear/labels/stable:predict", json={"instances": X})
        assert stable.json()["predictions"] == rows["predictions"]
        # labels also work in the OIP version slot
        oip = httpx.post(f"{url}/v2/models/linear/versions/canary/infer", json=_infer_body(X))
        assert oip.json()["model_version"] == "2"
        bad = httpx.post(f"{url}/v1/models/linear:predict", json={"instances": [[1, 2]]})
        assert bad.status_code == 400 and "shape" in bad.json()["error"]
        nolabel = httpx.post(f"{url}/v1/models/linear/labels/gold:predict", json={"inputs": X})
        assert nolabel.status_code == 404
        status = httpx.get(f"{url}/v1/models/linear").json()
        assert status["model_version_status"][0]["state"] == "AVAILABLE"


def test_agent_http_repository_index_load_unload(running_agent: AgentProcess) -> None:
    url = running_agent.url
    index = httpx.post(f"{url}/v2/repository/index").json()
    assert index == [{"name": "linear", "version": "1", "state": "READY", "reason": ""}]
    assert httpx.post(f"{url}/v2/repository/models/linear/unload").status_code == 200
    assert httpx.get(f"{url}/v2/models/linear/ready").status_code == 503
    resp = httpx.post(f"{url}/v2/models/linear/infer", json=_infer_body(X))
    assert resp.status_code == 503 and "unloaded" in resp.json()["error"]
    assert httpx.post(f"{url}/v2/repository/index").json()[0]["state"] == "UNAVAILABLE"
    assert httpx.post(f"{url}/v2/repository/index", json={"ready": True}).json() == []
    assert httpx.post(f"{url}/v2/repository/models/linear/load").status_code == 200
    assert httpx.post(f"{url}/v2/models/linear/infer", json=_infer_body(X)).status_code == 200
    assert httpx.post(f"{url}/v2/repository/models/nope/load").status_code == 404


def test_agent_http_openapi_and_config(running_agent: AgentProcess) -> None:
    doc = httpx.get(f"{running_agent.url}/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert "/v2/models/{model_name}/infer" in doc["paths"]
    assert "/v1/models/{model_name}:predict" in doc["paths"]
    config = httpx.get(f"{running_agent.url}/v2/models/linear/config").json()
    assert config["max_batch_size"] == 32 and "dynamic_batching" in config


def test_agent_http_serves_with_an_empty_store(tmp_path: Path) -> None:
    with start_agent(tmp_path / "empty") as agent:
        assert httpx.get(f"{agent.url}/v2/health/ready").status_code == 200
        assert httpx.post(f"{agent.url}/v2/repository/index").json() == []
        resp = httpx.post(f"{agent.url}/v2/models/linear/infer", json=_infer_body(X))
        assert resp.status_code == 404


def test_agent_http_bearer_token(state_dir: Path) -> None:
    with start_agent(state_dir, extra_args=["--token", "s3cret"]) as agent:
        url = agent.url
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200  # probes stay open
        denied = httpx.post(f"{url}/v2/models/linear/infer", json=_infer_body(X))
        assert denied.status_code == 401 and "token" in denied.json()["error"]
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.get(f"{url}/v2", headers=wrong).status_code == 401
        ok = httpx.post(f"{url}/v2/models/linear/infer", json=_infer_body(X), headers=agent.headers)
        assert ok.status_code == 200


def test_agent_http_version_policies_all_and_pinned(tmp_path: Path, state_dir: Path) -> None:
    store = ModelStore(state_dir)
    store.install(make_linear_bundle(tmp_path / "b2", version=2, seed=1).path)
    assert store.active_version("linear") == 2
    config = {"models": {"linear": {"policy": "all"}}}
    with start_agent(state_dir, config=config) as agent:
        for version in ("1", "2"):
            resp = httpx.post(
                f"{agent.url}/v2/models/linear/versions/{version}/infer", json=_infer_body(X)
            )
            assert resp.json()["model_version"] == version
        plain = httpx.post(f"{agent.url}/v2/models/linear/infer", json=_infer_body(X))
        assert plain.json()["model_version"] == "2"
        assert httpx.get(f"{agent.url}/v2/models/linear").json()["versions"] == ["1", "2"]
    config = {"models": {"linear": {"policy": "pinned", "version": 1}}}
    with start_agent(state_dir, config=config) as agent:
        plain = httpx.post(f"{agent.url}/v2/models/linear/infer", json=_infer_body(X))
        assert plain.json()["model_version"] == "1"  # the store says 2; the pin wins
        other = httpx.post(f"{agent.url}/v2/models/linear/versions/2/infer", json=_infer_body(X))
        assert other.status_code == 404 and "not served" in other.json()["error"]


def test_agent_http_provider_override_falls_back_with_a_warning(state_dir: Path) -> None:
    args = ["--provider", "CUDAExecutionProvider", "--provider", "CPUExecutionProvider"]
    with start_agent(state_dir, extra_args=args) as agent:
        assert httpx.post(f"{agent.url}/v2/models/linear/infer", json=_infer_body(X)).is_success
        log = agent.log()
    assert "CUDAExecutionProvider not available" in log
    assert "using CPUExecutionProvider" in log


def test_agent_http_idle_connections_are_closed(state_dir: Path) -> None:
    with start_agent(state_dir, config={"server": {"idle_timeout_s": 0.3}}) as agent:
        with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            sock.settimeout(3)
            assert sock.recv(4096) == b""  # closed by the server after 0.3 s of silence
        assert httpx.get(f"{agent.url}/v2/health/live").status_code == 200


def test_agent_http_large_bodies_both_apis(state_dir: Path) -> None:
    x = np.random.default_rng(5).standard_normal((6000, 4)).astype(np.float32)
    with start_agent(state_dir, config={"batching": {"max_batch_size": 8192}}) as agent:
        rows = httpx.post(
            f"{agent.url}/v1/models/linear:predict", json={"instances": x.tolist()}, timeout=30
        )
        assert rows.status_code == 200
        np.testing.assert_allclose(rows.json()["predictions"], linear_reference(x), rtol=1e-5)
        oip = httpx.post(f"{agent.url}/v2/models/linear/infer", json=_infer_body(x.tolist()))
        out = oip.json()["outputs"][0]
        assert out["shape"] == [6000, 3]
        np.testing.assert_allclose(
            np.reshape(out["data"], (6000, 3)), linear_reference(x), rtol=1e-5
        )
    with start_agent(state_dir) as agent:  # default max_batch_size 32: Triton's 400
        resp = httpx.post(f"{agent.url}/v1/models/linear:predict", json={"inputs": x.tolist()})
        assert resp.status_code == 400 and "max_batch_size 32" in resp.json()["error"]
