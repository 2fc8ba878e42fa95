"""On-device A/B aliases (sticky by request key) and the Prometheus metrics they show."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from edgeserve.agent.store import ModelStore
from support.agent import start_agent
from support.models import make_linear_bundle

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def _count(text: str, metric: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_agent_ab_split_is_sticky_weighted_and_counted_per_arm(
    tmp_path: Path, state_dir: Path
) -> None:
    ModelStore(state_dir).install(
        make_linear_bundle(tmp_path / "b2", version=2, seed=1).path, activate=False
    )
    config = {"splits": {"digits-ab": {"model": "linear", "a": 1, "b": 2, "weight_b": 0.25}}}
    with start_agent(state_dir, config=config) as agent, httpx.Client() as http:
        url = f"{agent.url}/v2/models/digits-ab/infer"
        arms: dict[str, str] = {}
        for i in range(400):
            key = f"device-{i}"
            version = http.post(url, json=BODY, headers={"x-request-key": key}).json()[
                "model_version"
            ]
            arms[key] = version
        share_b = sum(v == "2" for v in arms.values()) / len(arms)
        assert 0.17 < share_b < 0.33, share_b
        # sticky: the same key always lands on the same arm
        for key in list(arms)[:30]:
            again = http.post(url, json=BODY, headers={"x-request-key": key}).json()
            assert again["model_version"] == arms[key]
        # the plain model name still goes to the active version
        assert (
            http.post(f"{agent.url}/v2/models/linear/infer", json=BODY).json()["model_version"]
            == "1"
        )
        metrics = http.get(f"{agent.url}/metrics").text
    n_b = sum(v == "2" for v in arms.values())
    assert _count(metrics, "edgeserve_ab_requests_total", alias="digits-ab", arm="b") >= n_b
    assert _count(metrics, "edgeserve_ab_requests_total", arm="a", version="1") >= 400 - n_b
    assert (
        _count(metrics, "edgeserve_inference_request_success_total", model="linear", version="2")
        >= n_b
    )


@pytest.fixture
def running_agent_metrics(state_dir: Path) -> str:
    with start_agent(state_dir) as agent, httpx.Client() as http:
        for _ in range(3):
            assert http.post(f"{agent.url}/v2/models/linear/infer", json=BODY).is_success
        bad = {
            "inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]
        }
        assert http.post(f"{agent.url}/v2/models/linear/infer", json=bad).status_code == 400
        resp = http.get(f"{agent.url}/metrics")
        assert resp.headers["content-type"].startswith("text/plain")
        return resp.text


def test_agent_metrics_exposition(running_agent_metrics: str) -> None:
    text = running_agent_metrics
    for family in (
        "edgeserve_inference_request_success_total",
        "edgeserve_inference_request_failure_total",
        "edgeserve_inference_count_total",
        "edgeserve_inference_exec_count_total",
        "edgeserve_request_duration_seconds_bucket",
        "edgeserve_queue_duration_seconds_count",
        "edgeserve_compute_duration_seconds_sum",
        "edgeserve_pending_requests",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ):
        assert re.search(rf"^{family}", text, re.MULTILINE), family
    assert _count(text, "edgeserve_inference_request_success_total", model="linear") == 3
    assert (
        _count(
            text, "edgeserve_inference_request_failure_total", model="linear", reason="bad_input"
        )
        == 1
    )
    assert _count(text, "edgeserve_pending_requests", model="linear", version="1") == 0
