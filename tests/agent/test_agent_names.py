"""Model names and versions in request paths: decoded once, checked before any lookup, never a
5xx (a 300-byte name used to reach the filesystem as ``File name too long``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from edgeserve.agent.names import (
    InvalidNameError,
    check_version,
    is_label,
    is_model_name,
)
from edgeserve.agent.store import ModelStore
from support.agent import AgentProcess, start_agent
from support.models import make_linear_bundle

from edgeserve.bundle.manifest import Manifest, TensorSpec
from edgeserve.errors import BundleError


@pytest.fixture(scope="module")
def running_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One agent serving linear v1 for every test here (they only read)."""
    root = tmp_path_factory.mktemp("names")
    ModelStore(root / "state").install(make_linear_bundle(root / "b1").path)
    agent = start_agent(root / "state")
    yield agent
    agent.stop()


_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}

# every operation that takes a model name (and the versioned ones a version)
_OPERATIONS = [
    ("GET", "/v2/models/{m}"),
    ("GET", "/v2/models/{m}/ready"),
    ("GET", "/v2/models/{m}/config"),
    ("GET", "/v2/models/{m}/stats"),
    ("GET", "/v2/models/{m}/versions/1"),
    ("GET", "/v2/models/{m}/versions/1/ready"),
    ("GET", "/v2/models/{m}/versions/1/stats"),
    ("POST", "/v2/models/{m}/infer"),
    ("POST", "/v2/models/{m}/versions/1/infer"),
    ("POST", "/v2/repository/models/{m}/load"),
    ("POST", "/v2/repository/models/{m}/unload"),
    ("POST", "/v1/models/{m}:predict"),
    ("POST", "/v1/models/{m}/versions/1:predict"),
    ("POST", "/v1/models/{m}/labels/stable:predict"),
    ("GET", "/v1/models/{m}"),
]


@pytest.mark.parametrize(
    "name",
    ["a" * 300, "a" * 129, "%2E%2E", ".hidden", "lin%00ear", "%F0%9F%98%80", "a%2Fb", "-x"],
    ids=["300-bytes", "129-bytes", "dotdot", "dot", "nul", "emoji", "slash", "dash"],
)
def test_agent_names_invalid_model_names_are_400_on_every_operation(
    running_agent: AgentProcess, name: str
) -> None:
    with httpx.Client(timeout=10) as http:
        for method, template in _OPERATIONS:
            url = running_agent.url + template.replace("{m}", name)
            resp = http.request(method, url, json=_BODY if method == "POST" else None)
            assert 400 <= resp.status_code < 500, (method, template, resp.status_code, resp.text)
            if "%2F" not in name:  # a decoded '/' may instead change which route it is: 404
                assert resp.status_code == 400, (method, template, resp.text)
                assert "invalid model name" in resp.json()["error"]
        assert http.get(f"{running_agent.url}/v2/health/live").status_code == 200


@pytest.mark.parametrize(
    "version",
    ["9" * 300, "9" * 19, "%C2%B2", "%D9%A1", "a" * 65, "%20", "1.5"],
    ids=["300-digits", "19-digits", "superscript-2", "arabic-1", "long-label", "space", "dot"],
)
def test_agent_names_invalid_versions_are_400(running_agent: AgentProcess, version: str) -> None:
    with httpx.Client(timeout=10) as http:
        for method, path in [
            ("GET", f"/v2/models/linear/versions/{version}"),
            ("POST", f"/v2/models/linear/versions/{version}/infer"),
            ("POST", f"/v1/models/linear/versions/{version}:predict"),
        ]:
            resp = http.request(method, running_agent.url + path, json=_BODY)
            assert resp.status_code == 400, (path, resp.text)
            assert "invalid version" in resp.json()["error"]


def test_agent_names_unknown_but_valid_is_404(running_agent: AgentProcess) -> None:
    url = running_agent.url
    assert httpx.get(f"{url}/v2/models/{'a' * 128}").status_code == 404
    assert httpx.get(f"{url}/v2/models/linear/versions/{'9' * 18}").status_code == 404
    assert httpx.get(f"{url}/v2/models/linear/versions/nolabel").status_code == 404
    assert httpx.post(f"{url}/v2/repository/models/nope/load").status_code == 404


def test_agent_names_percent_encoded_paths_reach_the_right_model(
    running_agent: AgentProcess,
) -> None:
    url = running_agent.url
    meta = httpx.get(f"{url}/v2/models/%6Cinear")
    assert meta.status_code == 200 and meta.json()["name"] == "linear"
    infer = httpx.post(f"{url}/v2/models/l%69near/versions/%31/infer", json=_BODY)
    assert infer.status_code == 200
    assert infer.json()["model_name"] == "linear" and infer.json()["model_version"] == "1"
    tf = httpx.post(f"{url}/v1/models/linear%3Apredict", json={"instances": [[1, 2, 3, 4]]})
    assert tf.status_code == 200 and len(tf.json()["predictions"]) == 1
    # decoded once: %25 is a literal '%', which no model name has
    assert httpx.get(f"{url}/v2/models/%256Cinear").status_code == 400


def test_agent_names_store_never_touches_the_filesystem_for_a_bad_name(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "state")
    for bad in ("a" * 300, "..", "../etc", "x/y", "", ".lock", "a\x00b"):
        assert store.versions(bad) == []
        assert store.active_version(bad) is None
        assert store.labels(bad) == {}


@pytest.mark.parametrize(
    "name", ["linear", "a", "A.b-c_9", "a" * 128, "a" * 129, ".x", "-x", "a b", "ä", "a/b", ""]
)
def test_agent_names_rule_is_the_manifests(name: str) -> None:
    # the agent accepts exactly the names a bundle can carry
    try:
        Manifest(
            name=name,
            version=1,
            format="onnx",
            precision="fp32",
            target="onnx-cpu-fp32",
            providers=("CPUExecutionProvider",),
            inputs=(TensorSpec("x", "FP32", (-1, 4)),),
            outputs=(TensorSpec("y", "FP32", (-1, 3)),),
        )
        manifest_ok = True
    except BundleError:
        manifest_ok = False
    assert is_model_name(name) is manifest_ok


def test_agent_names_versions_and_labels() -> None:
    assert check_version("1") == "1" and check_version("stable") == "stable"
    assert is_label("canary-2") and not is_label("12") and not is_label("a" * 65)
    for bad in ("", "²", "١", "1 ", "9" * 19):
        with pytest.raises(InvalidNameError):
            check_version(bad)
