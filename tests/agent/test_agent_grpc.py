"""``tritonclient.grpc``, unmodified, against a real agent process with ``--grpc-port``.

One agent serves every model of this module: ``linear`` (FP32, with class labels, versions 1
and 2 behind the A/B alias ``linear-ab``), ``half`` (FP16) and ``mixed`` (INT8, INT64, BYTES).
Typed ``contents`` are sent through tritonclient's own generated stub, since its
``InferInput`` always sends raw contents.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from edgeserve.agent.store import ModelStore
from google.protobuf import json_format
from support.agent import AgentProcess, linear_reference, make_fp16_bundle, start_agent
from support.broker import free_port
from support.models import make_linear_bundle, make_mixed_bundle
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

LABELS = ("cat", "dog", "bird")
RNG = np.random.default_rng(7)


@dataclass
class GrpcAgent:
    process: AgentProcess
    grpc_url: str

    def client(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.grpc_url)

    def stub(self, channel: grpc.Channel) -> service_pb2_grpc.GRPCInferenceServiceStub:
        return service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcAgent]:
    root = tmp_path_factory.mktemp("grpc")
    store = ModelStore(root / "state")
    labels = {"labels.txt": ("\n".join(LABELS).encode() + b"\n", "labels")}
    store.install(make_linear_bundle(root / "l1", version=1, extra_files=labels).path)
    store.install(make_linear_bundle(root / "l2", version=2, seed=1).path, activate=False)
    store.install(make_fp16_bundle(root / "half").path)
    store.install(make_mixed_bundle(root / "mixed").path)
    port = free_port()
    config = {
        "server": {"grpc_port": port},
        "batching": {"max_queue_delay_us": 500},
        "splits": {"linear-ab": {"model": "linear", "a": 1, "b": 2, "weight_b": 0.5}},
    }
    agent = start_agent(root / "state", config=config, timeout=60)
    try:
        assert f"grpc 127.0.0.1:{port}" in agent.log()
        yield GrpcAgent(agent, f"127.0.0.1:{port}")
    finally:
        agent.stop()


def _input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    inp = grpcclient.InferInput(name, list(array.shape), datatype)
    inp.set_data_from_numpy(array)
    return inp


def _code(exc: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(exc.value.status())


def test_agent_grpc_health_metadata_and_config(served: GrpcAgent) -> None:
    client = served.client()
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("linear") and client.is_model_ready("linear", "1")
        assert not client.is_model_ready("ghost")
        meta = client.get_server_metadata()
        assert meta.name == "edgeserve"
        assert {"classification", "model_configuration", "statistics"} <= set(meta.extensions)
        model = client.get_model_metadata("linear")
        # version 2 is loaded too: it is arm B of the A/B alias
        assert model.platform == "onnxruntime_onnx" and model.versions == ["1", "2"]
        assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
            ("x", "FP32", [-1, 4])
        ]
        config = client.get_model_config("linear").config
        assert config.max_batch_size == 32
        assert list(config.input[0].dims) == [4]  # the batch dimension is left out
        assert config.input[0].data_type == model_config_pb2.TYPE_FP32
        assert config.output[0].label_filename == "labels.txt"
        assert config.dynamic_batching.max_queue_delay_microseconds == 500
        assert config.dynamic_batching.default_queue_policy.max_queue_size == 1024
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        assert config.version_policy.latest.num_versions == 1
        assert config.default_model_filename == "model.onnx"
        strings = client.get_model_config("mixed").config
        assert [i.data_type for i in strings.input][-1] == model_config_pb2.TYPE_STRING
        # REST serves the same configuration as Triton's JSON, which parses as Triton's message
        rest = httpx.get(f"{served.process.url}/v2/models/linear/config").json()
        assert json_format.ParseDict(rest, model_config_pb2.ModelConfig()) == config
        with pytest.raises(InferenceServerException) as exc:
            client.get_model_metadata("ghost")
        assert _code(exc) == "StatusCode.NOT_FOUND" and "ghost" in exc.value.message()
    finally:
        client.close()


def test_agent_grpc_infer_fp32_raw_and_typed(served: GrpcAgent) -> None:
    client = served.client()
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    try:
        result = client.infer("linear", [_input("x", x, "FP32")], request_id="r-1")
        np.testing.assert_allclose(result.as_numpy("y"), linear_reference(x), rtol=1e-5)
        response = result.get_response()
        assert response.id == "r-1" and response.model_name == "linear"
        assert response.model_version == "1"
        versioned = client.infer("linear", [_input("x", x, "FP32")], model_version="1")
        np.testing.assert_allclose(versioned.as_numpy("y"), linear_reference(x), rtol=1e-5)
    finally:
        client.close()
    with grpc.insecure_channel(served.grpc_url) as channel:
        request = service_pb2.ModelInferRequest(model_name="linear")
        tensor = request.inputs.add(name="x", datatype="FP32", shape=[3, 4])
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
        reply = served.stub(channel).ModelInfer(request, timeout=30)
    y = np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(reply.outputs[0].shape)
    np.testing.assert_allclose(y, linear_reference(x), rtol=1e-5)


def test_agent_grpc_infer_fp16_raw(served: GrpcAgent) -> None:
    client = served.client()
    try:
        x = np.array([[0.5, 1.5, -2.0, 3.25], [1, 2, 3, 4]], dtype=np.float16)
        y = client.infer("half", [_input("x", x, "FP16")]).as_numpy("y")
        assert y.dtype == np.float16
        np.testing.assert_array_equal(y, x * 2)
    finally:
        client.close()


def _mixed_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.array([[-128, 127], [5, -6]], dtype=np.int8)
    b = np.array([[2**40, -3], [7, 0]], dtype=np.int64)
    s = np.array([[b"caf\xc3\xa9"], [b"edge"]], dtype=object)
    return a, b, s


def test_agent_grpc_infer_int8_int64_bytes_raw(served: GrpcAgent) -> None:
    a, b, s = _mixed_inputs()
    client = served.client()
    try:
        inputs = [_input("a", a, "INT8"), _input("b", b, "INT64"), _input("s", s, "BYTES")]
        result = client.infer("mixed", inputs)
        np.testing.assert_array_equal(result.as_numpy("a_out"), a)
        assert result.as_numpy("a_out").dtype == np.int8
        np.testing.assert_array_equal(result.as_numpy("b_out"), b * 2)
        assert result.as_numpy("s_out").tolist() == s.tolist()
    finally:
        client.close()


def test_agent_grpc_infer_int8_int64_bytes_typed(served: GrpcAgent) -> None:
    a, b, s = _mixed_inputs()
    request = service_pb2.ModelInferRequest(model_name="mixed")
    request.inputs.add(name="a", datatype="INT8", shape=[2, 2]).contents.int_contents.extend(
        a.ravel().tolist()
    )
    request.inputs.add(name="b", datatype="INT64", shape=[2, 2]).contents.int64_contents.extend(
        b.ravel().tolist()
    )
    request.inputs.add(name="s", datatype="BYTES", shape=[2, 1]).contents.bytes_contents.extend(
        s.ravel().tolist()
    )
    request.outputs.add(name="b_out")
    with grpc.insecure_channel(served.grpc_url) as channel:
        reply = served.stub(channel).ModelInfer(request, timeout=30)
        assert [o.name for o in reply.outputs] == ["b_out"]
        got = np.frombuffer(reply.raw_output_contents[0], dtype="<i8").reshape(2, 2)
        np.testing.assert_array_equal(got, b * 2)
        # INT8 values travel in 32-bit int_contents: one that does not fit is refused
        request.inputs[0].contents.int_contents[0] = 300
        with pytest.raises(grpc.RpcError) as exc:
            served.stub(channel).ModelInfer(request, timeout=30)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "do not fit INT8" in exc.value.details()


def test_agent_grpc_classification_with_labels_grpc_and_rest(served: GrpcAgent) -> None:
    x = RNG.standard_normal((4, 4)).astype(np.float32)
    reference = linear_reference(x)
    expected = []
    for row in reference:
        top = np.argsort(-row, kind="stable")[:2]
        expected.append([f"{row[i]:f}:{i}:{LABELS[i]}".encode() for i in top])
    client = served.client()
    try:
        out = grpcclient.InferRequestedOutput("y", class_count=2)
        got = client.infer("linear", [_input("x", x, "FP32")], outputs=[out]).as_numpy("y")
        assert got.shape == (4, 2)
        # the scores are printed with 6 decimals: compare the index and label exactly
        for row, want in zip(got.tolist(), expected, strict=True):
            assert [v.split(b":", 1)[1] for v in row] == [v.split(b":", 1)[1] for v in want]
            scores = [float(v.split(b":")[0]) for v in row]
            assert scores == pytest.approx([float(v.split(b":")[0]) for v in want], abs=2e-6)
    finally:
        client.close()
    http = httpclient.InferenceServerClient(served.process.url.removeprefix("http://"))
    try:
        inp = httpclient.InferInput("x", [4, 4], "FP32")
        inp.set_data_from_numpy(x)
        for binary in (False, True):
            out = httpclient.InferRequestedOutput("y", binary_data=binary, class_count=2)
            rest = http.infer("linear", [inp], outputs=[out]).as_numpy("y")
            assert rest.shape == (4, 2)
            # JSON gives str, binary gives bytes
            entries = [
                [v if isinstance(v, bytes) else v.encode() for v in r] for r in rest.tolist()
            ]
            assert [[v.split(b":", 1)[1] for v in r] for r in entries] == [
                [v.split(b":", 1)[1] for v in r] for r in got.tolist()
            ]
    finally:
        http.close()


def test_agent_grpc_ab_split_is_sticky_per_request_key(served: GrpcAgent) -> None:
    x = RNG.standard_normal((1, 4)).astype(np.float32)
    arms = {1: linear_reference(x, seed=0), 2: linear_reference(x, seed=1)}
    client = served.client()
    seen = set()
    try:
        for key in range(12):
            versions = set()
            for _ in range(3):
                result = client.infer(
                    "linear-ab", [_input("x", x, "FP32")], headers={"x-request-key": f"k{key}"}
                )
                version = int(result.get_response().model_version)
                np.testing.assert_allclose(result.as_numpy("y"), arms[version], rtol=1e-5)
                versions.add(version)
            assert len(versions) == 1, f"key k{key} went to {versions}"
            seen |= versions
    finally:
        client.close()
    assert seen == {1, 2}
    metrics = httpx.get(f"{served.process.url}/metrics").text
    assert 'edgeserve_ab_requests_total{alias="linear-ab"' in metrics


def test_agent_grpc_32_concurrent_clients_get_their_own_rows(served: GrpcAgent) -> None:
    before = _stats(served, "linear")
    errors: queue.Queue[BaseException] = queue.Queue()

    def worker(seed: int) -> None:
        rng = np.random.default_rng(1000 + seed)
        client = served.client()
        try:
            for _ in range(10):
                x = rng.standard_normal((1 + seed % 3, 4)).astype(np.float32)
                y = client.infer("linear", [_input("x", x, "FP32")]).as_numpy("y")
                np.testing.assert_allclose(y, linear_reference(x), rtol=1e-5)
        except BaseException as exc:  # re-raised in the test thread
            errors.put(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors.empty(), errors.get()
    after = _stats(served, "linear")
    assert after.inference_stats.success.count - before.inference_stats.success.count == 320
    executions = after.execution_count - before.execution_count
    assert executions < 320  # requests from different clients shared executions


def _stats(served: GrpcAgent, name: str) -> service_pb2.ModelStatistics:
    client = served.client()
    try:
        [stats] = client.get_inference_statistics(name, "1").model_stats
        return stats
    finally:
        client.close()


def test_agent_grpc_bad_input_gets_the_right_status(served: GrpcAgent) -> None:
    client = served.client()
    x = np.zeros((1, 4), np.float32)
    cases = [
        (
            "linear",
            [_input("x", np.zeros((1, 3), np.float32), "FP32")],
            None,
            "INVALID_ARGUMENT",
            "shape",
        ),
        (
            "linear",
            [_input("x", x.astype(np.float64), "FP64")],
            None,
            "INVALID_ARGUMENT",
            "datatype",
        ),
        ("linear", [_input("z", x, "FP32")], None, "INVALID_ARGUMENT", "missing input(s) x"),
        (
            "linear",
            [_input("x", np.zeros((33, 4), np.float32), "FP32")],
            None,
            "INVALID_ARGUMENT",
            "max_batch_size",
        ),
        (
            "linear",
            [_input("x", x, "FP32")],
            [grpcclient.InferRequestedOutput("nope")],
            "INVALID_ARGUMENT",
            "nope",
        ),
        ("ghost", [_input("x", x, "FP32")], None, "NOT_FOUND", "unknown model"),
    ]
    try:
        for model, inputs, outputs, code, words in cases:
            with pytest.raises(InferenceServerException) as exc:
                client.infer(model, inputs, outputs=outputs)
            assert _code(exc) == f"StatusCode.{code}", (model, exc.value.message())
            assert words in exc.value.message()
        with pytest.raises(InferenceServerException) as exc:
            client.infer("linear", [_input("x", x, "FP32")], model_version="9")
        assert _code(exc) == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as exc:
            client.load_model("ghost")
        assert _code(exc) == "StatusCode.NOT_FOUND"
        assert client.is_server_live()
    finally:
        client.close()
    with grpc.insecure_channel(served.grpc_url) as channel:
        stub = served.stub(channel)
        raw = service_pb2.ModelInferRequest(model_name="linear")
        raw.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        raw.raw_input_contents.append(b"\0" * 12)  # 3 floats for a [1, 4] tensor
        half = service_pb2.ModelInferRequest(model_name="half")
        half.inputs.add(name="x", datatype="FP16", shape=[1, 4])  # FP16 has no typed field
        empty = service_pb2.ModelInferRequest(model_name="linear")
        zero_k = service_pb2.ModelInferRequest(model_name="linear")
        zero_k.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend(
            [0.0] * 4
        )
        zero_k.outputs.add(name="y").parameters["classification"].int64_param = 0
        for request, words in (
            (raw, "binary_data_size 12 bytes"),
            (half, "raw_input_contents"),
            (empty, "inputs"),
            (zero_k, "classification"),
        ):
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(request, timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert words in err.value.details()
    metrics = httpx.get(f"{served.process.url}/metrics").text
    assert 'reason="bad_input"' in metrics


def test_agent_grpc_repository_unload_load_and_unavailable(served: GrpcAgent) -> None:
    client = served.client()
    x = np.zeros((1, 4), np.float16)
    try:
        index = {(m.name, m.version): m.state for m in client.get_model_repository_index().models}
        assert index[("half", "1")] == "READY" and index[("linear", "1")] == "READY"
        client.unload_model("half")
        assert not client.is_model_ready("half")
        index = client.get_model_repository_index().models
        assert [(m.state, m.reason) for m in index if m.name == "half"] == [
            ("UNAVAILABLE", "unloaded")
        ]
        with pytest.raises(InferenceServerException) as exc:
            client.infer("half", [_input("x", x, "FP16")])
        assert _code(exc) == "StatusCode.UNAVAILABLE" and "unloaded" in exc.value.message()
        client.load_model("half")
        assert client.is_model_ready("half")
        y = client.infer("half", [_input("x", x + 1, "FP16")]).as_numpy("y")
        np.testing.assert_array_equal(y, (x + 1) * 2)
        stats = client.get_inference_statistics("half").model_stats
        assert [(s.name, s.version) for s in stats] == [("half", "1")]
        assert stats[0].inference_stats.success.count == 1  # counted since the reload
        everything = client.get_inference_statistics().model_stats
        assert {s.name for s in everything} == {"half", "linear", "mixed"}
    finally:
        client.close()
    with grpc.insecure_channel(served.grpc_url) as channel:
        reply = served.stub(channel).RepositoryIndex(
            service_pb2.RepositoryIndexRequest(ready=True), timeout=30
        )
        assert reply.models and all(m.state == "READY" for m in reply.models)


def test_agent_grpc_stream_infer(served: GrpcAgent) -> None:
    results: queue.Queue = queue.Queue()
    client = served.client()
    xs = [RNG.standard_normal((1, 4)).astype(np.float32) for _ in range(8)]
    try:
        client.start_stream(callback=lambda result, error: results.put((result, error)))
        for i, x in enumerate(xs):
            client.async_stream_infer("linear", [_input("x", x, "FP32")], request_id=str(i))
        client.async_stream_infer("ghost", [_input("x", xs[0], "FP32")], request_id="bad")
        got = {}
        errors = []
        for _ in range(len(xs) + 1):
            result, error = results.get(timeout=30)
            if error is not None:
                errors.append(error)
            else:
                got[result.get_response().id] = result.as_numpy("y")
        client.stop_stream()
        # a client that cancels its stream with requests in flight leaves the agent serving
        client.start_stream(callback=lambda result, error: None)
        for x in xs:
            client.async_stream_infer("linear", [_input("x", x, "FP32")])
        client.stop_stream(cancel_requests=True)
        assert client.is_server_live()
        y = client.infer("linear", [_input("x", xs[0], "FP32")]).as_numpy("y")
        np.testing.assert_allclose(y, linear_reference(xs[0]), rtol=1e-5)
    finally:
        client.close()
    assert len(errors) == 1 and "unknown model" in str(errors[0])
    for i, x in enumerate(xs):
        np.testing.assert_allclose(got[str(i)], linear_reference(x), rtol=1e-5)
    assert "Traceback" not in served.process.log()


def test_agent_grpc_invalid_names_are_invalid_argument_on_every_method(served: GrpcAgent) -> None:
    """The same name rules as REST: a name or version that could not exist is refused before
    any lookup (never INTERNAL from the filesystem), on every method that takes one."""
    long_name, bad_version = "a" * 300, "9" * 40
    x = np.zeros((1, 4), np.float32)
    client = served.client()
    calls = {
        "ready": lambda name, version: client.is_model_ready(name, version),
        "metadata": lambda name, version: client.get_model_metadata(name, version),
        "config": lambda name, version: client.get_model_config(name, version),
        "stats": lambda name, version: client.get_inference_statistics(name, version),
        "infer": lambda name, version: client.infer(
            name, [_input("x", x, "FP32")], model_version=version
        ),
        "load": lambda name, version: client.load_model(name),
        "unload": lambda name, version: client.unload_model(name),
    }
    try:
        for what, call in calls.items():
            for name, version in ((long_name, ""), ("linear", bad_version), ("../x", "")):
                if what in ("load", "unload") and version:
                    continue
                with pytest.raises(InferenceServerException) as exc:
                    call(name, version)
                assert _code(exc) == "StatusCode.INVALID_ARGUMENT", (what, exc.value.message())
                assert "invalid" in exc.value.message(), (what, exc.value.message())
        assert client.is_model_ready("linear")
    finally:
        client.close()
