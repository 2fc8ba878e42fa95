"""``tritonclient.http``, unmodified, against a real agent: JSON, binary, FP16, async."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from edgeserve.agent.store import ModelStore
from support.agent import AgentProcess, linear_reference, make_fp16_bundle, start_agent
from tritonclient.utils import InferenceServerException


def _client(agent: AgentProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=agent.url.removeprefix("http://"), concurrency=4)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_agent_tritonclient_infer(running_agent: AgentProcess, binary: bool) -> None:
    client = _client(running_agent)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("linear")
        meta = client.get_model_metadata("linear")
        assert meta["inputs"][0]["shape"] == [-1, 4]
        x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("y", binary_data=binary)
        result = client.infer("linear", [inp], outputs=[out], request_id="abc")
        np.testing.assert_allclose(result.as_numpy("y"), linear_reference(x), rtol=1e-5)
        assert result.get_response()["id"] == "abc"
        # versioned and async
        pending = [
            client.async_infer("linear", [inp], model_version="1", outputs=[out]) for _ in range(8)
        ]
        for p in pending:
            np.testing.assert_allclose(p.get_result().as_numpy("y"), linear_reference(x), rtol=1e-5)
        stats = client.get_inference_statistics("linear")["model_stats"]
        assert [(s["name"], s["version"]) for s in stats] == [("linear", "1")]
        assert stats[0]["inference_stats"]["success"]["count"] == 9
        assert stats[0]["inference_count"] == 27  # rows, 3 per request
        assert 1 <= stats[0]["execution_count"] <= 9
        assert client.get_inference_statistics("linear", "1")["model_stats"][0]["version"] == "1"
        assert len(client.get_inference_statistics()["model_stats"]) == 1
    finally:
        client.close()


def test_agent_tritonclient_errors_are_exceptions_with_messages(
    running_agent: AgentProcess,
) -> None:
    client = _client(running_agent)
    try:
        inp = httpclient.InferInput("x", [1, 3], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 3), np.float32))
        with pytest.raises(InferenceServerException, match="shape"):
            client.infer("linear", [inp])
        with pytest.raises(InferenceServerException, match="unknown model"):
            client.infer("ghost", [inp])
        assert not client.is_model_ready("ghost")
        index = client.get_model_repository_index()
        assert index[0]["name"] == "linear"
        client.unload_model("linear")
        assert not client.is_model_ready("linear")
        assert client.get_model_repository_index() == [
            {"name": "linear", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}
        ]
        client.load_model("linear")
        assert client.is_model_ready("linear")
    finally:
        client.close()


def test_agent_tritonclient_fp16_over_binary(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ModelStore(state).install(make_fp16_bundle(tmp_path / "half").path)
    with start_agent(state) as agent:
        client = _client(agent)
        try:
            x = np.array([[0.5, 1.5, -2.0, 3.25]], dtype=np.float16)
            inp = httpclient.InferInput("x", [1, 4], "FP16")
            inp.set_data_from_numpy(x, binary_data=True)
            result = client.infer(
                "half", [inp], outputs=[httpclient.InferRequestedOutput("y", binary_data=True)]
            )
            y = result.as_numpy("y")
            assert y.dtype == np.float16
            np.testing.assert_array_equal(y, x * 2)
        finally:
            client.close()
