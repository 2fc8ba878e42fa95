"""Property-based fuzzing of /infer bodies: whatever arrives, the answer is never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from edgeserve.agent.store import ModelStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.agent import AgentProcess, start_agent
from support.models import make_linear_bundle


@pytest.fixture(scope="module")
def fuzz_agent(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[AgentProcess, httpx.Client]]:
    root = tmp_path_factory.mktemp("fuzz")
    ModelStore(root / "state").install(make_linear_bundle(root / "b1").path)
    agent = start_agent(root / "state", config={"batching": {"timeout_ms": 5000}})
    with httpx.Client(timeout=10) as http:
        yield agent, http
    agent.stop()


_DATATYPES = ["FP32", "FP16", "FP64", "INT64", "INT8", "UINT8", "BOOL", "BYTES", "FP8", "", 3]
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=30,
)
_shape = st.one_of(
    st.lists(st.integers(-2, 6), max_size=4),
    st.just([1, 4]),
    st.just([2, 4]),
    _json_values,
)
_data = st.one_of(
    st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=12),
    st.lists(st.lists(st.integers(-300, 300), max_size=5), max_size=3),
    _json_values,
)
_input = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x", "y", "", "xx"]),
        "shape": _shape,
        "datatype": st.sampled_from(_DATATYPES),
    },
    optional={
        "data": _data,
        "parameters": st.one_of(
            st.fixed_dictionaries({"binary_data_size": st.integers(-4, 40)}), _json_values
        ),
    },
)
_body = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(_input, max_size=3), _json_values)},
    optional={
        "id": _json_values,
        "outputs": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["y", "z"])},
                    optional={"parameters": st.fixed_dictionaries({"binary_data": st.booleans()})},
                ),
                max_size=2,
            ),
            _json_values,
        ),
        "parameters": st.one_of(st.just({"binary_data_output": True}), _json_values),
    },
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=_body,
    tail=st.binary(max_size=48),
    header=st.one_of(st.none(), st.integers(-5, 400).map(str), st.just("abc")),
)
def test_agent_fuzz_infer_bodies_never_5xx(
    fuzz_agent: tuple[AgentProcess, httpx.Client], body: dict, tail: bytes, header: str | None
) -> None:
    agent, http = fuzz_agent
    raw = json.dumps(body).encode()
    headers = {}
    if header is not None:
        headers["Inference-Header-Content-Length"] = str(len(raw)) if header == "abc" else header
        raw += tail
    resp = http.post(f"{agent.url}/v2/models/linear/infer", content=raw, headers=headers)
    assert resp.status_code < 500, (resp.status_code, resp.text, raw[:300])
    if resp.status_code >= 400:
        assert resp.json()["error"]


@settings(max_examples=80, deadline=None)
@given(raw=st.binary(max_size=200))
def test_agent_fuzz_raw_bytes_never_5xx(
    fuzz_agent: tuple[AgentProcess, httpx.Client], raw: bytes
) -> None:
    agent, http = fuzz_agent
    resp = http.post(f"{agent.url}/v2/models/linear/infer", content=raw)
    assert 400 <= resp.status_code < 500
    tf = http.post(f"{agent.url}/v1/models/linear:predict", content=raw)
    assert 400 <= tf.status_code < 500


@settings(max_examples=120, deadline=None)
@given(
    key=st.sampled_from(["instances", "inputs", "signature_name", "other"]),
    value=_json_values,
    version=st.sampled_from(["", "/versions/1", "/versions/9", "/labels/x", "/versions/-1"]),
)
def test_agent_fuzz_tf_serving_predict_never_5xx(
    fuzz_agent: tuple[AgentProcess, httpx.Client], key: str, value: object, version: str
) -> None:
    agent, http = fuzz_agent
    resp = http.post(f"{agent.url}/v1/models/linear{version}:predict", json={key: value})
    assert resp.status_code < 500, (resp.status_code, resp.text)
