"""The gRPC port's HTTP/2 against clients that misbehave, driven by raw frames
(``support.h2client``: frames by hand, headers by the ``hpack`` package) at a real agent
process; after each, an unmodified ``tritonclient.grpc`` client must still be served."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support import h2client as h2
from support.agent import AgentProcess, linear_reference, start_agent
from support.broker import free_port
from tritonclient.grpc import service_pb2

X = np.arange(4, dtype=np.float32).reshape(1, 4)
OK, INVALID_ARGUMENT, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNIMPLEMENTED = 0, 3, 4, 8, 12
PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, REFUSED_STREAM = 0x1, 0x3, 0x6, 0x7
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB


def _infer_request() -> bytes:
    request = service_pb2.ModelInferRequest(model_name="linear")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(X.tobytes())
    return request.SerializeToString()


def _outputs(answer: h2.Answer) -> np.ndarray:
    assert answer.status == OK, answer.headers
    assert answer.data[0] == 0
    response = service_pb2.ModelInferResponse.FromString(answer.data[5:])
    return np.frombuffer(response.raw_output_contents[0], np.float32).reshape(1, -1)


def _still_serves(port: int) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        inp = grpcclient.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(X)
        y = client.infer("linear", [inp]).as_numpy("y")
        np.testing.assert_allclose(y, linear_reference(X), rtol=1e-5)
    finally:
        client.close()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, int]]:
    from edgeserve.agent.store import ModelStore
    from support.models import make_linear_bundle

    root = tmp_path_factory.mktemp("h2")
    ModelStore(root / "state").install(make_linear_bundle(root / "b", version=1).path)
    port = free_port()
    config = {"server": {"grpc_port": port, "header_timeout_s": 1.0, "body_timeout_s": 1.0}}
    process = start_agent(root / "state", config=config, timeout=60)
    try:
        yield process, port
    finally:
        process.stop()


def test_agent_grpc_h2_unary_call_through_a_tiny_client_window(agent: tuple) -> None:
    _, port = agent
    conn = h2.RawH2(port, settings={0x4: 7})  # SETTINGS_INITIAL_WINDOW_SIZE: 7 bytes
    try:
        answer = conn.call("ModelInfer", _infer_request())
        np.testing.assert_allclose(_outputs(answer), linear_reference(X), rtol=1e-5)
        assert answer.data_frames > 3  # the answer came 7 bytes at a time, as granted
        meta = conn.call("ServerMetadata", b"")
        assert service_pb2.ServerMetadataResponse.FromString(meta.data[5:]).name
    finally:
        conn.close()


def test_agent_grpc_h2_refusals_are_statuses(agent: tuple) -> None:
    process, port = agent
    conn = h2.RawH2(port)
    try:
        unknown = conn.call("TraceSetting", b"")
        assert unknown.status == UNIMPLEMENTED and "TraceSetting" in unknown.message
        garbage = conn.call("ModelInfer", b"\xff\xff\xff")
        assert garbage.status == INVALID_ARGUMENT and "malformed" in garbage.message
        # a length prefix over the cap is refused before its body is sent
        stream = conn.open("ModelInfer")
        conn.send(h2.frame(h2.DATA, 0, stream, b"\0" + struct.pack(">L", 1 << 30)))
        big = conn.answer(stream)
        assert big.status == RESOURCE_EXHAUSTED and str(1 << 30) in big.message
        # grpc-timeout: 1 ns cannot be met
        stream = conn.open("ModelInfer", {"grpc-timeout": "1n"})
        conn.send(h2.frame(h2.DATA, h2.END_STREAM, stream, h2.message(_infer_request())))
        assert conn.answer(stream).status == DEADLINE_EXCEEDED
        # PING is answered with its payload
        conn.send(h2.frame(h2.PING, 0, 0, b"12345678"))
        while (f := conn.read_frame()) is not None and f.kind != h2.PING:
            pass
        assert f is not None and f.flags & h2.ACK and f.payload == b"12345678"
        assert _outputs(conn.call("ModelInfer", _infer_request())).shape == (1, 3)
    finally:
        conn.close()
    assert process.process.poll() is None


def test_agent_grpc_h2_streams_over_the_cap_are_refused(agent: tuple) -> None:
    _, port = agent
    conn = h2.RawH2(port)
    try:
        opened = [conn.open("ModelInfer") for _ in range(100)]  # all waiting for their body
        extra = conn.open("ModelInfer")
        assert conn.answer(extra).reset == REFUSED_STREAM
        first = opened[0]
        conn.send(h2.frame(h2.DATA, h2.END_STREAM, first, h2.message(_infer_request())))
        np.testing.assert_allclose(_outputs(conn.answer(first)), linear_reference(X), rtol=1e-5)
    finally:
        conn.close()
    _still_serves(port)


def _continuation_flood(conn: h2.RawH2) -> None:
    conn.send(h2.frame(h2.HEADERS, 0, 1, conn.head("ModelInfer")))
    for _ in range(6):
        conn.send(h2.frame(h2.CONTINUATION, 0, 1, b"\x00" * 16384))


CONNECTION_ERRORS = {
    "data-on-stream-0": (lambda c: c.send(h2.frame(h2.DATA, 0, 0, b"x")), PROTOCOL_ERROR),
    "frame-too-big": (lambda c: c.send(h2.frame(h2.DATA, 0, 1, b"x" * 16385)), FRAME_SIZE_ERROR),
    "bad-hpack": (
        lambda c: c.send(h2.frame(h2.HEADERS, h2.END_HEADERS, 1, b"\xff\xff\xff\xff\xff")),
        COMPRESSION_ERROR,
    ),
    "continuation-flood": (_continuation_flood, ENHANCE_YOUR_CALM),
    "even-stream-id": (
        lambda c: c.send(h2.frame(h2.HEADERS, h2.END_HEADERS, 2, c.head("ServerLive"))),
        PROTOCOL_ERROR,
    ),
    "ping-flood": (
        lambda c: c.send(b"".join(h2.frame(h2.PING, 0, 0, b"12345678") for _ in range(1001))),
        ENHANCE_YOUR_CALM,
    ),
    "push-promise": (lambda c: c.send(h2.frame(0x5, h2.END_HEADERS, 0, b"")), PROTOCOL_ERROR),
}


@pytest.mark.parametrize("case", CONNECTION_ERRORS)
def test_agent_grpc_h2_connection_errors_end_only_that_connection(agent: tuple, case: str) -> None:
    _, port = agent
    send, code = CONNECTION_ERRORS[case]
    conn = h2.RawH2(port)
    try:
        with contextlib.suppress(OSError):  # the server may close while we still write
            send(conn)
        got = conn.goaway()
        assert got is not None and got[0] == code, got
    finally:
        conn.close()
    _still_serves(port)


def test_agent_grpc_h2_client_past_its_window_is_reset(tmp_path: Path, state_dir: Path) -> None:
    # Whole messages a unary call holds count as unconsumed bytes: past max_body_bytes the
    # server returns no more window, so a client that keeps sending overruns the 1 MiB it has.
    port = free_port()
    config = {"server": {"grpc_port": port, "max_body_bytes": 65536}}
    with start_agent(state_dir, config=config):
        conn = h2.RawH2(port)
        try:
            stream = conn.open("ModelInfer")
            chunk = h2.message(b"x" * 16379)  # 16 KiB frames, each a whole message
            with contextlib.suppress(OSError):
                for _ in range(65):  # one frame past the 1 MiB stream window
                    conn.send(h2.frame(h2.DATA, 0, stream, chunk))
            assert conn.answer(stream, window_updates=False).reset == FLOW_CONTROL_ERROR
            assert conn.call("ServerLive", b"").status == OK  # the connection lives on
        finally:
            conn.close()
        _still_serves(port)


def test_agent_grpc_h2_http1_client_gets_one_readable_answer(agent: tuple) -> None:
    _, port = agent
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"gRPC" in reply


def test_agent_grpc_h2_slow_clients_meet_the_deadlines(agent: tuple) -> None:
    _, port = agent
    # a preface that never completes: closed after header_timeout_s (1 s)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(h2.PREFACE[:10])
        started = time.monotonic()
        assert sock.recv(4096) == b""
        assert time.monotonic() - started < 5
    # a unary request whose message stops arriving: DEADLINE_EXCEEDED after body_timeout_s
    conn = h2.RawH2(port)
    try:
        stream = conn.open("ModelInfer")
        conn.send(h2.frame(h2.DATA, 0, stream, b"\0\0\0\0\x40partial"))
        answer = conn.answer(stream)
        assert answer.status == DEADLINE_EXCEEDED and "request bytes" in answer.message
    finally:
        conn.close()
    _still_serves(port)


def test_agent_grpc_h2_idle_connection_gets_goaway(tmp_path: Path, state_dir: Path) -> None:
    port = free_port()
    config = {"server": {"grpc_port": port, "idle_timeout_s": 0.5}}
    with start_agent(state_dir, config=config):
        conn = h2.RawH2(port)
        try:
            assert conn.call("ServerLive", b"").status == OK
            started = time.monotonic()
            got = conn.goaway()
            assert got == (0, "idle"), got
            assert time.monotonic() - started < 5
        finally:
            conn.close()
