"""The gRPC API's edges against real agent processes: the bearer token, the message cap, start
errors as one line, and the gRPC modules loaded only when a gRPC port is set (grpcio never: the
server is the agent's own)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support.agent import AgentProcess, linear_reference, start_agent
from support.broker import free_port
from tritonclient.utils import InferenceServerException


def _input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    inp = grpcclient.InferInput(name, list(array.shape), datatype)
    inp.set_data_from_numpy(array)
    return inp


def _mapped(process: AgentProcess, library: str) -> bool:
    return library in Path(f"/proc/{process.process.pid}/maps").read_text()


def test_agent_grpc_is_off_by_default_and_protobuf_not_loaded(running_agent: AgentProcess) -> None:
    assert "grpc" not in running_agent.log()
    assert not _mapped(running_agent, "_upb")  # protobuf's C library
    assert not _mapped(running_agent, "cygrpc")


def test_agent_grpc_token_and_message_cap(state_dir: Path) -> None:
    port = free_port()
    config = {"server": {"grpc_port": port, "token": "s3cret", "max_body_bytes": 65536}}
    with start_agent(state_dir, config=config) as agent:
        assert _mapped(agent, "_upb")
        assert not _mapped(agent, "cygrpc")  # the HTTP/2 server is ours, not grpcio's
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        good = {"authorization": "Bearer s3cret"}
        x = np.ones((1, 4), np.float32)
        try:
            assert client.is_server_live() and client.is_server_ready()  # probes stay open
            for headers in (None, {"authorization": "Bearer nope"}, {"authorization": "s3cret"}):
                with pytest.raises(InferenceServerException) as exc:
                    client.infer("linear", [_input("x", x, "FP32")], headers=headers)
                assert str(exc.value.status()) == "StatusCode.UNAUTHENTICATED"
                assert "token" in exc.value.message()
            with pytest.raises(InferenceServerException) as exc:
                client.get_model_metadata("linear")
            assert str(exc.value.status()) == "StatusCode.UNAUTHENTICATED"
            y = client.infer("linear", [_input("x", x, "FP32")], headers=good).as_numpy("y")
            np.testing.assert_allclose(y, linear_reference(x), rtol=1e-5)
            assert client.get_model_metadata("linear", headers=good).name == "linear"
            big = np.ones((32, 1024), np.float32)  # 128 KiB, over max_body_bytes
            with pytest.raises(InferenceServerException) as exc:
                client.infer("linear", [_input("x", big, "FP32")], headers=good)
            assert str(exc.value.status()) == "StatusCode.RESOURCE_EXHAUSTED"
            assert client.infer("linear", [_input("x", x, "FP32")], headers=good)
        finally:
            client.close()
        assert agent.process.poll() is None


@pytest.mark.parametrize("case", ["no-extra", "port-taken"])
def test_agent_grpc_start_errors_are_one_line(state_dir: Path, case: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1] if case == "port-taken" else free_port()
        # None in sys.modules makes `import hpack` fail as on a device without the extra
        hide = "sys.modules['hpack'] = None; " if case == "no-extra" else ""
        code = f"import sys; {hide}from edgeserve.cli import main; main()"
        args = ["agent", "run", "--state", str(state_dir), "--port", str(free_port())]
        proc = subprocess.run(
            [sys.executable, "-c", code, *args, "--grpc-port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    want = (
        "pip install 'edgeserve-toolkit[grpc]'" if case == "no-extra" else "cannot listen for gRPC"
    )
    assert want in lines[0]
